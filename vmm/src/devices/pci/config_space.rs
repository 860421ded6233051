//! A PCI function's configuration space: the type-0 header, the capability chain, and
//! BAR0 emulation (size probing and moves).

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

    pub(super) fn read(&self, off: usize, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            *d = self.bytes.get(off + i).copied().unwrap_or(0xff);
        }
    }

    pub(super) fn write(&mut self, off: usize, data: &[u8]) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
