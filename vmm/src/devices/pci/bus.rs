//! PCI bus 0: configuration mechanism #1 (ports 0xcf8/0xcfc), a host bridge at 00.0,
//! and a dispatcher for the MMIO window where device BARs live.

use super::{ConfigSpace, PciDevice, SharedPciDevice};
use crate::arch::layout::PCI_MMIO_START;
use crate::devices::bus::lock;
use crate::devices::BusDevice;
use std::sync::{Arc, Mutex};

/// The host bridge at 00.0: tells the kernel there is a PCI bus here.
struct HostBridge(ConfigSpace);

impl PciDevice for HostBridge {
    fn config(&mut self) -> &mut ConfigSpace {
        &mut self.0
    }
    fn bar_read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _offset: u64, _data: &[u8]) {}
}

/// Bus 0's devices by slot.
#[derive(Clone, Default)]
pub struct PciBus {
    slots: Arc<Mutex<Vec<SharedPciDevice>>>,
}

impl PciBus {
    /// A bus with the host bridge in slot 0.
    pub fn new() -> Self {
        let bus = PciBus::default();
        // Intel vendor id and host-bridge class: what the kernel's conf1 sanity check
        // looks for.
        let bridge = HostBridge(ConfigSpace::new(0x8086, 0x0d57, 0x06_00_00, 0, None));
        bus.add(Arc::new(Mutex::new(bridge)));
        bus
    }

    /// Plugs `dev` into the next free slot; returns the slot.
    pub fn add(&self, dev: SharedPciDevice) -> usize {
        let mut slots = lock(&self.slots);
        slots.push(dev);
        slots.len() - 1
    }

    /// The slot the next [`PciBus::add`] will use.
    pub fn next_slot(&self) -> usize {
        lock(&self.slots).len()
    }

    /// BAR0 address for the device in `slot`: 64 KiB apart in the MMIO window.
    pub fn bar_address(slot: usize) -> u32 {
        (PCI_MMIO_START + slot as u64 * 0x1_0000) as u32
    }

    fn device(&self, slot: usize) -> Option<SharedPciDevice> {
        lock(&self.slots).get(slot).cloned()
    }
}

/// Ports 0xcf8..0xcff: the address register and the data window.
pub struct PciConfigIo {
    bus: PciBus,
    address: u32,
}

impl PciConfigIo {
    /// Config access to `bus`.
    pub fn new(bus: PciBus) -> Self {
        PciConfigIo { bus, address: 0 }
    }

    /// (slot, register offset) the address register selects, if it targets a
    /// function that exists (bus 0, function 0, enable bit set).
    fn target(&self) -> Option<(SharedPciDevice, usize)> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        let slot = (self.address >> 11) & 0x1f;
        let func = (self.address >> 8) & 0x7;
        if bus != 0 || func != 0 {
            return None;
        }
        Some((
            self.bus.device(slot as usize)?,
            (self.address & 0xfc) as usize,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < 4 {
            let bytes = self.address.to_le_bytes();
            for (i, d) in data.iter_mut().enumerate() {
                *d = bytes.get(offset as usize + i).copied().unwrap_or(0);
            }
            return;
        }
        match self.target() {
            Some((dev, reg)) => lock(&dev).config().read(reg + (offset as usize - 4), data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset < 4 {
            let mut bytes = self.address.to_le_bytes();
            for (i, v) in data.iter().enumerate() {
                if let Some(b) = bytes.get_mut(offset as usize + i) {
                    *b = *v;
                }
            }
            self.address = u32::from_le_bytes(bytes);
            return;
        }
        if let Some((dev, reg)) = self.target() {
            let off = reg + (offset as usize - 4);
            let mut dev = lock(&dev);
            dev.config().write(off, data);
            dev.config_written(off);
        }
    }
}

/// The MMIO window: forwards each access to the device whose BAR0 covers it.
pub struct PciMmio {
    bus: PciBus,
}

impl PciMmio {
    /// The MMIO window of `bus`.
    pub fn new(bus: PciBus) -> Self {
        PciMmio { bus }
    }

    fn find(&self, addr: u64) -> Option<(SharedPciDevice, u64)> {
        let slots = lock(&self.bus.slots).clone();
        slots.into_iter().find_map(|dev| {
            let (base, size) = {
                let mut d = lock(&dev);
                if !d.config().memory_enabled() {
                    return None;
                }
                d.config().bar0()
            };
            (size != 0 && addr >= base && addr < base + size).then(|| (dev, addr - base))
        })
    }
}

impl BusDevice for PciMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.find(PCI_MMIO_START + offset) {
            Some((dev, off)) => lock(&dev).bar_read(off, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((dev, off)) = self.find(PCI_MMIO_START + offset) {
            lock(&dev).bar_write(off, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_read(io: &mut PciConfigIo, slot: u32, reg: u32) -> u32 {
        io.write(0, &(0x8000_0000 | (slot << 11) | reg).to_le_bytes());
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_answers_and_empty_slots_float() {
        let mut io = PciConfigIo::new(PciBus::new());
        assert_eq!(cfg_read(&mut io, 0, 0), 0x0d57_8086);
        assert_eq!(cfg_read(&mut io, 0, 8) >> 8, 0x06_00_00);
        assert_eq!(cfg_read(&mut io, 5, 0), 0xffff_ffff);
        // The address register reads back (the kernel's conf1 probe).
        let mut a = [0u8; 4];
        io.read(0, &mut a);
        assert_eq!(u32::from_le_bytes(a), 0x8000_2800);
    }
}
