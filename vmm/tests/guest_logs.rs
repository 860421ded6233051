//! A guest cannot fill the pool through the VMM's log: 100 000 writes each of the boot
//! marker, bad sleep states, bad virtio queue sizes and broken queues leave a few
//! kilobytes of log, and a silenced line says how much it dropped when it opens again.
//! (One test in this binary: the logger is process-wide.)

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm::devices::interrupt::{MsiMessage, MsiSender};
use vmm::devices::legacy::marker::BootMarker;
use vmm::devices::legacy::pm::PowerManagement;
use vmm::devices::pci::PciDevice;
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::transport::pci::VirtioPciDevice;
use vmm::devices::{BusDevice, ExitSignal};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct NoMsi;
impl MsiSender for NoMsi {
    fn send_msi(&self, _: MsiMessage) -> io::Result<()> {
        Ok(())
    }
}

const WRITES: usize = 100_000;

#[test]
fn a_guest_writing_in_a_loop_leaves_a_bounded_log() {
    let out = Captured::default();
    vmm::logger::init();
    vmm::logger::redirect(Box::new(out.clone()));
    let started = Instant::now();

    let mut marker = BootMarker::new(started);
    let (exit, _rx) = ExitSignal::new();
    let mut pm = PowerManagement::new(Box::new(|_| {}), exit);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(1 << 20).unwrap();
    let block = Block::open(disk.path(), false).unwrap();
    let mut blk = VirtioPciDevice::new(block, 1, mem, Arc::new(NoMsi));
    for i in 0..WRITES {
        marker.write(0, &[(i % 7) as u8]);
        // SLP_EN with sleep type 3 (S3): refused, logged.
        pm.write(4, &((3u16 << 10) | (1 << 13)).to_le_bytes());
        // Queue size 3: not a power of two (virtio-queue logs it).
        blk.bar_write(0x18, &3u16.to_le_bytes());
        // A ready queue outside guest memory, then DRIVER_OK: the device breaks.
        blk.bar_write(0x14, &[0]);
        blk.bar_write(0x08, &1u32.to_le_bytes());
        blk.bar_write(0x0c, &1u32.to_le_bytes()); // VIRTIO_F_VERSION_1
        blk.bar_write(0x20, &(1u64 << 40).to_le_bytes());
        blk.bar_write(0x1c, &1u16.to_le_bytes());
        blk.bar_write(0x14, &[0x0f]);
    }
    assert!(
        marker.hits.len() <= 256,
        "{} marker hits kept",
        marker.hits.len()
    );
    let bytes = out.0.lock().unwrap().len();
    let text = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
    assert!(text.contains("boot marker"), "{text}");
    assert!(text.contains("sleep state 3"), "{text}");
    assert!(text.contains("invalid size"), "{text}");
    assert!(text.contains("needs a reset"), "{text}");
    // A handful of call sites, each a burst plus one line a second while the loop ran.
    let secs = started.elapsed().as_secs() as usize + 1;
    let bound = 8 * (vmm::logger::BURST as usize + secs) * 200;
    assert!(
        bytes < bound,
        "{bytes} bytes of log for {WRITES} guest writes (bound {bound}):\n{}",
        &text[..text.len().min(2000)]
    );

    // Once the period is over, the next line reports what was dropped.
    std::thread::sleep(vmm::logger::REFILL + Duration::from_millis(100));
    pm.write(4, &((3u16 << 10) | (1 << 13)).to_le_bytes());
    let text = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
    assert!(text.contains("messages suppressed"), "{text}");
}
