//! The reader's side: partition tables and ext4 on an untrusted disk, the kernel and
//! initrd streamed out as [`frames`](super::frames). It runs in the sandboxed child;
//! it never allocates by a size the disk declares, and every offset it computes from
//! disk fields is checked.
//!
//! `ext4-view` already guards its own parsing (checked arithmetic, checksums, at most
//! 40 symlinks per lookup, names without `/` or NUL). It does not guard the size an
//! inode declares (`Ext4::read` allocates it whole), the length of a directory, nor
//! the number of block groups a superblock declares (`Ext4::load` allocates a
//! descriptor for each up front: 3 GB for a 2 KB disk the fuzzer made), so this
//! module reads files in chunks up to the caps, looks at a bounded number of
//! directory entries and refuses more than [`MAX_BLOCK_GROUPS`] block groups.

use super::frames::{self, Tag};
use super::{pick_kernel, Limits, Partition, MAX_BLOCK_GROUPS, MAX_DIR_ENTRIES};
use ext4_view::{Ext4, Ext4Read};
use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

/// Random-access reads from a disk image: a file, or bytes in memory (tests, fuzzing).
pub trait Disk: Send + Sync + 'static {
    /// Fills `buf` from byte `offset`, or fails (short disks fail, never wrap).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl Disk for File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl Disk for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).ok();
        let src = start
            .and_then(|s| Some(s..s.checked_add(buf.len())?))
            .and_then(|r| self.get(r))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

struct OffsetReader {
    disk: Arc<dyn Disk>,
    offset: u64,
}

impl Ext4Read for OffsetReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let at = self
            .offset
            .checked_add(start_byte)
            .ok_or("read past the end of a 64-bit disk")?;
        self.disk.read_at(at, dst)?;
        Ok(())
    }
}

fn read_vec(disk: &dyn Disk, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    disk.read_at(offset, &mut buf)?;
    Ok(buf)
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap_or_default())
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or_default())
}

const SECTOR: u64 = 512;

/// Candidate filesystem locations: GPT entries, MBR entries, or the whole disk. An
/// entry whose offset does not fit in 64 bits is skipped; an unreadable GPT leaves
/// the whole disk.
pub fn partitions(disk: &dyn Disk) -> io::Result<Vec<Partition>> {
    let mbr = read_vec(disk, 0, 512)?;
    let mut parts = Vec::new();
    if mbr[510] == 0x55 && mbr[511] == 0xaa {
        let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[446 + i * 16..462 + i * 16]).collect();
        if entries.iter().any(|e| e[4] == 0xee) {
            parts.extend(gpt_partitions(disk));
        } else {
            for (i, e) in entries.iter().enumerate() {
                if e[4] != 0 && e[4] != 0x05 && e[4] != 0x0f {
                    parts.push(Partition {
                        number: i as u32 + 1,
                        // 32-bit LBA times 512 always fits.
                        offset: u64::from(le32(e, 8)) * SECTOR,
                    });
                }
            }
        }
    }
    parts.push(Partition {
        number: 0,
        offset: 0,
    });
    Ok(parts)
}

fn gpt_partitions(disk: &dyn Disk) -> Vec<Partition> {
    let Ok(hdr) = read_vec(disk, SECTOR, 92) else {
        return vec![];
    };
    if &hdr[0..8] != b"EFI PART" {
        return vec![];
    }
    let count = le32(&hdr, 80).min(256) as usize;
    let size = le32(&hdr, 84).clamp(128, 4096) as usize;
    let Some(table) = le64(&hdr, 72)
        .checked_mul(SECTOR)
        .and_then(|at| read_vec(disk, at, count * size).ok())
    else {
        return vec![];
    };
    table
        .chunks_exact(size)
        .enumerate()
        .filter(|(_, e)| e[0..16].iter().any(|b| *b != 0))
        .filter_map(|(i, e)| {
            Some(Partition {
                number: i as u32 + 1,
                offset: le64(e, 32).checked_mul(SECTOR)?,
            })
        })
        .collect()
}

fn is_ext4(disk: &dyn Disk, offset: u64) -> bool {
    let mut magic = [0u8; 2];
    offset
        .checked_add(1024 + 56)
        .is_some_and(|at| disk.read_at(at, &mut magic).is_ok())
        && magic == [0x53, 0xef]
}

/// How many block groups the superblock at `offset` declares, counted as
/// `Ext4::load` counts them (it allocates a descriptor for each before reading one);
/// `None` when the superblock cannot be read or the count makes no sense, which
/// `Ext4::load` then reports itself.
fn block_groups(disk: &dyn Disk, offset: u64) -> Option<u64> {
    let sb = read_vec(disk, offset.checked_add(1024)?, 1024).ok()?;
    let blocks = u64::from(le32(&sb, 0x4)) | (u64::from(le32(&sb, 0x150)) << 32);
    let data_blocks = blocks.checked_sub(u64::from(le32(&sb, 0x14)))?;
    let per_group = std::num::NonZeroU64::new(u64::from(le32(&sb, 0x20)))?;
    Some(data_blocks.div_ceil(per_group.get()))
}

