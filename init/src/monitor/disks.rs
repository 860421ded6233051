//! HVM disk files, created while provisioning: the boot disk cloned from the image
//! (reflink where the filesystem can, otherwise a sparse copy) and grown to its size,
//! the other disks blank and sparse. Existing disks are grown, never shrunk or
//! rewritten: they hold the guest's data.

use monitor::disk_path;
use spec::HvmSpec;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a disk of an HVM instance could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A blank disk without `size=`.
    #[error("disk {0} is blank and needs a size")]
    NoSize(String),
    /// The new disks (or growth) would not fit in the pool's free space.
    #[error(
        "the disks need {} more but the pool has {} free; free space or make the disks \
         smaller (sparse disks are checked against free space when created or grown, \
         not reserved)",
        spec::format::format_size(*needed),
        spec::format::format_size(*free)
    )]
    NoSpace {
        /// Bytes the disks would grow by.
        needed: u64,
        /// Bytes free in the pool.
        free: u64,
    },
    /// Creating, cloning or growing the disk file failed.
    #[error("disk {disk} ({}): {source}", path.display())]
    Io {
        /// The disk name.
        disk: String,
        /// Its file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Creates or grows every disk of `hvm` under `<pool>/<uuid>/disks/`.
pub fn provision(
    pool: &Path,
    uuid: &str,
    hvm: &spec::HvmSpec,
    image: &Path,
) -> Result<(), DiskError> {
    check_sizes(hvm)?;
    check_space(pool, uuid, hvm, image)?;
    for disk in &hvm.disks {
        let path = disk_path(pool, uuid, &disk.name);
        let ctx = |source: io::Error| DiskError::Io {
            disk: disk.name.clone(),
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(ctx)?;
        }
        if !path.exists() {
            // Build under a temporary name so a crash never leaves a half-copied disk
            // that a later run would take for a finished one.
            let tmp = path.with_extension("raw.partial");
            if disk.boot {
                clone_file(image, &tmp).map_err(ctx)?;
            } else {
                File::create(&tmp).map_err(ctx)?;
            }
            fs::rename(&tmp, &path).map_err(ctx)?;
        }
        if let Some(size) = disk.size {
            let f = OpenOptions::new().write(true).open(&path).map_err(ctx)?;
            if f.metadata().map_err(ctx)?.len() < size {
                f.set_len(size).map_err(ctx)?;
            }
        }
    }
    Ok(())
}

/// The bytes free to an unprivileged writer in the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Refuses what admission (`schedule::admit`, the one check of declared sizes) could
/// not see and would not fit in the pool's free space: a boot disk copied from an
/// image larger than its declared size (or with none), and an existing disk grown by
/// an update. A sparse disk costs nothing now, but a guest filling it later would fill
/// the pool. Checked, not reserved: the unwritten part of earlier disks is not counted.
fn check_space(pool: &Path, uuid: &str, hvm: &HvmSpec, image: &Path) -> Result<(), DiskError> {
    let needed = unadmitted_growth(pool, uuid, hvm, image);
    if needed == 0 {
        return Ok(());
    }
    let free = free_bytes(pool).map_err(|source| DiskError::Io {
        disk: "(pool)".into(),
        path: pool.to_path_buf(),
        source,
    })?;
    if needed > free {
        return Err(DiskError::NoSpace { needed, free });
    }
    Ok(())
}

/// Bytes the disks of `hvm` grow by beyond what admission counted for them: a new
/// disk's declared size was counted, an existing disk's growth was not.
fn unadmitted_growth(pool: &Path, uuid: &str, hvm: &HvmSpec, image: &Path) -> u64 {
    let mut needed = 0u64;
    for disk in &hvm.disks {
        let current = fs::metadata(disk_path(pool, uuid, &disk.name)).map_or(0, |m| m.len());
        let base = match (current, disk.boot) {
            (0, true) => fs::metadata(image).map_or(0, |m| m.len()),
            _ => current,
        };
        let target = disk.size.unwrap_or(0).max(base);
        let admitted = if current == 0 {
            disk.size.unwrap_or(0)
        } else {
            0
        };
        needed = needed.saturating_add(target.saturating_sub(current.max(admitted)));
    }
    needed
}

fn check_sizes(hvm: &HvmSpec) -> Result<(), DiskError> {
    for d in &hvm.disks {
        if !d.boot && d.size.is_none() {
            return Err(DiskError::NoSize(d.name.clone()));
        }
    }
    Ok(())
}

/// Copies `src` to `dst` as a reflink when possible, else block by block, skipping
/// holes and all-zero blocks so the copy stays sparse.
fn clone_file(src: &Path, dst: &Path) -> io::Result<()> {
    let mut from = File::open(src)
        .map_err(|e| io::Error::new(e.kind(), format!("image {}: {e}", src.display())))?;
    let mut to = File::create(dst)?;
    // SAFETY: FICLONE takes the source fd as its argument and touches no memory of ours.
    let r = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    if r == 0 {
        return to.sync_all();
    }
    let len = from.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            to.seek(SeekFrom::Current(n as i64))?;
        } else {
            to.write_all(&buf[..n])?;
        }
        pos += n as u64;
    }
    to.set_len(len)?;
    to.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use spec::Disk;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn boot_disk_is_a_sparse_clone_grown_and_blank_disks_are_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image.raw");
        let mut data = vec![0u8; 4 << 20];
        data[..5].copy_from_slice(b"BOOT!");
        fs::write(&image, &data).unwrap();
        let hvm = HvmSpec {
            vcpus: 1,
            cpu_cap: 0,
            disks: vec![
                Disk {
                    name: "root".into(),
                    boot: true,
                    size: Some(64 << 20),
                },
                Disk {
                    name: "data".into(),
                    boot: false,
                    size: Some(1 << 30),
                },
            ],
            cmdline: None,
        };
        provision(dir.path(), "u1", &hvm, &image).unwrap();
        let root = disk_path(dir.path(), "u1", "root");
        let data_disk = disk_path(dir.path(), "u1", "data");
        assert_eq!(&fs::read(&root).unwrap()[..5], b"BOOT!");
        assert_eq!(fs::metadata(&root).unwrap().len(), 64 << 20);
        let blank = fs::metadata(&data_disk).unwrap();
        assert_eq!(blank.len(), 1 << 30);
        assert!(blank.blocks() * 512 < 1 << 20, "blank disk is not sparse");
        // A second provision keeps the guest's writes.
        let mut f = OpenOptions::new().write(true).open(&root).unwrap();
        f.write_all(b"GUEST").unwrap();
        provision(dir.path(), "u1", &hvm, &image).unwrap();
        assert_eq!(&fs::read(&root).unwrap()[..5], b"GUEST");
    }

    #[test]
    fn blank_disk_without_size_is_refused() {
        let hvm = HvmSpec {
            vcpus: 1,
            cpu_cap: 0,
            disks: vec![Disk {
                name: "data".into(),
                boot: false,
                size: None,
            }],
            cmdline: None,
        };
        let e = provision(Path::new("/nonexistent"), "u", &hvm, Path::new("/x")).unwrap_err();
        assert!(e.to_string().contains("disk data"), "{e}");
    }

    #[test]
    fn provisioning_counts_only_what_admission_did_not() {
        const MIB: u64 = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image.raw");
        fs::write(&image, vec![0u8; 4 << 20]).unwrap();
        let disk = |name: &str, boot, size| Disk {
            name: name.into(),
            boot,
            size,
        };
        let hvm = |disks| HvmSpec {
            vcpus: 1,
            cpu_cap: 0,
            disks,
            cmdline: None,
        };
        let growth = |h: &HvmSpec| unadmitted_growth(dir.path(), "u1", h, &image);
        // New disks with a declared size: admission counted them, whatever the size.
        let declared = hvm(vec![
            disk("root", true, Some(64 * MIB)),
            disk("data", false, Some(1 << 46)),
        ]);
        assert_eq!(growth(&declared), 0);
        // A boot disk without a size is its image; one smaller than its image, the rest.
        assert_eq!(growth(&hvm(vec![disk("root", true, None)])), 4 * MIB);
        assert_eq!(growth(&hvm(vec![disk("root", true, Some(MIB))])), 3 * MIB);
        // An existing disk grown by an update: the growth.
        let root = disk_path(dir.path(), "u1", "root");
        fs::create_dir_all(root.parent().unwrap()).unwrap();
        fs::write(&root, vec![0u8; 4 << 20]).unwrap();
        assert_eq!(
            growth(&hvm(vec![disk("root", true, Some(10 * MIB))])),
            6 * MIB
        );
        assert_eq!(
            growth(&hvm(vec![disk("root", true, Some(MIB))])),
            0,
            "never shrunk"
        );
    }
}
