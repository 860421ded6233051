//! PCI configuration space and BAR accesses: the config mechanism #1 ports (address
//! register and data window) and the MMIO window, in any order, sizes and values, on a
//! bus with the host bridge and a virtio-blk function.

use super::Input;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm::arch::layout::PCI_MMIO_SIZE;
use vmm::devices::pci::{PciBus, PciConfigIo, PciMmio};
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::transport::pci::VirtioPciDevice;
use vmm::devices::BusDevice;

thread_local! {
    static DISK: RefCell<tempfile::NamedTempFile> = RefCell::new({
        let f = tempfile::NamedTempFile::new().expect("temp disk");
        f.as_file().set_len(64 << 10).expect("size");
        f
    });
}

/// One input: a sequence of accesses.
pub fn run(data: &[u8]) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 10)]).expect("memory");
    let block = DISK.with(|d| Block::open(d.borrow().path(), false).expect("open disk"));
    let bus = PciBus::new();
    let slot = bus.next_slot();
    bus.add(Arc::new(Mutex::new(VirtioPciDevice::new(
        block,
        slot,
        mem,
        super::msi(),
    ))));
    let mut io = PciConfigIo::new(bus.clone());
    let mut mmio = PciMmio::new(bus);
    let mut input = Input(data);
    let mut steps = 0;
    while !input.is_empty() && steps < 4096 {
        steps += 1;
        let op = input.u8();
        let len = [1usize, 2, 4, 8][usize::from(op >> 4) & 3];
        let mut buf = [0u8; 8];
        match op & 7 {
            // Select a register of slot 1 (the device), or anything at all.
            0 => {
                let reg = u32::from(input.u8());
                let addr = if op & 8 == 0 {
                    0x8000_0000 | (1 << 11) | reg
                } else {
                    input.u32()
                };
                io.write(0, &addr.to_le_bytes());
            }
            // Config data port: offsets 4..8, port-sized accesses.
            1 => {
                let off = 4 + u64::from(input.u8() & 3);
                let n = len.min(4);
                buf[..n].copy_from_slice(&input.u32().to_le_bytes()[..n]);
                io.write(off, &buf[..n]);
            }
            2 => {
                let off = u64::from(input.u8() & 7);
                io.read(off, &mut buf[..len.min(4)]);
            }
            // The MMIO window: anywhere in it, any MMIO size.
            3 | 4 => {
                let off = if op & 8 == 0 {
                    // Near the device's BAR0 (slot 1: 64 KiB in).
                    0x1_0000 + u64::from(input.u16() & 0x7fff)
                } else {
                    input.u64() % PCI_MMIO_SIZE
                };
                if op & 7 == 3 {
                    buf.copy_from_slice(&input.u64().to_le_bytes());
                    mmio.write(off, &buf[..len]);
                } else {
                    mmio.read(off, &mut buf[..len]);
                }
            }
            // Turn memory decoding on and move BAR0 somewhere.
            _ => {
                io.write(0, &(0x8000_0000u32 | (1 << 11) | 0x04).to_le_bytes());
                io.write(4, &[0x06, 0]);
                io.write(0, &(0x8000_0000u32 | (1 << 11) | 0x10).to_le_bytes());
                io.write(4, &input.u32().to_le_bytes());
            }
        }
    }
}
