//! Minimal ACPI tables: RSDP -> XSDT -> {FADT -> (DSDT, FACS), MADT}.
//!
//! They give the guest what a stock Debian kernel needs and nothing more: the CPUs and
//! the IOAPIC (MADT), a PCI host bridge so the kernel scans bus 0 (DSDT `PNP0A03`), a
//! power-off path (`\_S5_` + PM1a control block) and a power button (PM1a event block
//! raising the SCI), which is how the control socket asks a guest to shut down.

use super::layout::{ACPI_START, IOAPIC_ADDR, LAPIC_ADDR, MMIO_HOLE_START};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// I/O port of the PM1a event block (status u16, enable u16).
pub const PM1A_EVT_PORT: u16 = 0x600;
/// I/O port of the PM1a control block (u16).
pub const PM1A_CNT_PORT: u16 = 0x604;
/// The SCI's interrupt line.
pub const SCI_IRQ: u32 = 9;
/// The `SLP_TYP` value our `\_S5_` object announces.
pub const S5_SLP_TYP: u16 = 5;
/// I/O port the FADT names as the reset register (the i8042 command port).
pub const RESET_PORT: u16 = 0x64;
/// Value written to [`RESET_PORT`] to reset.
pub const RESET_VALUE: u8 = 0xfe;

const OEM_ID: &[u8; 6] = b"SKERRY";
const OEM_TABLE_ID: &[u8; 8] = b"SKERRYVM";

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_sub(*b))
}

/// A system description table: the 36-byte header, then `body`; length and checksum
/// are filled in here.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"SKRY"); // creator id
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// A generic address structure for an I/O port block.
fn gas_io(port: u16, bit_width: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O space
    g[1] = bit_width;
    g[3] = if bit_width >= 16 { 2 } else { 1 }; // access size: word / byte
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

/// An AML PkgLength for `content` bytes that follow it (the length counts itself).
fn pkg_length(content: usize) -> Vec<u8> {
    if content + 1 < 0x40 {
        vec![(content + 1) as u8]
    } else {
        let total = content + 2;
        assert!(total < 0x1000, "AML package too large");
        vec![0x40 | (total & 0xf) as u8, (total >> 4) as u8]
    }
}

/// The host bridge's `_CRS`: bus numbers 0-255, the config ports, all other I/O
/// ports, and the 32-bit MMIO hole below the IOAPIC (where our BARs live).
fn pci_crs() -> Vec<u8> {
    let word = |kind: u8, flags: u8, min: u16, max: u16| -> Vec<u8> {
        let mut d = vec![0x88, 0x0d, 0x00, kind, 0x0c, flags];
        for v in [0u16, min, max, 0, max.wrapping_sub(min).wrapping_add(1)] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d
    };
    let mut r = word(2, 0, 0, 0xff); // bus numbers
    r.extend_from_slice(&[0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08]); // IO 0xcf8..0xcff
    r.extend(word(1, 0x03, 0x0000, 0x0cf7));
    r.extend(word(1, 0x03, 0x0d00, 0xffff));
    let (min, max) = (MMIO_HOLE_START as u32, (IOAPIC_ADDR - 1) as u32);
    r.extend_from_slice(&[0x87, 0x17, 0x00, 0x00, 0x0c, 0x01]);
    for v in [0u32, min, max, 0, max - min + 1] {
        r.extend_from_slice(&v.to_le_bytes());
    }
    r.extend_from_slice(&[0x79, 0x00]); // end tag
    r
}

/// AML, hand-assembled (the kernel's ACPI interpreter is the only consumer):
/// `Scope(\_SB_) { Device(PCI0) { _HID PNP0A03, _UID 0, _CRS } }` and
/// `Name(\_S5_, Package() { 5, 5, 0, 0 })`.
fn dsdt_aml() -> Vec<u8> {
    let crs = pci_crs();
    let mut buffer = vec![0x0a, crs.len() as u8]; // BufferSize as a BytePrefix
    buffer.extend_from_slice(&crs);
    let mut device_body: Vec<u8> = [
        &b"PCI0"[..],
        &[0x08], // NameOp
        b"_HID",
        &[0x0c, 0x41, 0xd0, 0x0a, 0x03], // DWordPrefix EISAID("PNP0A03")
        &[0x08],
        b"_UID",
        &[0x00], // ZeroOp
        &[0x08],
        b"_CRS",
        &[0x11], // BufferOp
    ]
    .concat();
    device_body.extend(pkg_length(buffer.len()));
    device_body.extend_from_slice(&buffer);
    let mut device = vec![0x5b, 0x82]; // DeviceOp
    device.extend(pkg_length(device_body.len()));
    device.extend_from_slice(&device_body);
    let mut scope_body = b"_SB_".to_vec();
    scope_body.extend_from_slice(&device);
    let mut aml = vec![0x10]; // ScopeOp
    aml.extend(pkg_length(scope_body.len()));
    aml.extend_from_slice(&scope_body);
    let typ = S5_SLP_TYP as u8;
    aml.extend_from_slice(&[0x08]);
    aml.extend_from_slice(b"_S5_");
    aml.extend_from_slice(&[0x12, 0x08, 0x04, 0x0a, typ, 0x0a, typ, 0x00, 0x00]);
    aml
}

fn fadt(dsdt_addr: u64, facs_addr: u64) -> Vec<u8> {
    let mut b = vec![0u8; 276 - 36];
    let mut put = |offset: usize, bytes: &[u8]| {
        b[offset - 36..offset - 36 + bytes.len()].copy_from_slice(bytes);
    };
    put(36, &(facs_addr as u32).to_le_bytes());
    put(40, &(dsdt_addr as u32).to_le_bytes());
    put(46, &(SCI_IRQ as u16).to_le_bytes());
    // SMI_CMD = 0: the platform is always in ACPI mode.
    put(56, &u32::from(PM1A_EVT_PORT).to_le_bytes());
    put(64, &u32::from(PM1A_CNT_PORT).to_le_bytes());
    put(88, &[4]); // PM1_EVT_LEN
    put(89, &[2]); // PM1_CNT_LEN
                   // IAPC_BOOT_ARCH: no VGA (bit 2), no CMOS RTC (bit 5).
    put(109, &((1u16 << 2) | (1 << 5)).to_le_bytes());
    // Flags: WBINVD, PROC_C1, SLP_BUTTON (no sleep button), RESET_REG_SUP.
    put(
        112,
        &((1u32 << 0) | (1 << 2) | (1 << 5) | (1 << 10)).to_le_bytes(),
    );
    put(116, &gas_io(RESET_PORT, 8));
    put(128, &[RESET_VALUE]);
    put(131, &[1]); // FADT minor version (6.1)
    put(132, &facs_addr.to_le_bytes());
    put(140, &dsdt_addr.to_le_bytes());
    put(148, &gas_io(PM1A_EVT_PORT, 32));
    put(172, &gas_io(PM1A_CNT_PORT, 16));
    sdt(b"FACP", 6, &b)
}

fn facs() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&64u32.to_le_bytes());
    f[32] = 2; // version
    f
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: there are 8259s too
    for id in 0..vcpus {
        b.extend_from_slice(&[0, 8, id, id]);
        b.extend_from_slice(&1u32.to_le_bytes()); // enabled
    }
    b.extend_from_slice(&[1, 12, 0, 0]); // IOAPIC id 0
    b.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // GSI base
                                              // The SCI is level-triggered, active high on KVM's IOAPIC.
    b.extend_from_slice(&[2, 10, 0, SCI_IRQ as u8]);
    b.extend_from_slice(&SCI_IRQ.to_le_bytes());
    b.extend_from_slice(&0x000du16.to_le_bytes());
    sdt(b"APIC", 6, &b)
}

