//! The PCI bus (config ports 0xcf8..0xcff, the BAR window on the MMIO bus) and the
//! virtio functions on it: disks opened here, taps set up on the host here, MSIs
//! delivered by the KVM VM.

use super::DeviceManagerError;
use crate::arch::layout::{PCI_MMIO_SIZE, PCI_MMIO_START};
use crate::config::{DiskConfig, NetConfig};
use crate::devices::interrupt::MsiSender;
use crate::devices::pci::{PciBus, PciConfigIo, PciMmio};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::net::{self, Net};
use crate::devices::virtio::transport::pci::VirtioPciDevice;
use crate::devices::Bus;
use crate::vstate::vm::Vm;
use host::link;
use std::sync::{Arc, Mutex};

/// A virtio-net function, whose RX thread starts with the guest.
pub type SharedNet = Arc<Mutex<VirtioPciDevice<Net>>>;

/// Puts the PCI bus on `pio`/`mmio` and a virtio function per disk and interface on it;
/// returns the interfaces, whose RX threads [`start_rx_threads`] starts later (the jail
/// wants a single-threaded process to enter its user namespace).
pub fn attach(
    vm: &Vm,
    pio: &mut Bus,
    mmio: &mut Bus,
    disks: &[DiskConfig],
    nets: &[NetConfig],
) -> Result<Vec<SharedNet>, DeviceManagerError> {
    let bus = PciBus::new();
    pio.insert(
        Arc::new(Mutex::new(PciConfigIo::new(bus.clone()))),
        0xcf8,
        8,
    )?;
    mmio.insert(
        Arc::new(Mutex::new(PciMmio::new(bus.clone()))),
        PCI_MMIO_START,
        PCI_MMIO_SIZE,
    )?;
    for disk in disks {
        attach_block(vm, &bus, disk)?;
    }
    nets.iter().map(|nic| attach_net(vm, &bus, nic)).collect()
}

/// Starts the RX thread of each interface.
pub fn start_rx_threads(nets: &[SharedNet]) -> Result<(), DeviceManagerError> {
    for dev in nets {
        net::spawn_rx_thread(dev.clone())?;
    }
    Ok(())
}

fn msi(vm: &Vm) -> Arc<dyn MsiSender> {
    vm.fd.clone()
}

/// Opens `disk` and plugs it into `bus`.
fn attach_block(vm: &Vm, bus: &PciBus, disk: &DiskConfig) -> Result<(), DeviceManagerError> {
    let block = Block::open(&disk.path, disk.read_only)?;
    let slot = bus.next_slot();
    let dev = VirtioPciDevice::new(block, slot, vm.mem.clone(), msi(vm));
    bus.add(Arc::new(Mutex::new(dev)));
    Ok(())
}

/// Opens the tap named in `nic` (plugged into its bridge, up) and plugs the NIC into
/// `bus`.
fn attach_net(vm: &Vm, bus: &PciBus, nic: &NetConfig) -> Result<SharedNet, DeviceManagerError> {
    let err = |source| DeviceManagerError::Tap {
        tap: nic.tap.clone(),
        source,
    };
    // The monitor's tap is plugged in already; one of our own is plugged in here.
    if let Some(fd) = nic.tap_fd {
        let tap =
            crate::config::take_inherited(fd).map_err(|reason| DeviceManagerError::TapFd {
                tap: nic.tap.clone(),
                fd,
                reason,
            })?;
        return plug_net(vm, bus, nic, std::fs::File::from(tap));
    }
    let tap = link::open_tap(&nic.tap).map_err(err)?;
    // Plugging into the bridge also sets the tap up.
    match &nic.bridge {
        Some(bridge) => {
            link::plug_into_bridge(&nic.tap, bridge).map_err(err)?;
            // Before any vCPU runs: the guest's first frame is already on its VLAN.
            if nic.vlan != 0 {
                host::vlan::isolate_port(bridge, &nic.tap, nic.vlan, |port| {
                    !monitor::is_host_ifname(port)
                })?;
            }
        }
        None => link::set_up(&nic.tap).map_err(err)?,
    }
    plug_net(vm, bus, nic, tap)
}

/// Plugs the NIC of `nic`, whose host side is the open `tap`, into `bus`.
fn plug_net(
    vm: &Vm,
    bus: &PciBus,
    nic: &NetConfig,
    tap: std::fs::File,
) -> Result<SharedNet, DeviceManagerError> {
    let model = Net::new(tap, nic.tap.clone(), nic.mac)?;
    let slot = bus.next_slot();
    let dev = Arc::new(Mutex::new(VirtioPciDevice::new(
        model,
        slot,
        vm.mem.clone(),
        msi(vm),
    )));
    bus.add(dev.clone());
    Ok(dev)
}
