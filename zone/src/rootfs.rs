//! The zone's root filesystem.
//!
//! On the host side ([`Stage`]), in the runtime's private mount namespace: a small tmpfs
//! staging area holding the image rootfs as an *idmapped* mount (host root's files show
//! as zone root's) and the overlay of it with the zone's writable upper layer.
//!
//! On the zone side ([`enter`]), inside the new namespaces: /proc, read-only /sys, a
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
    Temporary,
}

/// Moves the calling process into a private mount namespace, so that every mount the
/// runtime makes is invisible to the host and disappears with the process, however
/// it ends.
pub fn enter_private_mount_ns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .ctx(|| "unshare(CLONE_NEWNS) for the runtime's private mounts".into())?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .ctx(|| "making / private in the runtime's mount namespace".into())
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
            Upper::Temporary => "mode=0755",
            Upper::Persistent { .. } => "mode=0755,size=1m",
        };
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts),
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
            Upper::Temporary => (dir.join("upper"), dir.join("work")),
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
        mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            MsFlags::empty(),
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

/// Device nodes a zone gets, bind-mounted from the host's /dev (a user namespace
/// cannot mknod; these are the harmless ones).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// /proc and /sys paths hidden from zones (runc's defaults): files get /dev/null over
/// them, directories an empty read-only tmpfs.
pub const MASKED_PATHS: [&str; 11] = [
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// /proc paths made read-only (runc's defaults).
pub const READONLY_PATHS: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Inside the zone's namespaces (as zone root, pid 1 of the new pid namespace): mounts
/// /proc, /sys, /dev, masks, then pivots into `root`. `console` is the pty slave path
/// to bind at /dev/console, if the zone has one.
pub fn enter(root: &Path, console: Option<&Path>) -> Result<()> {
    let nosuid_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Mounts inherited from the runtime's namespace are locked in ours, and pivot_root
    // refuses a locked new root: a bind of it made here is ours to pivot into.
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind-mounting {} onto itself", root.display()))?;
    let proc_dir = ensure_dir(root, "proc")?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        nosuid_noexec,
        None::<&str>,
    )
    .ctx(|| "mounting /proc".into())?;
    let sys_dir = ensure_dir(root, "sys")?;
    mount(
        Some("sysfs"),
        &sys_dir,
        Some("sysfs"),
        nosuid_noexec | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .ctx(|| "mounting /sys (read-only)".into())?;
    let dev = ensure_dir(root, "dev")?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .ctx(|| "mounting /dev".into())?;
    for name in DEVICES {
        bind_file(Path::new("/dev").join(name).as_path(), &dev.join(name))?;
    }
    if let Some(console) = console {
        bind_file(console, &dev.join("console"))?;
    }
    let pts = ensure_dir(&dev, "pts")?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .ctx(|| "mounting /dev/pts".into())?;
    let shm = ensure_dir(&dev, "shm")?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nosuid_noexec,
        Some("mode=1777,size=64m"),
    )
    .ctx(|| "mounting /dev/shm".into())?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .ctx(|| format!("creating /dev/{link}"))?;
    }
    for rel in MASKED_PATHS {
        mask(root, rel)?;
    }
    for rel in READONLY_PATHS {
        make_readonly(&root.join(rel))?;
    }
    pivot(root)
}

fn ensure_dir(parent: &Path, name: &str) -> Result<PathBuf> {
    let p = parent.join(name);
    if !p.is_dir() {
        fs::create_dir_all(&p).ctx(|| format!("creating {} in the zone rootfs", p.display()))?;
    }
    Ok(p)
}

fn bind_file(src: &Path, dst: &Path) -> Result<()> {
    fs::File::create(dst).ctx(|| format!("creating {}", dst.display()))?;
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .ctx(|| format!("bind-mounting {} on {}", src.display(), dst.display()))
}

fn mask(root: &Path, rel: &str) -> Result<()> {
    let p = root.join(rel);
    let Ok(meta) = fs::symlink_metadata(&p) else {
        return Ok(()); // nothing there to hide
    };
    let res = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            &p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
    } else {
        mount(
            Some(&root.join("dev/null")),
            &p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    res.ctx(|| format!("masking /{rel}"))
}

fn make_readonly(p: &Path) -> Result<()> {
    if fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind-mounting {} read-only", p.display()))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, p, None::<&str>, flags, None::<&str>)
        .ctx(|| format!("remounting {} read-only", p.display()))
}

/// `pivot_root(".", ".")` then lazily detach the old root stacked beneath: no directory
/// for the old root is needed and nothing of the host stays reachable.
fn pivot(root: &Path) -> Result<()> {
    nix::unistd::chdir(root).ctx(|| format!("chdir {}", root.display()))?;
    nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root".into())?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching the old root".into())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".into())
}
