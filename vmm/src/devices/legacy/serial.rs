//! COM1: a 16550 (`vm-superio`) at 0x3f8 on IRQ 4, its output sent to a writer (stdout,
//! or a pty plus a bounded console log), its input fed from a reader thread.

use crate::devices::BusDevice;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use vm_superio::{serial::NoEvents, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// COM1's base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;
/// COM2's base port (the guest's `/dev/ttyS1`: the metadata channel, as on SmartOS).
pub const COM2_PORT: u16 = 0x2f8;
/// COM2's interrupt line.
pub const COM2_IRQ: u32 = 3;

/// Raises the serial IRQ through an eventfd registered as a KVM irqfd.
pub struct IrqFdTrigger(pub EventFd);

impl Trigger for IrqFdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The serial port on the bus.
pub struct SerialDevice {
    inner: Serial<IrqFdTrigger, NoEvents, Box<dyn Write + Send>>,
}

impl SerialDevice {
    /// A 16550 interrupting through `irq`, writing guest output to `out`.
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>) -> Self {
        SerialDevice {
            inner: Serial::new(IrqFdTrigger(irq), out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.inner.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Free room in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.inner.fifo_capacity()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Ok(off), Some(first)) = (u8::try_from(offset), data.first_mut()) {
            *first = self.inner.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), Some(value)) = (u8::try_from(offset), data.first()) {
            if let Err(e) = self.inner.write(off, *value) {
                log::warn!("serial: {e:?}");
            }
        }
    }
}

/// A console log that never grows past `2 * max` bytes: when the current file reaches
/// `max`, its content moves to `<name>.1` (replacing the older one) and it starts over.
/// Both files are opened up front and rotation uses only those descriptors, so it keeps
/// working inside the jail, where no path is visible.
pub struct BoundedLog {
    file: File,
    older: File,
    written: u64,
    max: u64,
}

impl BoundedLog {
    /// Opens (appending to) `path`, and `path.1` for rotation.
    pub fn open(path: PathBuf, max: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut old = path.into_os_string();
        old.push(".1");
        let older = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(old)?;
        let written = file.metadata()?.len();
        Ok(BoundedLog {
            file,
            older,
            written,
            max,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 64 << 10];
        self.older.set_len(0)?;
        let mut off = 0;
        loop {
            let n = self.file.read_at(&mut buf, off)?;
            if n == 0 {
                break;
            }
            self.older.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
        // O_APPEND: writes go to the (new) end after truncation.
        self.file.set_len(0)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for BoundedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written >= self.max {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Sends guest output to several writers. A writer that would block (a pty nobody
/// reads) or fails loses that output; the guest never stalls on its console.
pub struct Tee(pub Vec<Box<dyn Write + Send>>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for w in &mut self.0 {
            let _ = w.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        for w in &mut self.0 {
            let _ = w.flush();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_log_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = BoundedLog::open(path.clone(), 10).unwrap();
        for c in b"abcde" {
            log.write_all(&[*c; 7]).unwrap();
        }
        let cur = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.path().join("console.log.1"))
            .unwrap()
            .len();
        // 7+7 rotates, 7+7 rotates, 7: the newest 7 bytes and the 14 before them.
        assert_eq!((cur, old), (7, 14));
        assert_eq!(std::fs::read(&path).unwrap(), b"eeeeeee");
        assert_eq!(
            std::fs::read(dir.path().join("console.log.1")).unwrap(),
            b"cccccccddddddd"
        );
    }

    #[test]
    fn serial_transmits_to_writer() {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut s = SerialDevice::new(EventFd::new(0).unwrap(), Box::new(Shared(out.clone())));
        for b in b"hi" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.lock().unwrap(), b"hi");
        // Line status: transmitter empty.
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }
}
