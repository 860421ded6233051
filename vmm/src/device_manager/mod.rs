//! Puts the devices of one guest on its buses and wires their interrupts to the KVM VM:
//! the [`legacy`] PC devices on the port I/O bus, the PCI bus with its virtio
//! functions ([`pci`]). Devices know nothing of this module; the machine that runs the
//! guest owns a [`DeviceManager`] and hands its buses to the vCPUs.

pub mod legacy;
pub mod pci;

use crate::config::{DiskConfig, NetConfig};
use crate::devices::bus::OverlapError;
use crate::devices::virtio::block::BlockError;
use crate::devices::virtio::net::NetError;
use crate::devices::{Bus, ExitSignal};
use crate::vstate::vm::Vm;
use legacy::LegacyDevices;
use std::io::Write;
use std::time::Instant;

/// Why a device could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum DeviceManagerError {
    /// Two devices on one address.
    #[error(transparent)]
    Bus(#[from] OverlapError),
    /// Wiring an interrupt into KVM failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// The step.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// An OS call (eventfd) failed.
    #[error("{what}: {source}")]
    Os {
        /// The step.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A virtio-blk disk.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A virtio-net interface.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The host side of a tap (opening it, its bridge, its link state).
    #[error("tap {tap}")]
    Tap {
        /// The tap.
        tap: String,
        /// What failed, naming the step.
        #[source]
        source: host::link::LinkError,
    },
    /// Putting a tap on its VLAN.
    #[error(transparent)]
    Vlan(#[from] host::vlan::VlanError),
    /// The tap descriptor the monitor handed over is not usable.
    #[error("tap {tap}: tap_fd {fd}: {reason}")]
    TapFd {
        /// The tap.
        tap: String,
        /// The descriptor number.
        fd: i32,
        /// What is wrong with it.
        reason: String,
    },
}

/// The buses of one guest and the devices the VMM itself talks to.
pub struct DeviceManager {
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// COM1, the PM block and the boot marker.
    pub legacy: LegacyDevices,
    /// The virtio-net functions, whose RX threads start with the guest.
    pub nets: Vec<pci::SharedNet>,
}

impl DeviceManager {
    /// Attaches the legacy devices to `vm`: COM1 writing to `serial_out`, the i8042 and
    /// the PM block ending the guest through `exit`, the boot marker counting from
    /// `started`.
    pub fn new(
        vm: &Vm,
        serial_out: Box<dyn Write + Send>,
        exit: ExitSignal,
        started: Instant,
    ) -> Result<Self, DeviceManagerError> {
        let mut pio = Bus::new();
        let legacy = legacy::attach(vm, &mut pio, serial_out, exit, started)?;
        Ok(DeviceManager {
            pio,
            mmio: Bus::new(),
            legacy,
            nets: Vec::new(),
        })
    }

    /// Puts COM2 on the port I/O bus, writing guest output to `out`; feed its input
    /// through the returned device.
    pub fn attach_com2(
        &mut self,
        vm: &Vm,
        out: Box<dyn Write + Send>,
    ) -> Result<
        std::sync::Arc<std::sync::Mutex<crate::devices::legacy::serial::SerialDevice>>,
        DeviceManagerError,
    > {
        legacy::attach_com2(vm, &mut self.pio, out)
    }

    /// Puts the PCI bus on the buses with a virtio-blk function per disk (the first is
    /// /dev/vda) and a virtio-net function per interface.
    pub fn attach_pci(
        &mut self,
        vm: &Vm,
        disks: &[DiskConfig],
        nets: &[NetConfig],
    ) -> Result<(), DeviceManagerError> {
        let attached = pci::attach(vm, &mut self.pio, &mut self.mmio, disks, nets)?;
        self.nets.extend(attached);
        Ok(())
    }

    /// Starts the threads the devices run besides the vCPUs (virtio-net RX).
    pub fn start_io_threads(&self) -> Result<(), DeviceManagerError> {
        pci::start_rx_threads(&self.nets)
    }
}
