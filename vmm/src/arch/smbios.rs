//! SMBIOS 2.8 tables, as SmartOS's bhyve gives its guests: a BIOS (type 0) and a
//! System (type 1) structure saying `Joyent` / `SmartDC HVM` with the instance UUID.
//! Linux shows them in `/sys/class/dmi/id/` (`product_name`, `product_uuid`), and
//! cloud-init's SmartOS datasource recognises the platform by a product name starting
//! with `SmartDC`.
//!
//! Layout: the 31-byte `_SM_` entry point at [`SMBIOS_START`] (the kernel scans the
//! F-segment for it on 16-byte boundaries), the structure table right after it. Both
//! lie in the e820-reserved BIOS area.

use super::layout::SMBIOS_START;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The system manufacturer SmartOS reports.
pub const MANUFACTURER: &str = "Joyent";
/// The system product name SmartOS reports for HVM guests.
pub const PRODUCT: &str = "SmartDC HVM";

/// Size of the SMBIOS 2.x entry point.
const ENTRY_POINT_LEN: usize = 0x1f;
/// SMBIOS version 2.8: the UUID is stored with its first three fields little-endian.
const VERSION: (u8, u8) = (2, 8);

/// What the tables say about the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmbiosInfo {
    /// The system UUID (the instance UUID), big-endian as written in text.
    pub uuid: [u8; 16],
    /// The system serial number (SmartOS: the UUID as text).
    pub serial: String,
    /// The system version (the VMM's version).
    pub version: String,
}

