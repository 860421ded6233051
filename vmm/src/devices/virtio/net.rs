//! virtio-net on a tap device. TX runs on the vCPU thread that notifies; RX runs on
//! a thread that waits for frames on the tap and for fresh guest buffers.

use crate::devices::bus::lock;
use crate::devices::virtio::transport::pci::VirtioPciDevice;
use crate::devices::virtio::{read_config_bytes, VirtioDevice, VirtioError, VIRTIO_F_VERSION_1};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

const F_MAC: u64 = 1 << 5;
const QUEUE_SIZE: u16 = 256;
/// `virtio_net_hdr_v1`: every frame is preceded by it.
const HDR_LEN: usize = 12;
const MAX_FRAME: usize = 65562;
const RX: usize = 0;
const TX: usize = 1;

/// Why a virtio-net interface could not be set up on its tap.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The eventfd that wakes the RX thread.
    #[error("tap {tap}: creating the RX eventfd")]
    EventFd {
        /// The tap.
        tap: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The tap descriptor for the RX thread.
    #[error("tap {tap}: duplicating the tap descriptor")]
    CloneTap {
        /// The tap.
        tap: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The RX thread.
    #[error("tap {tap}: starting the RX thread")]
    RxThread {
        /// The tap.
        tap: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A virtio-net interface.
pub struct Net {
    tap: File,
    tap_name: String,
    mac: [u8; 6],
    pending: Option<Vec<u8>>,
    rx_kick: Arc<EventFd>,
    complaints: u32,
}

impl Net {
    /// A NIC on an open (non-blocking) tap.
    pub fn new(tap: File, tap_name: String, mac: [u8; 6]) -> Result<Self, NetError> {
        let rx_kick = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| NetError::EventFd {
            tap: tap_name.clone(),
            source,
        })?;
        Ok(Net {
            tap,
            tap_name,
            mac,
            pending: None,
            rx_kick: Arc::new(rx_kick),
            complaints: 0,
        })
    }

    /// Whether a frame waits for a guest buffer (the RX thread then only waits for
    /// the guest, not the tap).
    pub fn rx_stalled(&self) -> bool {
        self.pending.is_some()
    }

    fn complain(&mut self, what: &str) {
        self.complaints += 1;
        if self.complaints <= 8 {
            log::warn!("virtio-net {}: {what}", self.tap_name);
        }
    }

    fn rx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, VirtioError> {
        let mut used = false;
        loop {
            if self.pending.is_none() {
                let mut buf = vec![0u8; MAX_FRAME];
                match self.tap.read(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        self.pending = Some(buf);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(used),
                    Err(e) => {
                        self.complain(&format!("reading the tap: {e}"));
                        return Ok(used);
                    }
                }
            }
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                return Ok(used); // no buffers: keep the frame until the guest adds some
            };
            let head = chain.head_index();
            let frame = self.pending.take().unwrap_or_default();
            let written = match Writer::new(mem, chain) {
                Ok(mut w) => {
                    let mut hdr = [0u8; HDR_LEN];
                    hdr[10] = 1; // num_buffers
                    let room = w.available_bytes().saturating_sub(HDR_LEN);
                    if room < frame.len() {
                        self.complain("guest RX buffer too small; frame truncated");
                    }
                    let n = room.min(frame.len());
                    match w.write_all(&hdr).and_then(|_| w.write_all(&frame[..n])) {
                        Ok(()) => w.bytes_written(),
                        Err(e) => {
                            self.complain(&format!("bad RX buffer: {e}"));
                            0
                        }
                    }
                }
                Err(e) => {
                    self.complain(&format!("bad RX descriptors: {e}"));
                    0
                }
            };
            queue
                .add_used(mem, head, written as u32)
                .map_err(|source| VirtioError::Queue { queue: RX, source })?;
            used = true;
        }
    }

    fn tx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, VirtioError> {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            match Reader::new(mem, chain) {
                Ok(mut r) if r.available_bytes() <= MAX_FRAME + HDR_LEN => {
                    let mut buf = vec![0u8; r.available_bytes()];
                    match r.read_exact(&mut buf) {
                        Ok(()) if buf.len() > HDR_LEN => {
                            // A full tap queue drops the frame, like a busy wire.
                            if let Err(e) = self.tap.write(&buf[HDR_LEN..]) {
                                if e.kind() != std::io::ErrorKind::WouldBlock {
                                    self.complain(&format!("writing the tap: {e}"));
                                }
                            }
                        }
                        Ok(()) => self.complain("TX buffer without a frame"),
                        Err(e) => self.complain(&format!("bad TX buffer: {e}")),
                    }
                }
                Ok(_) => self.complain("TX frame larger than 64 KiB dropped"),
                Err(e) => self.complain(&format!("bad TX descriptors: {e}")),
            }
            queue
                .add_used(mem, head, 0)
                .map_err(|source| VirtioError::Queue { queue: TX, source })?;
            used = true;
        }
        Ok(used)
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        1
    }

    fn pci_class(&self) -> u32 {
        0x02_00_00 // network, ethernet
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | F_MAC
    }

    fn queue_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut cfg = [0u8; 8];
        cfg[..6].copy_from_slice(&self.mac);
        read_config_bytes(&cfg, offset, data);
    }

    fn queue_notified(&mut self, idx: usize) -> bool {
        if idx == RX {
            let _ = self.rx_kick.write(1);
            return false;
        }
        true
    }

    fn process_queue(
        &mut self,
        idx: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        match idx {
            RX => self.rx(queue, mem),
            TX => self.tx(queue, mem),
            _ => Ok(false),
        }
    }

    fn activated(&mut self) {
        let _ = self.rx_kick.write(1);
    }

    fn reset(&mut self) {
        self.pending = None;
    }

    fn name(&self) -> String {
        format!("net {}", self.tap_name)
    }
}

/// Starts the thread that moves frames from the tap into the RX queue of `dev`, as
/// the guest adds buffers.
pub fn spawn_rx_thread(dev: Arc<Mutex<VirtioPciDevice<Net>>>) -> Result<(), NetError> {
    let (tap_name, kick, rx_fd) = {
        let d = lock(&dev);
        let net = &d.device;
        let rx_fd = net.tap.try_clone().map_err(|source| NetError::CloneTap {
            tap: net.tap_name.clone(),
            source,
        })?;
        (net.tap_name.clone(), net.rx_kick.clone(), rx_fd)
    };
    std::thread::Builder::new()
        .name(format!("net-rx-{tap_name}"))
        .spawn(move || rx_loop(dev, rx_fd, kick))
        .map_err(|source| NetError::RxThread {
            tap: tap_name,
            source,
        })?;
    Ok(())
}

fn rx_loop(dev: Arc<Mutex<VirtioPciDevice<Net>>>, tap: File, kick: Arc<EventFd>) {
    loop {
        let listen_tap = {
            let d = lock(&dev);
            d.is_active() && !d.device.rx_stalled()
        };
        // SAFETY: `kick` is kept alive by this function's Arc for the whole poll.
        let kick_fd = unsafe { BorrowedFd::borrow_raw(kick.as_raw_fd()) };
        let mut fds = vec![PollFd::new(kick_fd, PollFlags::POLLIN)];
        if listen_tap {
            fds.push(PollFd::new(tap.as_fd(), PollFlags::POLLIN));
        }
        if let Err(e) = poll(&mut fds, PollTimeout::NONE) {
            if e != nix::errno::Errno::EINTR {
                log::error!("virtio-net RX poll: {e}");
                return;
            }
        }
        let _ = kick.read();
        lock(&dev).process(RX);
    }
}
