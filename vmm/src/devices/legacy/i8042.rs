//! Just enough of the i8042 keyboard controller for the reset line: the CPU reset
//! command (0xfe on port 0x64) ends the guest with [`GuestExit::Reset`]. Everything else
//! reads as "no data, controller idle" so the kernel's driver gives up quickly.

use crate::devices::{BusDevice, ExitSignal, GuestExit};

/// Ports 0x60..=0x64 (data at offset 0, command/status at offset 4).
pub struct I8042 {
    exit: ExitSignal,
}

/// The command that pulses the CPU reset line.
pub const CMD_RESET_CPU: u8 = 0xfe;

impl I8042 {
    /// A controller whose reset command signals `exit`.
    pub fn new(exit: ExitSignal) -> Self {
        I8042 { exit }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 4 && data.first() == Some(&CMD_RESET_CPU) {
            log::info!("guest reset through the i8042 controller");
            self.exit.exit(GuestExit::Reset);
        }
    }
}
