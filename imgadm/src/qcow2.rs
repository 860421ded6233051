//! qcow2 cloud disk images (v2 and v3) converted to sparse raw disks at import.
//!
//! The file is hostile input: every offset is checked against the file's length
//! before it is read, the disk size and the L1 table are capped (QEMU's own 32 MiB L1
//! cap), and memory is one L1 table, one L2 table and one cluster (each at most
//! 2 MiB for the largest clusters qcow2 allows). Supported: uncompressed clusters,
//! v3 "all zeros" clusters, unallocated clusters (holes). Refused with a message:
//! compressed clusters, encryption, backing files, external data files, extended L2
//! entries, and any other incompatible feature.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use uuid::Uuid;

use crate::error::StoreError;

/// The first four bytes of a qcow2 file.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// The largest virtual disk accepted (64 TiB).
pub const MAX_DISK_BYTES: u64 = 64 << 40;

/// Zero runs of this size in a cluster become holes in the raw disk.
const BLOCK: usize = 4096;

/// The largest L1 table read (QEMU's cap).
pub const MAX_L1_BYTES: u64 = 32 << 20;

/// Offset bits of L1 and L2 entries (bits 9..=55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry: the cluster is compressed.
const COMPRESSED: u64 = 1 << 62;
/// L2 entry (v3): the cluster reads as zeros.
const ZERO: u64 = 1;
/// v3 incompatible feature bit 0: the image was not closed cleanly. Its refcounts may
/// be stale, but the mapping this reader uses is not.
const DIRTY: u64 = 1;

/// Whether `head` (the first bytes of a file) starts like a qcow2 image.
pub fn is_qcow2(head: &[u8]) -> bool {
    head.starts_with(&MAGIC)
}

/// What the header says, once checked.
struct Header {
    cluster_bits: u32,
    size: u64,
    l1_entries: u64,
    l1_offset: u64,
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// When the uncompressed zvol file `file` is a qcow2 image, converts it into
/// `stage`'s raw disk (the image's payload from then on; `file` stays, as downloaded
/// and verified, for `imgadm serve`), and refuses it unless its kernel is on an ext4
/// `/boot`. Returns whether `file` was qcow2 (a raw one is left for the caller).
pub(crate) fn convert_if_qcow2(file: &Path, stage: &Path, uuid: Uuid) -> Result<bool, StoreError> {
    let mut head = [0u8; 4];
    let n = File::open(file)
        .and_then(|mut f| f.read(&mut head))
        .map_err(StoreError::io(file))?;
    if !is_qcow2(&head[..n]) {
        return Ok(false);
    }
    let disk = stage.join(crate::store::DISK_NAME);
    to_raw(file, &disk, uuid)?;
    crate::bootcheck::require_boot_kernel(&disk, uuid)?;
    Ok(true)
}

/// Converts the qcow2 image `src` into the sparse raw disk `dst` (created).
pub fn to_raw(src: &Path, dst: &Path, uuid: Uuid) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::Unpack {
        uuid,
        reason: format!("qcow2 {}: {reason}", src.display()),
    };
    let f = File::open(src).map_err(StoreError::io(src))?;
    let file_len = f.metadata().map_err(StoreError::io(src))?.len();
    let h = header(&f).map_err(|e| bad(e.to_string()))?;
    let cluster = 1u64 << h.cluster_bits;
    let within = |off: u64, len: u64, what: &str| -> Result<(), StoreError> {
        match off.checked_add(len) {
            Some(end) if end <= file_len && off.is_multiple_of(512) => Ok(()),
            _ => Err(bad(format!(
                "{what} at offset {off} (+{len}) lies outside the {file_len}-byte file"
            ))),
        }
    };
    within(h.l1_offset, h.l1_entries * 8, "the L1 table")?;
    let read = |buf: &mut [u8], off: u64| f.read_exact_at(buf, off).map_err(StoreError::io(src));
    let mut l1 = vec![0u8; (h.l1_entries * 8) as usize];
    read(&mut l1, h.l1_offset)?;
    let out = File::create(dst).map_err(StoreError::io(dst))?;
    let l2_entries = cluster / 8;
    let mut l2 = vec![0u8; cluster as usize];
    let mut data = vec![0u8; cluster as usize];
    for i in 0..h.l1_entries {
        let l2_offset = be64(&l1, (i * 8) as usize) & OFFSET_MASK;
        if l2_offset == 0 {
            continue;
        }
        within(l2_offset, cluster, &format!("L2 table {i}"))?;
        read(&mut l2, l2_offset)?;
        for j in 0..l2_entries {
            let guest = (i * l2_entries + j) << h.cluster_bits;
            if guest >= h.size {
                break;
            }
            let e = be64(&l2, (j * 8) as usize);
            if e & COMPRESSED != 0 {
                return Err(bad(format!(
                    "cluster at disk offset {guest} is compressed (convert with `qemu-img convert -O qcow2` without -c, or supply a raw image)"
                )));
            }
            let host = e & OFFSET_MASK;
            if e & ZERO != 0 || host == 0 {
                continue;
            }
            within(
                host,
                cluster,
                &format!("the cluster for disk offset {guest}"),
            )?;
            read(&mut data, host)?;
            let len = cluster.min(h.size - guest) as usize;
            // Zero blocks stay holes: a mostly empty disk costs little space.
            for (k, block) in data[..len].chunks(BLOCK).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    out.write_all_at(block, guest + (k * BLOCK) as u64)
                        .map_err(StoreError::io(dst))?;
                }
            }
        }
    }
    out.set_len(h.size).map_err(StoreError::io(dst))?;
    out.sync_all().map_err(StoreError::io(dst))
}

