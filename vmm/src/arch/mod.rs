//! x86_64 specifics: the guest address map, register setup, boot protocol, ACPI,
//! SMBIOS.

pub mod acpi;
pub mod boot;
pub mod layout;
pub mod regs;
pub mod smbios;