/// Why a disk yields no kernel: the words the sandboxed reader sends its parent in a
/// [`Tag::NoKernel`] frame.
#[derive(Debug)]
struct NoKernel(String);

/// Streams file `path` of `fs` as `tag` frames, refusing one larger than `limit` (by
/// its declared size, and again while reading).
fn stream_file(
    fs: &Ext4,
    path: &str,
    tag: Tag,
    limit: u64,
    out: &mut dyn Write,
) -> io::Result<Result<(), NoKernel>> {
    let what = if tag == Tag::Kernel {
        "kernel"
    } else {
        "initrd"
    };
    let too_large = |out: &mut dyn Write| {
        frames::write(out, Tag::TooLarge, format!("{what} {path}").as_bytes())?;
        Ok(Err(NoKernel(format!("{path} too large"))))
    };
    let meta = match fs.metadata(path) {
        Ok(m) => m,
        Err(e) => return Ok(Err(NoKernel(format!("{path}: {e}")))),
    };
    if meta.len() > limit {
        return too_large(out);
    }
    let mut file = match fs.open(path) {
        Ok(f) => f,
        Err(e) => return Ok(Err(NoKernel(format!("{path}: {e}")))),
    };
    let mut buf = vec![0u8; frames::CHUNK];
    let mut sent = 0u64;
    loop {
        let n = match file.read_bytes(&mut buf) {
            Ok(0) => return Ok(Ok(())),
            Ok(n) => n,
            Err(e) => return Ok(Err(NoKernel(format!("reading {path}: {e}")))),
        };
        sent = sent.saturating_add(n as u64);
        if sent > limit {
            return too_large(out);
        }
        frames::write(out, tag, &buf[..n])?;
    }
}

/// Looks for the kernel on `disk` and writes what it finds to `out` as frames: the
/// location, the kernel, the initrd, then done; or the reason there is none. `Err`
/// only when `out` fails.
pub fn scan(disk: Arc<dyn Disk>, limits: &Limits, out: &mut dyn Write) -> io::Result<()> {
    let reason = match find_and_stream(disk, limits, out)? {
        Ok(()) => return out.flush(),
        Err(reason) => reason,
    };
    frames::write(out, Tag::NoKernel, reason.0.as_bytes())?;
    out.flush()
}

fn find_and_stream(
    disk: Arc<dyn Disk>,
    limits: &Limits,
    out: &mut dyn Write,
) -> io::Result<Result<(), NoKernel>> {
    let parts = match partitions(&*disk) {
        Ok(p) => p,
        Err(e) => return Ok(Err(NoKernel(format!("reading the partition table: {e}")))),
    };
    let mut looked = Vec::new();
    for part in parts {
        if !is_ext4(&*disk, part.offset) {
            continue;
        }
        if let Some(groups) = block_groups(&*disk, part.offset).filter(|g| *g > MAX_BLOCK_GROUPS) {
            looked.push(format!(
                "partition {}: the superblock declares {groups} block groups, more than \
                 the {MAX_BLOCK_GROUPS} read",
                part.number
            ));
            continue;
        }
        let reader = OffsetReader {
            disk: disk.clone(),
            offset: part.offset,
        };
        let fs = match Ext4::load(Box::new(reader)) {
            Ok(fs) => fs,
            Err(e) => {
                looked.push(format!("partition {}: {e}", part.number));
                continue;
            }
        };
        // /boot on the root filesystem, or a separate /boot partition.
        for dir in ["/boot", "/"] {
            let Ok(entries) = fs.read_dir(dir) else {
                continue;
            };
            let names: Vec<String> = entries
                .take(MAX_DIR_ENTRIES)
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().as_str().ok().map(str::to_owned))
                .collect();
            let Some((version, initrd)) = pick_kernel(&names) else {
                continue;
            };
            let found = format!(
                "{} {} {} {version}",
                part.number,
                part.offset,
                u8::from(initrd.is_some())
            );
            frames::write(out, Tag::Found, found.as_bytes())?;
            let base = dir.trim_end_matches('/');
            let kernel = format!("{base}/vmlinuz-{version}");
            if let Err(e) = stream_file(&fs, &kernel, Tag::Kernel, limits.kernel, out)? {
                return Ok(Err(e));
            }
            if let Some(initrd) = initrd {
                let path = format!("{base}/{initrd}");
                if let Err(e) = stream_file(&fs, &path, Tag::Initrd, limits.initrd, out)? {
                    return Ok(Err(e));
                }
            }
            frames::write(out, Tag::Done, &[])?;
            return Ok(Ok(()));
        }
        looked.push(format!("partition {}: no /boot/vmlinuz-*", part.number));
    }
    Ok(Err(NoKernel(if looked.is_empty() {
        "no ext4 filesystem found (GPT, MBR or whole disk)".into()
    } else {
        looked.join("; ")
    })))
}
