//! How devices interrupt the guest, without knowing how the VM delivers it: the device
//! manager hands each device a line or an MSI sender backed by KVM.

/// Raises or lowers a level-triggered interrupt line (the ACPI SCI).
pub type IrqLine = Box<dyn Fn(bool) + Send>;

/// One message-signalled interrupt, as an MSI-X table entry describes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address (the target LAPIC and mode).
    pub address: u64,
    /// Message data (the vector).
    pub data: u32,
}

/// Delivers MSIs to the guest: the VM's `KVM_SIGNAL_MSI` in the VMM.
pub trait MsiSender: Send + Sync {
    /// Injects `msg`; fails when the guest programmed a message KVM refuses.
    fn send_msi(&self, msg: MsiMessage) -> std::io::Result<()>;
}
