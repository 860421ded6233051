//! btrfs qgroups. A qgroup limits a subvolume, and overlay needs upper and work in one
//! subvolume (copy-up renames work -> upper; across subvolumes that is EXDEV). So on a
//! btrfs pool a fresh zone's writable layer is a subvolume `<pool>/<uuid>/layer`
//! holding `upper/` and `work/`, and `<pool>/<uuid>/upper` and `.../work` are symlinks
//! into it: the paths everyone else uses do not change. A zone whose upper is an older
//! plain directory is not migrated.

use super::{QuotaStatus, Usage};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The subvolume holding a zone's upper and work directories.
pub const LAYER: &str = "layer";
/// Inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
const SUBVOL_ROOT_INO: u64 = 256;
/// `_IOW(0x94, 14, struct btrfs_ioctl_vol_args)` (4096 bytes).
const BTRFS_IOC_SUBVOL_CREATE: libc::c_ulong = 0x5000_940e;
/// `_IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args)` (4096 bytes).
const BTRFS_IOC_INO_LOOKUP: libc::c_ulong = 0xd000_9412;
/// `_IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)` (1024 bytes).
const BTRFS_IOC_FS_INFO: libc::c_ulong = 0x8400_941f;
/// `_IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)` (48 bytes).
const BTRFS_IOC_QGROUP_LIMIT: libc::c_ulong = 0x8030_942b;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;
/// The "no limit" value of a qgroup limit field.
const CLEAR_LIMIT: u64 = u64::MAX;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

fn ioctl<T>(f: &fs::File, req: libc::c_ulong, arg: *mut T) -> io::Result<()> {
    // SAFETY: every caller passes a request number whose encoded size matches `T`, and
    // `arg` points to a live `T` for the duration of the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), req, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `dir` is the root of a btrfs subvolume.
fn is_subvolume(dir: &Path) -> io::Result<bool> {
    let m = fs::symlink_metadata(dir)?;
    Ok(m.is_dir() && m.ino() == SUBVOL_ROOT_INO)
}

/// For a fresh zone on btrfs (neither upper nor work exists yet): creates the `layer`
/// subvolume with `upper/` and `work/` and the two symlinks. Returns false when the zone
/// already has a writable layer (left as it is).
pub fn prepare(zone_dir: &Path, upper: &Path, work: &Path) -> io::Result<bool> {
    let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
    if exists(upper) || exists(work) {
        return Ok(false);
    }
    let layer = zone_dir.join(LAYER);
    // A layer without symlinks is what a crash between the two steps leaves: reuse it.
    if !exists(&layer) {
        let parent = fs::File::open(zone_dir)?;
        let mut args = VolArgs {
            fd: 0,
            name: [0; 4088],
        };
        args.name[..LAYER.len()].copy_from_slice(LAYER.as_bytes());
        ioctl(&parent, BTRFS_IOC_SUBVOL_CREATE, &mut args)
            .map_err(|e| io::Error::new(e.kind(), format!("creating subvolume: {e}")))?;
    } else if !is_subvolume(&layer)? {
        return Err(io::Error::other(format!(
            "{} exists but is not a btrfs subvolume",
            layer.display()
        )));
    }
    for (link, name) in [(upper, "upper"), (work, "work")] {
        fs::create_dir_all(layer.join(name))?;
        std::os::unix::fs::symlink(Path::new(LAYER).join(name), link)?;
    }
    Ok(true)
}

/// The subvolume `upper` lives in, when it is skerry's layer of this zone.
fn layer_of(zone_dir: &Path, upper: &Path) -> io::Result<Option<PathBuf>> {
    let layer = zone_dir.join(LAYER);
    if !is_subvolume(&layer)? {
        return Ok(None);
    }
    let real = fs::canonicalize(upper)?;
    Ok((real.parent() == Some(fs::canonicalize(&layer)?.as_path())).then_some(layer))
}

/// The filesystem uuid, as named under /sys/fs/btrfs.
fn fsid(f: &fs::File) -> io::Result<String> {
    let mut buf = [0u8; 1024];
    ioctl(f, BTRFS_IOC_FS_INFO, buf.as_mut_ptr())?;
    let id = &buf[16..32];
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// The subvolume id (= level-0 qgroup id) of the subvolume `f` is in.
fn subvolume_id(f: &fs::File) -> io::Result<u64> {
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: SUBVOL_ROOT_INO,
        name: [0; 4080],
    };
    ioctl(f, BTRFS_IOC_INO_LOOKUP, &mut args)?;
    Ok(args.treeid)
}

/// A real error while setting up btrfs quota: the path and what failed.
pub type Failure = super::project::Failure;

/// Limits the zone's layer subvolume to `limit` bytes referenced (None: clears it).
pub fn apply(
    pool: &Path,
    zone_dir: &Path,
    upper: &Path,
    limit: Option<u64>,
) -> Result<QuotaStatus, Failure> {
    let fail = |path: &Path, what: &str, e: io::Error| Failure {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    };
    let Some(layer) = layer_of(zone_dir, upper).map_err(|e| fail(upper, "resolving", e))? else {
        return Ok(QuotaStatus::Unenforced(format!(
            "btrfs: {} is a plain directory from before skerry kept upper layers in their \
             own subvolume; nothing is migrated: recreate the zone to get a quota",
            upper.display()
        )));
    };
    let f = fs::File::open(&layer).map_err(|e| fail(&layer, "opening", e))?;
    let fsid = fsid(&f).map_err(|e| fail(&layer, "BTRFS_IOC_FS_INFO", e))?;
    let qgroups = Path::new("/sys/fs/btrfs").join(&fsid).join("qgroups");
    if !qgroups.exists() {
        return Ok(QuotaStatus::Unenforced(format!(
            "btrfs quotas are off on this filesystem; enable them with `btrfs quota enable {}`",
            pool.display()
        )));
    }
    let id = subvolume_id(&f).map_err(|e| fail(&layer, "BTRFS_IOC_INO_LOOKUP", e))?;
    let mut args = QgroupLimitArgs {
        qgroupid: 0, // the subvolume of the fd
        flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
        max_rfer: limit.unwrap_or(CLEAR_LIMIT),
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    ioctl(&f, BTRFS_IOC_QGROUP_LIMIT, &mut args).map_err(|e| {
        fail(
            &layer,
            &format!("setting the limit of qgroup 0/{id} (BTRFS_IOC_QGROUP_LIMIT)"),
            e,
        )
    })?;
    let Some(limit) = limit else {
        return Ok(QuotaStatus::Unlimited);
    };
    Ok(QuotaStatus::Enforced {
        limit,
        how: format!("btrfs qgroup 0/{id} on subvolume {}", layer.display()),
        usage: Usage::Btrfs {
            referenced: qgroups.join(format!("0_{id}")).join("referenced"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_argument_sizes_match_their_request_numbers() {
        let size = |req: libc::c_ulong| (req >> 16) & 0x3fff;
        assert_eq!(size(BTRFS_IOC_SUBVOL_CREATE), 4096);
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(size(BTRFS_IOC_INO_LOOKUP), 4096);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
        assert_eq!(size(BTRFS_IOC_FS_INFO), 1024);
        assert_eq!(size(BTRFS_IOC_QGROUP_LIMIT), 48);
        assert_eq!(std::mem::size_of::<QgroupLimitArgs>(), 48);
    }
}
