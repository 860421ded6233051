//! The zone's root filesystem.
//!
//! On the host side ([`Stage`]), in the runtime's private mount namespace: a small tmpfs
//! staging area holding the image rootfs as an *idmapped* mount (host root's files show
//! as zone root's) and the overlay of it with the zone's writable upper layer.
//!
//! On the zone side ([`enter`], in `zone_side`), inside the new namespaces: /proc, read-only /sys, a
//! minimal /dev, runc's masked paths, then `pivot_root` into the overlay.

use crate::error::{Context, Result, ZoneError};
use crate::idmap::IdMap;
use crate::sys;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

mod zone_side;
pub use zone_side::{
    enter, mount_cgroupfs, mount_kernel_fs, HostFs, MetadataBinds, ZoneFs, DEVICES, MASKED_PATHS,
    READONLY_PATHS, ZONECONTROL_DIR,
};

/// Where the writable layer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upper {
    /// A persistent upper and work directory (`<pool>/<uuid>/upper`, `.../work`).
    Persistent {
        /// Overlay upperdir.
        upper: PathBuf,
        /// Overlay workdir (same filesystem as `upper`).
        work: PathBuf,
    },
    /// A throwaway upper layer on the staging tmpfs, gone with the runtime.
    Temporary {
        /// The tmpfs `size=` in bytes (`zone run --quota`): writes past it fail with
        /// ENOSPC. None: bounded by the zone's memory cgroup only.
        size: Option<u64>,
    },
}

/// Moves the calling process into a private mount namespace, so that every mount the
/// runtime makes is invisible to the host and disappears with the process, however
/// it ends.
pub fn enter_private_mount_ns() -> Result<()> {
    host::mount::enter_private_mount_ns(nix::sched::CloneFlags::empty())
        .map_err(|e| ZoneError::io("the runtime's private mounts", std::io::Error::other(e)))
}

/// The staging area: `<dir>` (a tmpfs) with `lower/` (idmapped image) and `root/`
/// (the overlay the zone pivots into).
#[derive(Debug)]
pub struct Stage {
    dir: PathBuf,
    mounted: bool,
}

impl Stage {
    /// A stage at `dir` (created if missing); nothing is mounted yet.
    pub fn new(dir: PathBuf) -> Result<Stage> {
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(Stage {
            dir,
            mounted: false,
        })
    }

    /// A stage mounted over the existing directory `dir` (`zone run`): it hides `dir`
    /// from the runtime's private mount namespace only, needs no directory of its own
    /// on the host, and vanishes with the namespace, so not even a crash leaves a trace.
    pub fn over(dir: PathBuf) -> Stage {
        Stage {
            dir,
            mounted: false,
        }
    }

    /// The merged root the zone pivots into.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Whether [`Stage::mount`] already ran (a rebooting zone keeps its mounts).
    pub fn is_mounted(&self) -> bool {
        self.mounted
    }

