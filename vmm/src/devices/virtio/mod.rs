//! virtio 1.x devices: [`block`] and [`net`] models behind the [`VirtioDevice`] trait,
//! and the virtio-pci transport ([`transport::pci`], MSI-X) that puts a model on the
//! PCI bus.
//!
//! Everything a device reads from a guest (descriptor chains, queue addresses, request
//! headers) is untrusted: errors end in a log line and a failed request or a device
//! marked as needing reset, never in a panic.

pub mod block;
pub mod net;
pub mod transport;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// `VIRTIO_F_VERSION_1`: a modern (1.x) device.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// A queue or device failure caused by what the guest put in memory.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// The used ring or a descriptor could not be accessed.
    #[error("queue {queue}: {source}")]
    Queue {
        /// Queue index.
        queue: usize,
        /// The error.
        source: virtio_queue::Error,
    },
}

/// A device model behind the virtio-pci transport.
pub trait VirtioDevice: Send + 'static {
    /// virtio device id (1 = net, 2 = block).
    fn device_type(&self) -> u16;
    /// PCI class code for the function.
    fn pci_class(&self) -> u32;
    /// Feature bits offered (including [`VIRTIO_F_VERSION_1`]).
    fn features(&self) -> u64;
    /// Maximum size of each queue.
    fn queue_sizes(&self) -> Vec<u16>;
    /// Reads the device-specific configuration.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The guest notified queue `idx`: true to have the transport process it now (on
    /// the vCPU thread), false when the device's own thread will.
    fn queue_notified(&mut self, _idx: usize) -> bool {
        true
    }
    /// Processes available buffers of queue `idx`; true when used entries were added.
    fn process_queue(
        &mut self,
        idx: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError>;
    /// The driver set DRIVER_OK with valid queues.
    fn activated(&mut self) {}
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// A short name for log lines (disk path, tap name).
    fn name(&self) -> String;
}

/// Copies `bytes[offset..]` into `data` (device config space reads), zero past the end.
pub fn read_config_bytes(bytes: &[u8], offset: u64, data: &mut [u8]) {
    for (i, d) in data.iter_mut().enumerate() {
        *d = usize::try_from(offset)
            .ok()
            .and_then(|o| bytes.get(o + i))
            .copied()
            .unwrap_or(0);
    }
}
