//! The PC devices a Linux guest expects at fixed ports: COM1 ([`serial`]), the i8042
//! reset line ([`i8042`]), the ACPI power-management block ([`pm`]), the boot marker
//! port ([`marker`]), and an empty CMOS ([`ZeroPorts`]).

pub mod i8042;
pub mod marker;
pub mod pm;
pub mod serial;

use crate::devices::BusDevice;

/// A port range that reads as zero and ignores writes (the CMOS: "nothing set").
pub struct ZeroPorts;

impl BusDevice for ZeroPorts {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}
