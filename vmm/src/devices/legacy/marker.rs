//! The boot marker port: a guest writes any byte to it (`/dev/port` from a shell, or an
//! `outb`) and the VMM logs how long after its own start that happened, so boot time
//! can be measured from the guest's side (like Firecracker's boot timer device).
//! A guest may write it in a loop: it keeps only the first time of each value (256 at
//! most) and its log lines are rate-limited like every guest-triggered line.

use crate::devices::BusDevice;
use std::time::Instant;

/// I/O port of the marker.
pub const MARKER_PORT: u16 = 0x440;

/// Records when the guest first reached each marker value.
pub struct BootMarker {
    started: Instant,
    /// (value, microseconds since VMM start) of each value's first write, in arrival
    /// order.
    pub hits: Vec<(u8, u128)>,
}

impl BootMarker {
    /// A marker counting from `started` (the VMM's process start).
    pub fn new(started: Instant) -> Self {
        BootMarker {
            started,
            hits: Vec::new(),
        }
    }
}

impl BusDevice for BootMarker {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let value = data.first().copied().unwrap_or(0);
        let us = self.started.elapsed().as_micros();
        log::info!("boot marker {value} at {}.{:03} ms", us / 1000, us % 1000);
        crate::logger::plain(format_args!("vmm: boot marker {value} at {us} us"));
        if !self.hits.iter().any(|(v, _)| *v == value) {
            self.hits.push((value, us));
        }
    }
}
