//! The ACPI PM1a event and control blocks the FADT points at: the guest powers off by
//! writing `SLP_TYP=5 | SLP_EN` to PM1a_CNT, and the VMM "presses" the power button by
//! setting PWRBTN_STS, raising the SCI while the guest has the event enabled.

use crate::arch::acpi::S5_SLP_TYP;
use crate::devices::interrupt::IrqLine;
use crate::devices::{BusDevice, ExitSignal, GuestExit};

const PWRBTN: u16 = 1 << 8;
const SLP_EN: u16 = 1 << 13;
const SCI_EN: u16 = 1;

/// PM1a_EVT (4 bytes: status, enable) and PM1a_CNT (2 bytes) as one 8-byte block.
pub struct PowerManagement {
    status: u16,
    enable: u16,
    control: u16,
    sci: IrqLine,
    exit: ExitSignal,
}

impl PowerManagement {
    /// A PM block raising `sci`, ending the guest through `exit`.
    pub fn new(sci: IrqLine, exit: ExitSignal) -> Self {
        PowerManagement {
            status: 0,
            enable: 0,
            // Always in ACPI mode: there is no SMI to switch modes.
            control: SCI_EN,
            sci,
            exit,
        }
    }

    /// Presses the power button: a graceful shutdown request to an ACPI-aware guest.
    pub fn press_power_button(&mut self) {
        self.status |= PWRBTN;
        self.update_sci();
    }

    /// Whether the guest has enabled the power button event (it listens).
    pub fn power_button_enabled(&self) -> bool {
        self.enable & PWRBTN != 0
    }

    fn update_sci(&self) {
        (self.sci)(self.status & self.enable != 0);
    }

    fn reg(&mut self, offset: u64) -> Option<&mut u16> {
        match offset {
            0 => Some(&mut self.status),
            2 => Some(&mut self.enable),
            4 => Some(&mut self.control),
            _ => None,
        }
    }
}

impl BusDevice for PowerManagement {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = self.reg(offset & !1).map(|r| *r).unwrap_or(0);
        let bytes = value.to_le_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = bytes.get((offset as usize & 1) + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only aligned 16-bit (or wider, split) accesses are meaningful here.
        for (i, pair) in data.chunks(2).enumerate() {
            let value = u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            let off = offset + 2 * i as u64;
            match off {
                0 => self.status &= !value, // write 1 to clear
                2 => self.enable = value,
                4 => {
                    self.control = value & !SLP_EN;
                    if value & SLP_EN != 0 {
                        let typ = (value >> 10) & 7;
                        if typ == S5_SLP_TYP {
                            log::info!("guest powered off (ACPI S5)");
                            self.exit.exit(GuestExit::PowerOff);
                        } else {
                            log::warn!("guest asked for sleep state {typ}; only S5 is supported");
                        }
                    }
                }
                _ => {}
            }
        }
        self.update_sci();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn pm() -> (
        PowerManagement,
        Arc<Mutex<Vec<bool>>>,
        std::sync::mpsc::Receiver<GuestExit>,
    ) {
        let lines = Arc::new(Mutex::new(vec![]));
        let l = lines.clone();
        let (exit, rx) = ExitSignal::new();
        (
            PowerManagement::new(Box::new(move |v| l.lock().unwrap().push(v)), exit),
            lines,
            rx,
        )
    }

    #[test]
    fn s5_write_powers_off() {
        let (mut p, _, rx) = pm();
        p.write(4, &((S5_SLP_TYP << 10) | SLP_EN).to_le_bytes());
        assert_eq!(rx.try_recv().unwrap(), GuestExit::PowerOff);
    }

    #[test]
    fn power_button_raises_sci_only_when_enabled_and_clears() {
        let (mut p, lines, _rx) = pm();
        p.press_power_button();
        assert_eq!(lines.lock().unwrap().last(), Some(&false));
        p.write(2, &PWRBTN.to_le_bytes());
        assert_eq!(lines.lock().unwrap().last(), Some(&true));
        let mut s = [0u8; 2];
        p.read(0, &mut s);
        assert_eq!(u16::from_le_bytes(s) & PWRBTN, PWRBTN);
        p.write(0, &PWRBTN.to_le_bytes());
        assert_eq!(lines.lock().unwrap().last(), Some(&false));
    }
}
