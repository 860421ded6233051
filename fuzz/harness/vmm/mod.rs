//! Fuzz harnesses shared by the cargo-fuzz targets (`fuzz_targets/`) and the stable
//! no-panic test over seeds and pseudo-random inputs (`vmm/tests/fuzz_harnesses.rs`):
//! one body per target, so both exercise the same code. Any panic is a bug: each input
//! is what a guest (or a guest's disk) can present.

// Each fuzz target uses one harness; the rest is unused there.
#![allow(dead_code)]

pub mod boot_disk;
pub mod pci_config;
pub mod virtio_net;
pub mod virtio_queue;

use std::sync::Arc;
use vmm::devices::interrupt::{MsiMessage, MsiSender};

/// MSIs go nowhere (no KVM needed), but a guest-chosen message is still refused
/// sometimes, like KVM would.
pub struct NoMsi;

impl MsiSender for NoMsi {
    fn send_msi(&self, msg: MsiMessage) -> std::io::Result<()> {
        if msg.address & 0xfff0_0000 == 0xfee0_0000 {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        }
    }
}

/// The MSI sender for harness devices.
pub fn msi() -> Arc<dyn MsiSender> {
    Arc::new(NoMsi)
}

/// Reads the input as a stream of small numbers.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    /// The next byte, 0 once the input is used up.
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Whether anything is left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
