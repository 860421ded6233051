//! The zone's writable-layer quota, where the pool filesystem supports one:
//!
//! - ext4 and xfs: project quota ([`project`]). The project id of a zone is its id range
//!   start / 65536 ([`project_id`]): ranges are 65536 wide and never overlap, so the id
//!   is unique per zone and stable for its life. Both upper and work carry it. xfs
//!   shares ext4's path but has never run against a kernel with `CONFIG_XFS_QUOTA`,
//!   and node pools are ext4: it is not a supported pool (zone/README.md).
//! - btrfs: a qgroup limit on the zone's layer subvolume ([`btrfs`]), when quotas are
//!   already enabled on the filesystem (skerry does not flip that fs-wide switch).
//! - anything else: the quota is reported as unenforced, with the reason.
//!
//! A filesystem that merely lacks support never fails the zone's boot; a real error on
//! one that has it does.

pub mod btrfs;
pub mod project;

use crate::error::{Result, ZoneError};
use std::io;
use std::path::{Path, PathBuf};

/// Width of a zone's id range, hence the divisor of its project id.
pub const ID_RANGE: u32 = 65536;

const EXT4_SUPER_MAGIC: i64 = 0xEF53;
const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794C_7630;

/// The project id of the zone whose id range starts at `id_range_start`.
pub fn project_id(id_range_start: u32) -> Option<u32> {
    // Project 0 is every untagged file's project: never a zone's.
    Some(id_range_start / ID_RANGE).filter(|&id| id != 0)
}

/// The writable layer of one zone and the limit asked for.
#[derive(Debug, Clone)]
pub struct LayerQuota {
    /// The zone, for errors.
    pub zone: String,
    /// The pool (`btrfs quota enable` is run on it).
    pub pool: PathBuf,
    /// `<pool>/<uuid>`.
    pub zone_dir: PathBuf,
    /// Overlay upperdir.
    pub upper: PathBuf,
    /// Overlay workdir.
    pub work: PathBuf,
    /// Limit in bytes; None removes any limit.
    pub limit: Option<u64>,
    /// Start of the zone's host id range.
    pub id_range_start: u32,
}

/// How a zone's space is counted, to report usage.
pub enum Usage {
    /// Project quota on ext4/xfs.
    Project {
        /// quotactl on the pool filesystem.
        ops: Box<dyn project::ProjectOps>,
        /// The zone's project id.
        id: u32,
    },
    /// A btrfs qgroup: its `referenced` file in sysfs.
    Btrfs {
        /// `/sys/fs/btrfs/<fsid>/qgroups/0_<id>/referenced`.
        referenced: PathBuf,
    },
}

impl Usage {
    /// Bytes the zone's writable layer uses now (btrfs updates it per transaction).
    pub fn bytes(&self) -> io::Result<u64> {
        match self {
            Usage::Project { ops, id } => ops.usage(*id),
            Usage::Btrfs { referenced } => std::fs::read_to_string(referenced)?
                .trim()
                .parse()
                .map_err(|e| io::Error::other(format!("{}: {e}", referenced.display()))),
        }
    }
}

/// The outcome of [`apply`].
pub enum QuotaStatus {
    /// The limit is enforced by the filesystem.
    Enforced {
        /// Bytes.
        limit: u64,
        /// How, e.g. `project quota 30518 on ext4`.
        how: String,
        /// Where usage is read.
        usage: Usage,
    },
    /// No limit was asked for (any old one was removed where the filesystem has them).
    Unlimited,
    /// A limit was asked for but the pool cannot enforce it: why.
    Unenforced(String),
}

impl QuotaStatus {
    /// The `quota` status detail; None when no limit was asked for.
    pub fn detail(&self) -> Option<String> {
        match self {
            QuotaStatus::Enforced { limit, how, .. } => Some(format!(
                "{} enforced ({how})",
                spec::format::format_size(*limit)
            )),
            QuotaStatus::Unlimited => None,
            QuotaStatus::Unenforced(why) => Some(format!("unenforced ({why})")),
        }
    }

    /// Bytes used, where enforced.
    pub fn used(&self) -> Option<u64> {
        match self {
            QuotaStatus::Enforced { usage, .. } => usage.bytes().ok(),
            _ => None,
        }
    }
}