/// Builds the tables for `vcpus` CPUs and writes them at [`ACPI_START`]; returns the
/// RSDP address for `boot_params.acpi_rsdp_addr`.
pub fn write_tables(mem: &GuestMemoryMmap, vcpus: u8) -> Result<u64, vm_memory::GuestMemoryError> {
    let rsdp_addr = ACPI_START;
    let mut next = ACPI_START + 64;
    let mut place = |bytes: &[u8], align: u64| -> Result<u64, vm_memory::GuestMemoryError> {
        let addr = next.div_ceil(align) * align;
        mem.write_slice(bytes, GuestAddress(addr))?;
        next = addr + bytes.len() as u64;
        Ok(addr)
    };
    let dsdt_addr = place(&sdt(b"DSDT", 2, &dsdt_aml()), 8)?;
    let facs_addr = place(&facs(), 64)?;
    let fadt_addr = place(&fadt(dsdt_addr, facs_addr), 8)?;
    let madt_addr = place(&madt(vcpus), 8)?;
    let xsdt_body: Vec<u8> = [fadt_addr, madt_addr]
        .iter()
        .flat_map(|a| a.to_le_bytes())
        .collect();
    let xsdt_addr = place(&sdt(b"XSDT", 1, &xsdt_body), 8)?;

    let mut rsdp = vec![0u8; 36];
    rsdp[0..8].copy_from_slice(b"RSD PTR ");
    rsdp[9..15].copy_from_slice(OEM_ID);
    rsdp[15] = 2; // revision: ACPI 2.0+, XSDT
    rsdp[20..24].copy_from_slice(&36u32.to_le_bytes());
    rsdp[24..32].copy_from_slice(&xsdt_addr.to_le_bytes());
    rsdp[8] = checksum(&rsdp[0..20]);
    rsdp[32] = checksum(&rsdp);
    mem.write_slice(&rsdp, GuestAddress(rsdp_addr))?;
    Ok(rsdp_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn tables_checksum_to_zero() {
        for t in [fadt(0x1000, 0x2000), madt(4), sdt(b"DSDT", 2, &dsdt_aml())] {
            assert_eq!(sum(&t), 0, "{:?}", &t[0..4]);
            assert_eq!(
                u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize,
                t.len()
            );
        }
        assert_eq!(fadt(0, 0).len(), 276);
    }

    #[test]
    fn pkg_lengths_encode_both_forms() {
        assert_eq!(pkg_length(10), vec![11]);
        assert_eq!(pkg_length(62), vec![63]);
        // 0x58 bytes total: low nibble in byte 0, the rest in byte 1.
        assert_eq!(pkg_length(0x56), vec![0x48, 0x05]);
    }

    #[test]
    fn crs_ends_with_an_end_tag() {
        let crs = pci_crs();
        assert_eq!(crs.len(), 84);
        assert_eq!(&crs[crs.len() - 2..], &[0x79, 0x00]);
    }

    #[test]
    fn madt_lists_every_cpu() {
        let t = madt(3);
        let lapics = t[44..].chunks(1).count();
        assert!(lapics > 0);
        // 3 LAPIC entries (8 bytes) + IOAPIC (12) + one override (10).
        assert_eq!(t.len(), 44 + 3 * 8 + 12 + 10);
    }

    #[test]
    fn rsdp_is_found_and_valid() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let addr = write_tables(&mem, 1).unwrap();
        let mut rsdp = [0u8; 36];
        mem.read_slice(&mut rsdp, GuestAddress(addr)).unwrap();
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[0..20]), 0);
        assert_eq!(sum(&rsdp), 0);
        let xsdt = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(xsdt)).unwrap();
        assert_eq!(&sig, b"XSDT");
    }
}
