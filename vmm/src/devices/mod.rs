//! Device models behind the port-I/O and MMIO buses: [`legacy`] PC devices, the
//! [`pci`] bus, and [`virtio`] devices on their PCI transport.
//!
//! Devices sit below the VM that runs them: they depend on guest memory, the [`bus`]
//! traits, [`interrupt`] lines and the [`ExitSignal`], never on the VM, the device
//! manager or the runner (`tests/layering.rs` holds that line). The
//! [`crate::device_manager`] creates them, puts them on buses and wires their
//! interrupts.

pub mod bus;
pub mod interrupt;
pub mod legacy;
pub mod pci;
pub mod virtio;

pub use bus::{Bus, BusDevice};

/// Why the guest stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest powered itself off (ACPI S5).
    PowerOff,
    /// The guest asked for a reset (i8042, ACPI reset register, triple fault).
    Reset,
    /// The VMM stopped the guest on request (forced stop).
    Stopped,
    /// Something went wrong: the VMM or the guest cannot go on.
    Crash(String),
}

/// A cloneable handle devices and vCPUs use to end the VM; the first exit wins.
#[derive(Clone)]
pub struct ExitSignal(std::sync::mpsc::Sender<GuestExit>);

impl ExitSignal {
    /// A signal and the receiver the VMM's main thread waits on.
    pub fn new() -> (Self, std::sync::mpsc::Receiver<GuestExit>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (ExitSignal(tx), rx)
    }

    /// Asks the VMM to end the guest with `why`.
    pub fn exit(&self, why: GuestExit) {
        // The receiver only goes away once the VMM is already exiting.
        let _ = self.0.send(why);
    }
}
