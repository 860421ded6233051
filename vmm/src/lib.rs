//! The skerry VMM: one process per HVM guest, on the rust-vmm crates.
//!
//! Layout follows the architecture: [`arch`] (x86_64 address map, registers, boot
//! protocol, ACPI), [`vm`] and [`vcpu`] (KVM state and threads), [`devices`] (legacy PC
//! devices on the buses), [`pci`] and [`virtio`] (the devices a Debian kernel drives),
//! [`runner`] (boot a config to the end), [`config`] (what a guest is made of).

pub mod arch;
pub mod bootdisk;
pub mod config;
pub mod devices;
pub mod instance;
pub mod logger;
pub mod pci;
pub mod runner;
pub mod vcpu;
pub mod virtio;
pub mod vm;