/// The pool filesystem's type name as skerry treats it.
fn fs_type(path: &Path) -> io::Result<&'static str> {
    let st = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    Ok(match st.filesystem_type().0 as i64 {
        EXT4_SUPER_MAGIC => "ext4",
        XFS_SUPER_MAGIC => "xfs",
        BTRFS_SUPER_MAGIC => "btrfs",
        TMPFS_MAGIC => "tmpfs",
        OVERLAYFS_SUPER_MAGIC => "overlay",
        _ => "other",
    })
}

/// Prepares a fresh zone's writable layer where the pool needs a layout for quota
/// (btrfs: the layer subvolume). Call before the overlay is mounted.
pub fn prepare_layer(q: &LayerQuota) -> Result<()> {
    let err = |path: &Path, reason: String| ZoneError::Quota {
        zone: q.zone.clone(),
        path: path.to_path_buf(),
        reason,
    };
    let ty = fs_type(&q.zone_dir).map_err(|e| err(&q.zone_dir, format!("statfs: {e}")))?;
    if ty == "btrfs" {
        btrfs::prepare(&q.zone_dir, &q.upper, &q.work).map_err(|e| {
            err(
                &q.zone_dir.join(btrfs::LAYER),
                format!("preparing the layer subvolume: {e}"),
            )
        })?;
    }
    Ok(())
}

/// Applies the zone's limit to its (existing) upper and work directories.
pub fn apply(q: &LayerQuota) -> Result<QuotaStatus> {
    let to_err = |f: project::Failure| ZoneError::Quota {
        zone: q.zone.clone(),
        path: f.path,
        reason: f.reason,
    };
    let ty = fs_type(&q.upper).map_err(|e| {
        to_err(project::Failure {
            path: q.upper.clone(),
            reason: format!("statfs: {e}"),
        })
    })?;
    let status = match (ty, project_id(q.id_range_start)) {
        ("ext4" | "xfs", None) => QuotaStatus::Unenforced(format!(
            "id range start {} gives project id 0, the default project",
            q.id_range_start
        )),
        ("ext4" | "xfs", Some(id)) => {
            let ops = project::Quotactl::open(&q.upper).map_err(|e| {
                to_err(project::Failure {
                    path: q.upper.clone(),
                    reason: format!("opening: {e}"),
                })
            })?;
            project::apply(&ops, ty, &q.upper, &q.work, id, q.limit).map_err(to_err)?
        }
        ("btrfs", _) => btrfs::apply(&q.pool, &q.zone_dir, &q.upper, q.limit).map_err(to_err)?,
        ("tmpfs", _) => {
            QuotaStatus::Unenforced("the pool is a tmpfs, which has no project quota".into())
        }
        ("overlay", _) => {
            QuotaStatus::Unenforced("the pool is itself an overlay, which has no quota".into())
        }
        _ => QuotaStatus::Unenforced("the pool filesystem is neither ext4, xfs nor btrfs".into()),
    };
    // Without a limit asked for there is nothing to enforce, whatever the pool lacks.
    Ok(match (status, q.limit) {
        (QuotaStatus::Unenforced(_), None) => QuotaStatus::Unlimited,
        (status, _) => status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_follow_id_ranges() {
        assert_eq!(project_id(3_000_000_000), Some(45_776));
        assert_eq!(project_id(3_000_000_000 + ID_RANGE), Some(45_777));
        // init's ranges need not be aligned; 65536 apart they still map apart.
        assert_ne!(
            project_id(2_000_000_000),
            project_id(2_000_000_000 + ID_RANGE)
        );
        assert_eq!(project_id(1000), None);
    }

    #[test]
    fn tmpfs_pools_are_unenforced_with_a_reason() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let q = LayerQuota {
            zone: "z".into(),
            pool: dir.path().into(),
            zone_dir: dir.path().into(),
            upper: dir.path().into(),
            work: dir.path().into(),
            limit: Some(1 << 20),
            id_range_start: 3_000_000_000,
        };
        let d = apply(&q).unwrap().detail().unwrap();
        assert_eq!(
            d,
            "unenforced (the pool is a tmpfs, which has no project quota)"
        );
        let q = LayerQuota { limit: None, ..q };
        assert!(apply(&q).unwrap().detail().is_none());
    }
}
