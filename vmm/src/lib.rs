//! The skerry VMM: one process per HVM guest, on the rust-vmm crates.
//!
//! Layout follows Firecracker's, and layers point down (`tests/layering.rs` checks it):
//!
//! - [`arch`]: the x86_64 address map, registers, boot protocol, ACPI and SMBIOS tables;
//! - [`devices`]: device models, knowing only guest memory, the bus traits and their
//!   interrupt lines: [`devices::legacy`] PC devices, the [`devices::pci`] bus,
//!   [`devices::virtio`] block and net on the virtio-pci transport;
//! - [`vstate`]: KVM state, the VM ([`vstate::vm`]) and vCPU threads ([`vstate::vcpu`]);
//! - [`device_manager`]: creates the devices, puts them on buses, wires their
//!   interrupts to KVM;
//! - [`machine`]: one guest, VM + vCPUs + device manager, started and waited for;
//! - [`runner`]: boots a [`config::VmConfig`] to the end (console, stop signals, jail);
//! - [`metadata`]: the monitor's side of the guest's metadata channel (COM2), an
//!   `mdata` server per boot;
//! - [`monitor`]: the monitor init spawns, running one jailed child `vmm` per boot and
//!   handing it its config as a JSON file (`--config-file`);
//! - host side: [`jail`] (namespaces, ids, seccomp, cgroup), `host::link` (taps and
//!   bridges), [`bootdisk`] (kernel from a disk's /boot), [`logger`].
#![warn(missing_docs)]

pub mod arch;
pub mod bootdisk;
pub mod config;
pub mod device_manager;
pub mod devices;
pub mod jail;
pub mod logger;
pub mod machine;
pub mod metadata;
pub mod monitor;
pub mod runner;
pub mod vstate;