/// Why a qcow2 header is refused.
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    #[error("cannot read its header: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a qcow2 header")]
    NotQcow2,
    #[error("version {0} (only 2 and 3 are read)")]
    Version(u32),
    #[error("has a backing file (only standalone images are imported)")]
    BackingFile,
    #[error("cluster_bits {0} is outside 9..=21")]
    ClusterBits(u32),
    #[error("virtual size {0} bytes (accepted: 1 to {MAX_DISK_BYTES})")]
    Size(u64),
    #[error("is encrypted")]
    Encrypted,
    #[error("v3 header shorter than 104 bytes")]
    ShortV3,
    #[error("incompatible features {0:#x} (corrupt, external data file, non-zlib compression or extended L2 entries)")]
    Incompatible(u64),
    #[error("L1 table of {entries} entries cannot map {size} bytes")]
    L1TooSmall { entries: u64, size: u64 },
    #[error("L1 table of {0} entries is larger than {MAX_L1_BYTES} bytes")]
    L1TooLarge(u64),
}

/// Reads and checks the header.
fn header(mut f: &File) -> Result<Header, HeaderError> {
    let mut b = [0u8; 104];
    let n = f.read(&mut b)?;
    if n < 72 || !is_qcow2(&b) {
        return Err(HeaderError::NotQcow2);
    }
    let version = be32(&b, 4);
    if version != 2 && version != 3 {
        return Err(HeaderError::Version(version));
    }
    if be64(&b, 8) != 0 || be32(&b, 16) != 0 {
        return Err(HeaderError::BackingFile);
    }
    let cluster_bits = be32(&b, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(HeaderError::ClusterBits(cluster_bits));
    }
    let size = be64(&b, 24);
    if size == 0 || size > MAX_DISK_BYTES {
        return Err(HeaderError::Size(size));
    }
    if be32(&b, 32) != 0 {
        return Err(HeaderError::Encrypted);
    }
    if version == 3 {
        if n < 104 {
            return Err(HeaderError::ShortV3);
        }
        let incompatible = be64(&b, 72) & !DIRTY;
        if incompatible != 0 {
            return Err(HeaderError::Incompatible(incompatible));
        }
    }
    let cluster = 1u64 << cluster_bits;
    let per_l1 = cluster / 8 * cluster;
    let needed = size.div_ceil(per_l1);
    let l1_size = u64::from(be32(&b, 36));
    if l1_size < needed {
        return Err(HeaderError::L1TooSmall {
            entries: l1_size,
            size,
        });
    }
    if needed * 8 > MAX_L1_BYTES {
        return Err(HeaderError::L1TooLarge(needed));
    }
    Ok(Header {
        cluster_bits,
        size,
        l1_entries: needed,
        l1_offset: be64(&b, 40),
    })
}
