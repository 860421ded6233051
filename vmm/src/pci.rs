//! PCI: a host bridge and configuration mechanism #1 (ports 0xcf8/0xcfc); virtio
//! devices sit on bus 0.

use crate::config::VmConfig;
use crate::runner::RunError;
use crate::vm::Vm;

/// Attaches the configured virtio devices (none yet).
pub fn attach_devices(_vm: &mut Vm, config: &VmConfig) -> Result<(), RunError> {
    if let Some(d) = config.disks.first() {
        return Err(RunError::Device {
            name: d.path.display().to_string(),
            reason: "virtio-blk is not available yet".into(),
        });
    }
    if let Some(n) = config.nets.first() {
        return Err(RunError::Device {
            name: n.tap.clone(),
            reason: "virtio-net is not available yet".into(),
        });
    }
    Ok(())
}
