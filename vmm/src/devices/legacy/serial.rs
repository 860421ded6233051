//! COM1: a 16550 (`vm-superio`) at 0x3f8 on IRQ 4, its output sent to a writer (stdout,
//! or a pty plus a bounded console log), its input fed from a reader thread.
//!
//! Two things differ from `vm-superio`'s model, both to follow the 16550 the guest's
//! driver is written for:
//! - IIR reports "received data available" for as long as the receive FIFO holds data
//!   and that interrupt is enabled. `vm-superio` forgets it on every IIR and RBR read, but
//!   Linux's 8250 driver reads at most 256 characters per pass (`serial8250_rx_chars`'s
//!   `max_count`) and then asks IIR whether more work is pending; told "none", it returns
//!   with the rest of a longer answer left in the FIFO, and with no new input to raise an
//!   interrupt, both sides wait forever (a metadata answer on COM2 stalled after exactly
//!   256 bytes this way).
//! - The thread feeding input waits on an eventfd the device signals when the guest
//!   empties the FIFO (as Firecracker's serial does), not on a timer.

use crate::devices::BusDevice;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use vm_superio::{serial::SerialEvents, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// COM1's base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;
/// COM2's base port (the guest's `/dev/ttyS1`: the metadata channel, as on SmartOS).
pub const COM2_PORT: u16 = 0x2f8;
/// COM2's interrupt line.
pub const COM2_IRQ: u32 = 3;

const IIR: u8 = 2;
const IIR_NO_INTERRUPT: u8 = 0x01;
const IIR_RX_DATA: u8 = 0x04;
const IER_RX_DATA: u8 = 0x01;

/// Raises the serial IRQ through an eventfd registered as a KVM irqfd.
pub struct IrqFdTrigger(pub EventFd);

impl Trigger for IrqFdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Signals `room` whenever the guest has emptied the receive FIFO.
struct RoomEvents {
    room: Arc<EventFd>,
}

impl SerialEvents for RoomEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        // A failed write means the counter is saturated: the reader is woken anyway.
        let _ = self.room.write(1);
    }
}

/// The serial port on the bus.
pub struct SerialDevice {
    inner: Serial<IrqFdTrigger, RoomEvents, Box<dyn Write + Send>>,
    room: Arc<EventFd>,
}

