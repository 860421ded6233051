//! The legacy PC devices on the port I/O bus, with COM1 (and COM2, when the guest has a
//! metadata channel) on irqfds and the SCI on a KVM interrupt line.

use super::DeviceManagerError;
use crate::arch::acpi::{PM1A_EVT_PORT, SCI_IRQ};
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::marker::{BootMarker, MARKER_PORT};
use crate::devices::legacy::pm::PowerManagement;
use crate::devices::legacy::serial::{SerialDevice, COM1_IRQ, COM1_PORT, COM2_IRQ, COM2_PORT};
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
    let serial = attach_serial(vm, pio, COM1_PORT, COM1_IRQ, serial_out)?;

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

/// Puts COM2 (0x2f8, IRQ 3) on `pio`, writing guest output to `out`.
pub fn attach_com2(
    vm: &Vm,
    pio: &mut Bus,
    out: Box<dyn Write + Send>,
) -> Result<Arc<Mutex<SerialDevice>>, DeviceManagerError> {
    attach_serial(vm, pio, COM2_PORT, COM2_IRQ, out)
}

/// A 16550 at `port` whose interrupt is an irqfd on `irq`.
fn attach_serial(
    vm: &Vm,
    pio: &mut Bus,
    port: u16,
    irq: u32,
    out: Box<dyn Write + Send>,
) -> Result<Arc<Mutex<SerialDevice>>, DeviceManagerError> {
    let irq_fd = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| DeviceManagerError::Os {
        what: "eventfd",
        source,
    })?;
    vm.fd
        .register_irqfd(&irq_fd, irq)
        .map_err(|source| DeviceManagerError::Kvm {
            what: "register serial irqfd",
            source,
        })?;
    let serial = SerialDevice::new(irq_fd, out).map_err(|source| DeviceManagerError::Os {
        what: "serial room eventfd",
        source,
    })?;
    let serial = Arc::new(Mutex::new(serial));
    pio.insert(serial.clone(), u64::from(port), 8)?;
    Ok(serial)
}
