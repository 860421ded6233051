//! The check a cloud disk image passes before it is stored: its kernel is on an ext4
//! filesystem (GPT partition, MBR partition or the whole disk) under `/boot` (or at
//! the root of a separate boot partition), which is what the vmm boots directly.
//! Firmware boot (a kernel only the image's own bootloader can find) is later work.
//!
//! The disk is hostile input read in the importing process (init, for a manifest's
//! image): partition tables are read with checked arithmetic and capped entry counts,
//! the filesystem by `ext4-view` (safe Rust, reads on demand), a directory listing is
//! cut at [`MAX_DIR_ENTRIES`], and a panic in the reader is caught and reported as a
//! refusal.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ext4_view::{Ext4, Ext4Read};
use uuid::Uuid;

use crate::error::StoreError;

/// Directory entries looked at, at most, in one directory.
pub const MAX_DIR_ENTRIES: usize = 4096;
/// GPT entries looked at, at most.
const MAX_GPT_ENTRIES: u32 = 256;
const SECTOR: u64 = 512;

/// Reads the ext4 filesystem at `offset` of the disk.
struct AtOffset {
    disk: File,
    offset: u64,
}

impl Ext4Read for AtOffset {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let at = self.offset.checked_add(start).ok_or("offset overflows")?;
        self.disk.read_exact_at(dst, at)?;
        Ok(())
    }
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from(le32(b, off)) | (u64::from(le32(b, off + 4)) << 32)
}

/// Byte offsets where a filesystem may start: GPT or MBR partitions, then the disk.
fn starts(disk: &File) -> Vec<u64> {
    let mut out = Vec::new();
    let mut mbr = [0u8; 512];
    if disk.read_exact_at(&mut mbr, 0).is_ok() && mbr[510..] == [0x55, 0xaa] {
        let types: Vec<u8> = (0..4).map(|i| mbr[446 + i * 16 + 4]).collect();
        if types.contains(&0xee) {
            out.extend(gpt_starts(disk));
        } else {
            for i in 0..4 {
                let e = &mbr[446 + i * 16..462 + i * 16];
                if !matches!(e[4], 0 | 0x05 | 0x0f) {
                    out.push(u64::from(le32(e, 8)) * SECTOR);
                }
            }
        }
    }
    out.push(0);
    out
}

fn gpt_starts(disk: &File) -> Vec<u64> {
    let mut hdr = [0u8; 92];
    if disk.read_exact_at(&mut hdr, SECTOR).is_err() || &hdr[..8] != b"EFI PART" {
        return vec![];
    }
    let count = le32(&hdr, 80).min(MAX_GPT_ENTRIES) as usize;
    let size = le32(&hdr, 84).clamp(128, 4096) as usize;
    let mut table = vec![0u8; count * size];
    let read = le64(&hdr, 72)
        .checked_mul(SECTOR)
        .is_some_and(|at| disk.read_exact_at(&mut table, at).is_ok());
    if !read {
        return vec![];
    }
    table
        .chunks_exact(size)
        .filter(|e| e[..16].iter().any(|&b| b != 0))
        .filter_map(|e| le64(e, 32).checked_mul(SECTOR))
        .collect()
}

fn is_ext4(disk: &File, offset: u64) -> bool {
    let mut magic = [0u8; 2];
    offset
        .checked_add(1024 + 56)
        .is_some_and(|at| disk.read_exact_at(&mut magic, at).is_ok())
        && magic == [0x53, 0xef]
}

/// Why an ext4 filesystem on the disk could not be looked into.
#[derive(Debug, thiserror::Error)]
enum LookError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Ext4(#[from] ext4_view::Ext4Error),
}

/// Whether the ext4 filesystem at `offset` has a `vmlinuz*` in `/boot` or `/`.
fn has_kernel(disk: &File, offset: u64) -> Result<bool, LookError> {
    let f = disk.try_clone()?;
    let fs = Ext4::load(Box::new(AtOffset { disk: f, offset }))?;
    for dir in ["/boot", "/"] {
        let Ok(entries) = fs.read_dir(dir) else {
            continue;
        };
        let found = entries
            .take(MAX_DIR_ENTRIES)
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .as_str()
                    .is_ok_and(|n| n.starts_with("vmlinuz"))
            });
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Refuses the raw disk `disk` unless an ext4 filesystem on it has its kernel in
/// `/boot`; the message says what was looked at.
pub fn require_boot_kernel(disk: &Path, uuid: Uuid) -> Result<(), StoreError> {
    let f = File::open(disk).map_err(StoreError::io(disk))?;
    let mut looked = Vec::new();
    for offset in starts(&f) {
        if !is_ext4(&f, offset) {
            continue;
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| has_kernel(&f, offset)));
        match r {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => looked.push(format!("ext4 at byte {offset}: no /boot/vmlinuz*")),
            Ok(Err(e)) => looked.push(format!("ext4 at byte {offset}: {e}")),
            Err(_) => looked.push(format!("ext4 at byte {offset}: unreadable")),
        }
    }
    let seen = if looked.is_empty() {
        "no ext4 filesystem (GPT, MBR or whole disk)".to_string()
    } else {
        looked.join("; ")
    };
    Err(StoreError::Unpack {
        uuid,
        reason: format!(
            "{}: no kernel on an ext4 /boot ({seen}); only disks whose kernel is in an ext4 /boot are imported (firmware boot is not supported yet)",
            disk.display()
        ),
    })
}