impl SmbiosInfo {
    /// The tables of the instance `uuid`, serial number its text form.
    pub fn for_uuid(uuid: uuid::Uuid) -> Self {
        SmbiosInfo {
            uuid: *uuid.as_bytes(),
            serial: uuid.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// One structure: its formatted part (after the 4-byte header) and its strings.
fn structure(kind: u8, handle: u16, formatted: &[u8], strings: &[&str]) -> Vec<u8> {
    let mut s = vec![kind, (4 + formatted.len()) as u8];
    s.extend_from_slice(&handle.to_le_bytes());
    s.extend_from_slice(formatted);
    for text in strings {
        // Strings are NUL-terminated; a NUL inside one would end it early.
        s.extend(text.bytes().filter(|b| *b != 0));
        s.push(0);
    }
    if strings.is_empty() {
        s.push(0);
    }
    s.push(0);
    s
}

/// The UUID as SMBIOS 2.6+ stores it: time_low, time_mid, time_hi little-endian.
fn smbios_uuid(u: &[u8; 16]) -> [u8; 16] {
    let mut b = *u;
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// The structure table: type 0, type 1, type 127. Returns it and how many
/// structures it holds.
pub fn structures(info: &SmbiosInfo) -> (Vec<u8>, u16) {
    let mut bios = Vec::new();
    bios.push(1); // vendor: string 1
    bios.push(2); // BIOS version: string 2
    bios.extend_from_slice(&0xe800u16.to_le_bytes()); // start segment
    bios.push(3); // release date: string 3
    bios.push(0); // ROM size: 64 KiB
    bios.extend_from_slice(&(1u64 << 3).to_le_bytes()); // characteristics not supported
    bios.push(0); // extension byte 1
    bios.push(1 << 4); // extension byte 2: describes a virtual machine
    bios.extend_from_slice(&[0, 0, 0xff, 0xff]); // BIOS release, no embedded controller
    let t0 = structure(0, 0, &bios, &["skerry", &info.version, "01/01/2026"]);

    let mut system = Vec::new();
    system.extend_from_slice(&[1, 2, 3, 4]); // manufacturer, product, version, serial
    system.extend_from_slice(&smbios_uuid(&info.uuid));
    system.push(6); // wake-up type: power switch
    system.extend_from_slice(&[5, 6]); // SKU, family
    let t1 = structure(
        1,
        1,
        &system,
        &[
            MANUFACTURER,
            PRODUCT,
            &info.version,
            &info.serial,
            "001",
            "Virtual Machine",
        ],
    );
    let end = structure(127, 2, &[], &[]);
    ([t0, t1, end].concat(), 3)
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The `_SM_` entry point of a structure table of `len` bytes at `table_addr`,
/// holding `count` structures, the largest `max` bytes.
pub fn entry_point(table_addr: u32, len: u16, count: u16, max: u16) -> [u8; ENTRY_POINT_LEN] {
    let mut e = [0u8; ENTRY_POINT_LEN];
    e[0..4].copy_from_slice(b"_SM_");
    e[5] = ENTRY_POINT_LEN as u8;
    e[6] = VERSION.0;
    e[7] = VERSION.1;
    e[8..10].copy_from_slice(&max.to_le_bytes());
    e[16..21].copy_from_slice(b"_DMI_");
    e[22..24].copy_from_slice(&len.to_le_bytes());
    e[24..28].copy_from_slice(&table_addr.to_le_bytes());
    e[28..30].copy_from_slice(&count.to_le_bytes());
    e[30] = (VERSION.0 << 4) | VERSION.1; // BCD revision
    e[21] = checksum(&e[16..]);
    e[4] = checksum(&e);
    e
}

/// Writes the entry point at [`SMBIOS_START`] and the structure table after it.
pub fn write_tables(
    mem: &GuestMemoryMmap,
    info: &SmbiosInfo,
) -> Result<(), vm_memory::GuestMemoryError> {
    let (table, count) = structures(info);
    let table_addr = SMBIOS_START + 0x20;
    let max = max_structure(&table);
    let entry = entry_point(table_addr as u32, table.len() as u16, count, max);
    mem.write_slice(&table, GuestAddress(table_addr))?;
    mem.write_slice(&entry, GuestAddress(SMBIOS_START))
}

/// Walks a structure table: each structure's bytes, formatted part and strings.
fn walk(table: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= table.len() {
        let formatted = usize::from(table[at + 1]);
        let mut end = at + formatted;
        // The string set ends with two NULs.
        while end + 1 < table.len() && !(table[end] == 0 && table[end + 1] == 0) {
            end += 1;
        }
        out.push(&table[at..(end + 2).min(table.len())]);
        at = end + 2;
    }
    out
}

fn max_structure(table: &[u8]) -> u16 {
    walk(table).iter().map(|s| s.len()).max().unwrap_or(0) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SmbiosInfo {
        SmbiosInfo::for_uuid("9e2f3c8a-1b2c-4d3e-8f40-0123456789ab".parse().unwrap())
    }

    /// The strings of a structure, as Linux's dmi_string() reads them.
    fn strings(s: &[u8]) -> Vec<String> {
        let formatted = usize::from(s[1]);
        s[formatted..s.len() - 1]
            .split(|b| *b == 0)
            .filter(|x| !x.is_empty())
            .map(|x| String::from_utf8(x.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn entry_point_checksums_and_points_at_the_table() {
        let (table, count) = structures(&info());
        let e = entry_point(0xf0020, table.len() as u16, count, max_structure(&table));
        assert_eq!(&e[0..4], b"_SM_");
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(&e[16..21], b"_DMI_");
        assert_eq!(e[16..].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!((e[6], e[7]), (2, 8));
        assert_eq!(u16::from_le_bytes([e[22], e[23]]) as usize, table.len());
        assert_eq!(u32::from_le_bytes([e[24], e[25], e[26], e[27]]), 0xf0020);
        assert_eq!(u16::from_le_bytes([e[28], e[29]]), 3);
    }

    #[test]
    fn the_kernel_finds_the_entry_point_in_the_f_segment() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_tables(&mem, &info()).unwrap();
        // As dmi_scan_machine: every 16 bytes of 0xF0000..0x100000, "_SM_" with a
        // good checksum, then the table it names.
        let mut seg = vec![0u8; 0x10000];
        mem.read_slice(&mut seg, GuestAddress(0xf0000)).unwrap();
        let at = (0..seg.len())
            .step_by(16)
            .find(|&i| &seg[i..i + 4] == b"_SM_")
            .expect("no entry point");
        let e = &seg[at..at + 31];
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let addr = u32::from_le_bytes([e[24], e[25], e[26], e[27]]) as u64;
        let len = u16::from_le_bytes([e[22], e[23]]) as usize;
        let mut table = vec![0u8; len];
        mem.read_slice(&mut table, GuestAddress(addr)).unwrap();
        assert_eq!(table, structures(&info()).0);
    }

    #[test]
    fn structures_parse_back_as_linux_reads_them() {
        let (table, _) = structures(&info());
        let s = walk(&table);
        assert_eq!(s.iter().map(|x| x[0]).collect::<Vec<_>>(), vec![0, 1, 127]);
        assert_eq!(s.iter().map(|x| x.len()).sum::<usize>(), table.len());
        let system = s[1];
        assert_eq!(system[1], 0x1b, "type 1 of SMBIOS 2.4+ is 27 bytes");
        let text = strings(system);
        // Fields index the strings from 1.
        let field = |off: usize| text[usize::from(system[off]) - 1].clone();
        assert_eq!(field(4), "Joyent");
        assert_eq!(field(5), "SmartDC HVM");
        assert_eq!(field(7), "9e2f3c8a-1b2c-4d3e-8f40-0123456789ab");
        // dmi_decode_uuid for 2.6+: first three fields little-endian.
        assert_eq!(
            &system[8..24],
            &[
                0x8a, 0x3c, 0x2f, 0x9e, 0x2c, 0x1b, 0x3e, 0x4d, 0x8f, 0x40, 0x01, 0x23, 0x45, 0x67,
                0x89, 0xab
            ]
        );
        assert_eq!(s[0][1], 0x18);
        assert_eq!(strings(s[0])[0], "skerry");
        assert_eq!(s[2], &[127, 4, 2, 0, 0, 0]);
    }
}
