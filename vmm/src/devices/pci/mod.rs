//! PCI bus 0 ([`bus`]) and the configuration space of its functions
//! ([`config_space`]). Devices have one 32-bit memory BAR (BAR0); the guest may move
//! it within the MMIO window. The bus knows functions only through [`PciDevice`]: what
//! sits behind one (virtio, say) is above this layer.

pub mod bus;
pub mod config_space;

pub use bus::{PciBus, PciConfigIo, PciMmio};
pub use config_space::{ConfigSpace, BAR0, FIRST_CAP};
use std::sync::{Arc, Mutex};

/// A PCI function as the bus sees it.
pub trait PciDevice: Send {
    /// The 256-byte configuration space.
    fn config(&mut self) -> &mut ConfigSpace;
    /// Called after a configuration write (BAR moves, MSI-X enable...).
    fn config_written(&mut self, _offset: usize) {}
    /// A guest read inside BAR0.
    fn bar_read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest write inside BAR0.
    fn bar_write(&mut self, offset: u64, data: &[u8]);
}

/// Shared handle to a device on the bus.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;
