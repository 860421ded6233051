//! pygrub-style kernel discovery: find the ext4 filesystem on a boot disk (GPT, MBR
//! or a bare filesystem), then the newest `/boot/vmlinuz-*` and its matching
//! `initrd.img-*`, and copy them out for direct boot. Pure Rust, no loop mounts.
//!
//! The boot disk belongs to the guest, and this runs outside the jail: the pygrub
//! problem (CVE-2007-4993). So the disk is parsed by a forked child ([`sandbox`]) with
//! dropped ids, no capabilities, no new privileges, a seccomp filter without `open`,
//! an address-space limit and a deadline; it reads only the descriptor the monitor
//! opened and streams what it finds back through a pipe ([`frames`]), where the
//! monitor enforces [`Limits`] on every byte before anything lands in the pool. Every
//! on-disk offset ([`partitions`], [`scan`]) is checked arithmetic.

mod frames;
mod sandbox;
mod scan;

pub use frames::receive;
pub use sandbox::run_sandboxed;
pub use scan::{partitions, scan, Disk};

use std::cmp::Ordering;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why no kernel could be taken from the disk.
#[derive(Debug, thiserror::Error)]
pub enum BootDiskError {
    /// Reading the disk or writing the extracted files failed.
    #[error("boot disk {path}: {source}")]
    Io {
        /// The disk (or the file being written).
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No ext4 filesystem with a kernel.
    #[error("boot disk {path}: {reason}")]
    NoKernel {
        /// The disk.
        path: PathBuf,
        /// What was looked at.
        reason: String,
    },
    /// The kernel or initrd is larger than its cap.
    #[error("boot disk {path}: {file} is larger than the {limit}-byte cap on a {what}")]
    TooLarge {
        /// The disk.
        path: PathBuf,
        /// The file on the disk.
        file: String,
        /// "kernel" or "initrd".
        what: &'static str,
        /// The cap.
        limit: u64,
    },
    /// The sandboxed reader failed: killed (seccomp, memory), timed out, or sent
    /// something that does not follow the protocol.
    #[error("boot disk {path}: the sandboxed reader {reason}")]
    Reader {
        /// The disk.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Caps on what a boot disk may hand the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest kernel copied out.
    pub kernel: u64,
    /// Largest initrd copied out.
    pub initrd: u64,
    /// How long the reader may take.
    pub time: Duration,
}

/// Largest kernel: Debian's bzImage is ~8 MiB, an uncompressed vmlinux some tens.
pub const KERNEL_MAX: u64 = 128 << 20;
/// Largest initrd: Debian's are 30–80 MiB, with firmware a few hundred.
pub const INITRD_MAX: u64 = 512 << 20;
/// Longest extraction (reading 640 MiB from a local disk takes seconds).
pub const EXTRACT_TIMEOUT: Duration = Duration::from_secs(60);
/// Directory entries looked at in `/boot` (or `/`).
pub const MAX_DIR_ENTRIES: usize = 4096;
/// Block groups a boot filesystem may have (16 MiB of descriptors in the reader):
/// 128 TiB with 4 KiB blocks, 8 TiB with 1 KiB ones, at mkfs's default group sizes.
pub const MAX_BLOCK_GROUPS: u64 = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            kernel: KERNEL_MAX,
            initrd: INITRD_MAX,
            time: EXTRACT_TIMEOUT,
        }
    }
}

/// How the disk is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractOptions {
    /// User the reader runs as (when started as root).
    pub uid: u32,
    /// Group the reader runs as.
    pub gid: u32,
    /// Size and time caps.
    pub limits: Limits,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            uid: 65534,
            gid: 65534,
            limits: Limits::default(),
        }
    }
}

/// A partition (or the whole disk) holding an ext4 filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based partition number (0 for a whole-disk filesystem).
    pub number: u32,
    /// Byte offset on the disk.
    pub offset: u64,
}

/// What was found on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// The kernel, copied out.
    pub kernel: PathBuf,
    /// The matching initrd, if there is one.
    pub initrd: Option<PathBuf>,
    /// Kernel version (the `vmlinuz-` suffix).
    pub version: String,
    /// The partition it came from.
    pub partition: Partition,
}

impl BootFiles {
    /// The `root=` argument for this disk as the guest's first virtio disk.
    pub fn root_arg(&self) -> String {
        match self.partition.number {
            0 => "root=/dev/vda".into(),
            n => format!("root=/dev/vda{n}"),
        }
    }
}

/// Compares version strings the way `sort -V` does: digit runs numerically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (tx, ty) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                tx.len().cmp(&ty.len()).then(tx.cmp(ty))
            }
            _ => x.1.cmp(y.1),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Picks the newest `vmlinuz-<ver>` among `names`, with `initrd.img-<ver>` if present.
pub fn pick_kernel(names: &[String]) -> Option<(String, Option<String>)> {
    let newest = names
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-"))
        .max_by(|a, b| compare_versions(a, b))?;
    let initrd = format!("initrd.img-{newest}");
    Some((newest.to_owned(), names.contains(&initrd).then_some(initrd)))
}

/// Finds the kernel on `disk` and copies it (and its initrd) into `out_dir`, reading
/// the disk in a sandboxed child as `nobody` with the default [`Limits`].
pub fn extract(disk: &Path, out_dir: &Path) -> Result<BootFiles, BootDiskError> {
    extract_with(disk, out_dir, &ExtractOptions::default())
}

/// [`extract`] with explicit ids and caps.
pub fn extract_with(
    disk: &Path,
    out_dir: &Path,
    opts: &ExtractOptions,
) -> Result<BootFiles, BootDiskError> {
    let file = File::open(disk).map_err(|source| BootDiskError::Io {
        path: disk.to_owned(),
        source,
    })?;
    let limits = opts.limits;
    let (result, status) = run_sandboxed(
        opts,
        file,
        move |disk, out| scan(Arc::new(disk), &limits, out),
        |input| receive(input, disk, out_dir, &limits),
    )
    .map_err(|source| BootDiskError::Io {
        path: disk.to_owned(),
        source,
    })?;
    use nix::sys::wait::WaitStatus;
    match (result, status) {
        (Ok(files), WaitStatus::Exited(_, 0)) => Ok(files),
        (Ok(_), status) => Err(BootDiskError::Reader {
            path: disk.to_owned(),
            reason: format!("ended with {status:?} after sending its files"),
        }),
        (Err(BootDiskError::Reader { path, reason }), WaitStatus::Signaled(_, sig, _)) => {
            Err(BootDiskError::Reader {
                path,
                reason: format!("{reason} (killed by {sig})"),
            })
        }
        (Err(e), _) => Err(e),
    }
}

#[cfg(test)]
mod tests;
