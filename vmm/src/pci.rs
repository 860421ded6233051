//! PCI bus 0: configuration mechanism #1 (ports 0xcf8/0xcfc), a host bridge at 00.0,
//! and a dispatcher for the MMIO window where device BARs live. Devices have one
//! 32-bit memory BAR (BAR0); the guest may move it within the window.

use crate::arch::layout::{PCI_MMIO_SIZE, PCI_MMIO_START};
use crate::config::VmConfig;
use crate::devices::bus::lock;
use crate::devices::BusDevice;
use crate::runner::RunError;
use crate::vm::Vm;
use std::sync::{Arc, Mutex};

/// A PCI function as the bus sees it.
pub trait PciDevice: Send {
    /// The 256-byte configuration space.
    fn config(&mut self) -> &mut ConfigSpace;
    /// Called after a configuration write (BAR moves, MSI-X enable...).
    fn config_written(&mut self, _offset: usize) {}
    /// A guest read inside BAR0.
    fn bar_read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest write inside BAR0.
    fn bar_write(&mut self, offset: u64, data: &[u8]);
}

/// Shared handle to a device on the bus.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// A type-0 configuration header plus capabilities, with a mask of the bits the guest
/// may write. BAR0 is emulated here (size probing and moves).
pub struct ConfigSpace {
    bytes: [u8; 256],
    writable: [u8; 256],
    bar0_size: u32,
}

/// Offset of BAR0.
pub const BAR0: usize = 0x10;
/// Offset of the first capability.
pub const FIRST_CAP: usize = 0x40;

impl ConfigSpace {
    /// A header for `vendor:device`, `class` (class<<16 | subclass<<8 | prog-if), with a
    /// 32-bit memory BAR0 of `bar0_size` (a power of two) at `bar0_addr`.
    pub fn new(
        vendor: u16,
        device: u16,
        class: u32,
        revision: u8,
        bar0: Option<(u32, u32)>,
    ) -> Self {
        let mut c = ConfigSpace {
            bytes: [0; 256],
            writable: [0; 256],
            bar0_size: 0,
        };
        c.set16(0x00, vendor);
        c.set16(0x02, device);
        c.set32(0x08, (class << 8) | u32::from(revision));
        // Command: I/O, memory, bus master, INTx disable are the guest's to set.
        c.writable[0x04] = 0x07;
        c.writable[0x05] = 0x04;
        c.writable[0x3c] = 0xff; // interrupt line (firmware scratch)
        if let Some((addr, size)) = bar0 {
            c.bar0_size = size;
            c.set32(BAR0, addr);
        }
        c
    }

    /// Writes a 16-bit value (read-only to the guest unless made writable).
    pub fn set16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Writes a 32-bit value.
    pub fn set32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Reads a 16-bit value.
    pub fn get16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]])
    }

    /// Reads a 32-bit value.
    pub fn get32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.bytes[off..off + 4].try_into().unwrap_or([0; 4]))
    }

    /// Lets the guest write the bits of `mask` at `off`.
    pub fn make_writable(&mut self, off: usize, mask: &[u8]) {
        self.writable[off..off + mask.len()].copy_from_slice(mask);
    }

    /// Appends a capability (`bytes[0]` is the id; `bytes[1]`, the next pointer, is
    /// filled in) at `off`, chaining it after the previous one.
    pub fn add_capability(&mut self, off: usize, bytes: &[u8]) {
        let mut prev = 0x34;
        while self.bytes[prev] != 0 {
            prev = self.bytes[prev] as usize + 1;
        }
        self.bytes[prev] = off as u8;
        self.bytes[off..off + bytes.len()].copy_from_slice(bytes);
        self.bytes[off + 1] = 0;
        // Status: capabilities list present.
        self.bytes[0x06] |= 0x10;
    }

    /// The current BAR0 address and size.
    pub fn bar0(&self) -> (u64, u64) {
        (
            u64::from(self.get32(BAR0) & !0xf),
            u64::from(self.bar0_size),
        )
    }

    /// Whether the guest enabled memory decoding.
    pub fn memory_enabled(&self) -> bool {
        self.bytes[0x04] & 0x2 != 0
    }

    fn read(&self, off: usize, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            *d = self.bytes.get(off + i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, off: usize, data: &[u8]) {
        for (i, v) in data.iter().enumerate() {
            let o = off + i;
            if o >= 256 {
                break;
            }
            if (BAR0..BAR0 + 4).contains(&o) && self.bar0_size != 0 {
                // Address bits only: size probing reads back the size mask.
                let mask = (!(self.bar0_size - 1)).to_le_bytes()[o - BAR0];
                self.bytes[o] = (self.bytes[o] & !mask) | (v & mask);
                continue;
            }
            let w = self.writable[o];
            self.bytes[o] = (self.bytes[o] & !w) | (v & w);
        }
    }
}

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
            (size != 0 && addr >= base && addr < base + size).then_some((dev, addr - base))
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

/// Puts the PCI bus on `vm` and attaches the configured virtio devices to it.
pub fn attach_devices(vm: &mut Vm, config: &VmConfig) -> Result<(), RunError> {
    let bus = PciBus::new();
    vm.add_pio(
        Arc::new(Mutex::new(PciConfigIo::new(bus.clone()))),
        0xcf8,
        8,
    )?;
    vm.mmio
        .insert(
            Arc::new(Mutex::new(PciMmio { bus: bus.clone() })),
            PCI_MMIO_START,
            PCI_MMIO_SIZE,
        )
        .map_err(crate::vm::VmError::from)?;
    for disk in &config.disks {
        crate::virtio::block::attach(vm, &bus, disk)?;
    }
    for net in &config.nets {
        crate::virtio::net::attach(vm, &bus, net)?;
    }
    Ok(())
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

    #[test]
    fn bar_sizing_and_moving() {
        let mut c = ConfigSpace::new(1, 2, 0, 0, Some((0xc001_0000, 0x8000)));
        c.write(BAR0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.get32(BAR0), 0xffff_8000);
        c.write(BAR0, &0xc002_0000u32.to_le_bytes());
        assert_eq!(c.bar0(), (0xc002_0000, 0x8000));
        // Read-only fields stay put.
        c.write(0, &[0xaa, 0xbb]);
        assert_eq!(c.get16(0), 1);
    }

    #[test]
    fn capabilities_chain() {
        let mut c = ConfigSpace::new(1, 2, 0, 0, None);
        c.add_capability(0x40, &[0x11, 0, 1, 2]);
        c.add_capability(0x50, &[0x09, 0, 3]);
        assert_eq!(c.bytes[0x34], 0x40);
        assert_eq!(c.bytes[0x41], 0x50);
        assert_eq!(c.bytes[0x51], 0);
        assert_ne!(c.bytes[0x06] & 0x10, 0);
    }
}
