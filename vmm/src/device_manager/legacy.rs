//! The legacy PC devices on the port I/O bus, with COM1 on an irqfd and the SCI on a
//! KVM interrupt line.

use super::DeviceManagerError;
use crate::arch::acpi::{PM1A_EVT_PORT, SCI_IRQ};
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::marker::{BootMarker, MARKER_PORT};
use crate::devices::legacy::pm::PowerManagement;
use crate::devices::legacy::serial::{SerialDevice, COM1_IRQ, COM1_PORT};
use crate::devices::legacy::ZeroPorts;
use crate::devices::{Bus, ExitSignal};
use crate::vstate::vm::Vm;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vmm_sys_util::eventfd::EventFd;

/// The legacy devices the VMM talks to after attaching them.
pub struct LegacyDevices {
    /// COM1 (for feeding console input).
    pub serial: Arc<Mutex<SerialDevice>>,
    /// ACPI power management (the power button).
    pub pm: Arc<Mutex<PowerManagement>>,
    /// Boot marker hits.
    pub marker: Arc<Mutex<BootMarker>>,
}

/// Puts COM1, the i8042, an empty CMOS, the PM block and the boot marker on `pio`.
pub fn attach(
    vm: &Vm,
    pio: &mut Bus,
    serial_out: Box<dyn Write + Send>,
    exit: ExitSignal,
    started: Instant,
) -> Result<LegacyDevices, DeviceManagerError> {
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| DeviceManagerError::Os {
        what: "eventfd",
        source,
    })?;
    vm.fd
        .register_irqfd(&serial_irq, COM1_IRQ)
        .map_err(|source| DeviceManagerError::Kvm {
            what: "register serial irqfd",
            source,
        })?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, serial_out)));
    pio.insert(serial.clone(), u64::from(COM1_PORT), 8)?;

    pio.insert(Arc::new(Mutex::new(I8042::new(exit.clone()))), 0x60, 5)?;
    pio.insert(Arc::new(Mutex::new(ZeroPorts)), 0x70, 2)?; // CMOS

    let sci_fd = vm.fd.clone();
    let sci = Box::new(move |level: bool| {
        if let Err(e) = sci_fd.set_irq_line(SCI_IRQ, level) {
            log::warn!("raising the SCI: {e}");
        }
    });
    let pm = Arc::new(Mutex::new(PowerManagement::new(sci, exit)));
    pio.insert(pm.clone(), u64::from(PM1A_EVT_PORT), 8)?;

    let marker = Arc::new(Mutex::new(BootMarker::new(started)));
    pio.insert(marker.clone(), u64::from(MARKER_PORT), 1)?;
    Ok(LegacyDevices { serial, pm, marker })
}