    /// Mounts the staging tmpfs, the idmapped image and the overlay. `userns` is a user
    /// namespace carrying the zone's id mapping.
    pub fn mount(
        &mut self,
        image: &Path,
        upper: &Upper,
        userns: std::os::fd::BorrowedFd<'_>,
        map: &IdMap,
    ) -> Result<()> {
        check_rootfs(image)?;
        // Cloned before the tmpfs goes up: the image may live below the stage directory.
        let tree = sys::open_tree_clone(&cpath(image)?)
            .ctx(|| format!("open_tree {}", image.display()))?;
        let dir = &self.dir;
        // A temporary upper layer lives on this tmpfs: its pages are charged to the
        // zone's memory cgroup, which bounds it; otherwise it only holds mount points.
        let opts = match upper {
            Upper::Temporary { size: None } => "mode=0755".to_string(),
            Upper::Temporary { size: Some(s) } => format!("mode=0755,size={s}"),
            Upper::Persistent { .. } => "mode=0755,size=1m".to_string(),
        };
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .ctx(|| format!("mounting the staging tmpfs on {}", dir.display()))?;
        self.mounted = true;
        let lower = dir.join("lower");
        let root = dir.join("root");
        for d in [&lower, &root] {
            fs::create_dir(d).ctx(|| format!("creating {}", d.display()))?;
        }
        sys::idmap_tree(tree.as_fd(), userns).map_err(|e| ZoneError::Rootfs {
            path: image.to_path_buf(),
            reason: format!("cannot make an idmapped mount of it ({e}); its filesystem must support idmapped mounts (ext4, xfs, btrfs, tmpfs)"),
        })?;
        sys::attach_tree(tree.as_fd(), &cpath(&lower)?)
            .ctx(|| format!("attaching the idmapped image at {}", lower.display()))?;
        let (upperdir, workdir) = match upper {
            Upper::Persistent { upper, work } => (upper.clone(), work.clone()),
            Upper::Temporary { .. } => (dir.join("upper"), dir.join("work")),
        };
        for d in [&upperdir, &workdir] {
            fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
            check_overlay_path(d)?;
        }
        // The upper's root is the zone's "/": it must belong to zone root.
        crate::idmap::chown_to_zone_root(&upperdir, map)?;
        let mode = fs::metadata(&lower)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o755);
        fs::set_permissions(&upperdir, fs::Permissions::from_mode(mode))
            .ctx(|| format!("chmod {}", upperdir.display()))?;
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upperdir.display(),
            workdir.display()
        );
        // nosuid costs nothing (the zone runs with no_new_privs, which ignores set-id
        // bits anyway); nodev makes a device node shipped in an image or left in the
        // upper layer unopenable, whatever the device cgroup allows. Both are locked
        // in the zone, whose user namespace is less privileged than ours.
        mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .ctx(|| {
            format!(
                "mounting the overlay of {} with upper {}",
                image.display(),
                upperdir.display()
            )
        })?;
        Ok(())
    }

    /// Detaches the /proc and /sys a previous boot of the zone left on the staged root
    /// (they belong to its dead namespaces); nothing when there are none.
    pub fn detach_kernel_fs(&self) {
        for d in ["sys", "proc"] {
            // EINVAL: not a mount point, nothing to detach. An image's `proc -> /zones`
            // must not detach the runtime's /zones: never follow a symlink.
            let _ = umount2(
                &self.root().join(d),
                MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
            );
        }
    }

    /// Unmounts everything staged (lazily, the zone may still hold it) and removes the
    /// staging directory if `remove_dir`.
    pub fn unmount(&mut self, remove_dir: bool) -> Result<()> {
        if self.mounted {
            umount2(&self.dir, MntFlags::MNT_DETACH)
                .ctx(|| format!("unmounting {}", self.dir.display()))?;
            self.mounted = false;
        }
        if remove_dir {
            fs::remove_dir(&self.dir).ctx(|| format!("removing {}", self.dir.display()))?;
        }
        Ok(())
    }
}

/// A usable rootfs is an existing directory; say what is wrong otherwise.
pub fn check_rootfs(image: &Path) -> Result<()> {
    let meta = fs::metadata(image).map_err(|e| ZoneError::Rootfs {
        path: image.to_path_buf(),
        reason: format!("{e}"),
    })?;
    if !meta.is_dir() {
        return Err(ZoneError::Rootfs {
            path: image.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    check_overlay_path(image)
}

/// overlayfs option strings cannot carry `,` or `:` in paths.
fn check_overlay_path(p: &Path) -> Result<()> {
    let b = p.as_os_str().as_bytes();
    if b.contains(&b',') || b.contains(&b':') {
        return Err(ZoneError::Rootfs {
            path: p.to_path_buf(),
            reason: "path contains ',' or ':', which overlayfs options cannot express".into(),
        });
    }
    Ok(())
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| ZoneError::Invalid(format!("path {} contains NUL", p.display())))
}