impl SerialDevice {
    /// A 16550 interrupting through `irq`, writing guest output to `out`.
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>) -> io::Result<Self> {
        let room = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let events = RoomEvents { room: room.clone() };
        Ok(SerialDevice {
            inner: Serial::with_events(IrqFdTrigger(irq), events, out),
            room,
        })
    }

    /// Queues host input for the guest; returns how many bytes fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.inner.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Free room in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.inner.fifo_capacity()
    }

    /// The event the device signals each time the guest empties the receive FIFO; the
    /// input thread waits on it while the FIFO is full.
    pub fn room_event(&self) -> Arc<EventFd> {
        self.room.clone()
    }

    /// `iir` as a 16550 reports it: received data stays pending while the FIFO holds
    /// any and its interrupt is enabled, whatever `vm-superio` forgot on earlier reads.
    fn level_iir(&self, iir: u8) -> u8 {
        let state = self.inner.state();
        if state.interrupt_enable & IER_RX_DATA != 0 && !state.in_buffer.is_empty() {
            (iir & !IIR_NO_INTERRUPT) | IIR_RX_DATA
        } else {
            iir
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Ok(off), Some(first)) = (u8::try_from(offset), data.first_mut()) {
            let value = self.inner.read(off);
            *first = if off == IIR {
                self.level_iir(value)
            } else {
                value
            };
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
        let mut s =
            SerialDevice::new(EventFd::new(0).unwrap(), Box::new(Shared(out.clone()))).unwrap();
        for b in b"hi" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.lock().unwrap(), b"hi");
        // Line status: transmitter empty.
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }

    const RBR: u64 = 0;
    const IER: u64 = 1;
    const LSR: u64 = 5;
    const LSR_DATA_READY: u8 = 0x01;

    /// The host side as `spawn_input` drives it: a reply, fed into whatever FIFO room
    /// there is each time `feed` is called.
    struct Host {
        reply: Vec<u8>,
        sent: usize,
    }

    impl Host {
        fn feed(&mut self, s: &mut SerialDevice) {
            self.sent += s.enqueue_input(&self.reply[self.sent..]);
        }
    }

    fn read(s: &mut SerialDevice, reg: u64) -> u8 {
        let mut b = [0u8];
        s.read(reg, &mut b);
        b[0]
    }

    /// Linux 6.1's 8250 receive path: `serial8250_interrupt` calls `handle_irq` until
    /// it reports nothing to do (at most 512 passes); each pass reads IIR, stops on "no
    /// interrupt", else reads LSR and then RBR while LSR says data ready, at most 256
    /// characters (`serial8250_rx_chars`). The host feeds the FIFO after every
    /// `every` characters the guest reads, as the input thread races the vCPU.
    fn guest_irq(s: &mut SerialDevice, host: &mut Host, every: usize, got: &mut Vec<u8>) {
        for _pass in 0..512 {
            if read(s, IIR.into()) & IIR_NO_INTERRUPT != 0 {
                return;
            }
            let mut lsr = read(s, LSR);
            let mut max_count = 256;
            while lsr & LSR_DATA_READY != 0 {
                got.push(read(s, RBR));
                if got.len().is_multiple_of(every) {
                    host.feed(s);
                }
                max_count -= 1;
                if max_count == 0 {
                    break;
                }
                lsr = read(s, LSR);
            }
        }
    }

    /// Replays a guest reading a `len`-byte reply over the real device, interrupt by
    /// interrupt, until no interrupt is pending; returns what the guest received.
    fn replay(len: usize, every: usize) -> Vec<u8> {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let trigger = irq.try_clone().unwrap();
        let mut s = SerialDevice::new(trigger, Box::new(io::sink())).unwrap();
        // The driver's startup: receive and line-status interrupts on.
        s.write(IER, &[0x05]);
        let mut host = Host {
            reply: (0..len).map(|i| b'A' + (i % 26) as u8).collect(),
            sent: 0,
        };
        let mut got = Vec::new();
        host.feed(&mut s);
        // An edge is latched until the CPU takes it (the eventfd counter), as the
        // local APIC does while the handler runs.
        while irq.read().is_ok() {
            guest_irq(&mut s, &mut host, every, &mut got);
            host.feed(&mut s);
        }
        assert_eq!(got, host.reply[..got.len()], "bytes arrived out of order");
        got
    }

    #[test]
    fn a_reply_longer_than_one_driver_pass_arrives_whole() {
        // 300: an sdc:nics answer like the one that stalled at 256 bytes.
        for len in [1, 64, 255, 256, 257, 300, 320, 511, 513, 1000, 4096] {
            for every in [1, 3, 64] {
                let got = replay(len, every);
                assert_eq!(got.len(), len, "{len}-byte reply fed every {every} reads");
            }
        }
    }

    #[test]
    fn iir_reports_received_data_while_the_fifo_holds_any() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(irq.try_clone().unwrap(), Box::new(io::sink())).unwrap();
        s.enqueue_input(b"xyz");
        // Interrupt disabled: nothing to report, however much is queued.
        assert_ne!(read(&mut s, IIR.into()) & IIR_NO_INTERRUPT, 0);
        s.write(IER, &[IER_RX_DATA]);
        for expected in *b"xyz" {
            for _ in 0..2 {
                let iir = read(&mut s, IIR.into());
                assert_eq!(iir & (IIR_NO_INTERRUPT | IIR_RX_DATA), IIR_RX_DATA);
            }
            assert_eq!(read(&mut s, RBR), expected);
        }
        assert_ne!(read(&mut s, IIR.into()) & IIR_NO_INTERRUPT, 0);
        // Emptying the FIFO signals room to the input thread.
        assert_eq!(s.room_event().read().unwrap(), 1);
    }
}
