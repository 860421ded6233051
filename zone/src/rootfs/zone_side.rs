//! The zone side of the rootfs: run by the zone init inside its new namespaces (as zone
//! root, pid 1 of the new pid namespace). The file system calls go through [`ZoneFs`],
//! so the sequence is unit-tested without root against a recording double.

use crate::error::{Context, Result, ZoneError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

/// Device nodes a zone gets, bind-mounted from the host's /dev (a user namespace
/// cannot mknod; these are the harmless ones).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// /proc and /sys paths hidden from zones (runc's defaults): files get /dev/null over
/// them, directories an empty read-only tmpfs. Zone root keeps CAP_SYS_ADMIN in its
/// user namespace, so these are made by the runtime where the kernel locks them (see
/// [`mount_kernel_fs`]); beneath, the kernel still guards against the initial
/// namespace (kcore needs host CAP_SYS_RAWIO; host-root-owned files like sysrq-trigger
/// deny an unmapped owner).
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

/// Where the zone finds its metadata socket's directory, as on SmartOS lx zones.
pub const ZONECONTROL_DIR: &str = "native/.zonecontrol";

/// The host ends of a zone's metadata service (served by its monitor), put into the
/// zone by [`enter`].
#[derive(Debug, Clone, Copy)]
pub struct MetadataBinds<'a> {
    /// The pty slave bound at the zone's /dev/ttyS1.
    pub tty: &'a Path,
    /// A detached, read-only mount of the directory holding the metadata socket
    /// (`open_tree` by the runtime, so the zone needs no access to the host path),
    /// attached at [`ZONECONTROL_DIR`].
    pub control: BorrowedFd<'a>,
}

/// What a path is, as far as the zone setup cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// Anything else (file, device, symlink).
    Other,
}

/// The system calls of the zone-side setup.
pub trait ZoneFs {
    /// `mount(2)`.
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// What `path` is (not following a final symlink), if it exists.
    fn kind(&self, path: &Path) -> Option<Kind>;
    /// `mkdir -p`.
    fn create_dir_all(&mut self, path: &Path) -> std::io::Result<()>;
    /// Creates an empty file (a bind-mount target).
    fn create_file(&mut self, path: &Path) -> std::io::Result<()>;
    /// `symlink(target, link)`.
    fn symlink(&mut self, target: &str, link: &Path) -> std::io::Result<()>;
    /// Makes `root` the root: `pivot_root(".", ".")` from it, then detaches the old
    /// root stacked beneath, so nothing of the host stays reachable.
    fn pivot(&mut self, root: &Path) -> Result<()>;
    /// Attaches the detached mount `tree` at `target` (`move_mount(2)`).
    fn attach(&mut self, tree: BorrowedFd<'_>, target: &Path) -> std::io::Result<()>;
}

/// The real system calls.
#[derive(Debug, Default)]
pub struct HostFs;

impl ZoneFs for HostFs {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        mount(source, target, fstype, flags, data)
    }

    fn kind(&self, path: &Path) -> Option<Kind> {
        let meta = fs::symlink_metadata(path).ok()?;
        Some(if meta.is_dir() {
            Kind::Dir
        } else {
            Kind::Other
        })
    }

    fn create_dir_all(&mut self, path: &Path) -> std::io::Result<()> {
        fs::create_dir_all(path)
    }

    fn create_file(&mut self, path: &Path) -> std::io::Result<()> {
        fs::File::create(path).map(drop)
    }

    fn symlink(&mut self, target: &str, link: &Path) -> std::io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn pivot(&mut self, root: &Path) -> Result<()> {
        nix::unistd::chdir(root).ctx(|| format!("chdir {}", root.display()))?;
        nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root".into())?;
        umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching the old root".into())?;
        nix::unistd::chdir("/").ctx(|| "chdir /".into())
    }

    fn attach(&mut self, tree: BorrowedFd<'_>, target: &Path) -> std::io::Result<()> {
        let target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(std::io::Error::other)?;
        crate::sys::attach_tree(tree, &target)
    }
}

/// No setuid, no devices, no exec: the flags of the kernel filesystems and /dev/shm.
const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Mounts /proc, /sys (read-only), the masks and the read-only paths into `root`.
///
/// The runtime runs this, as host root in its own mount namespace (owned by the
/// initial user namespace), from a helper that joined the zone's pid and network
/// namespaces (procfs and sysfs show the namespaces of their mounter), before the zone
/// init unshares its mount namespace. The zone's namespace then receives these mounts
/// from a more privileged one, so the kernel locks them (`MNT_LOCKED`, and the
/// read-only flags with `MNT_LOCK_READONLY`, see mount_namespaces(7)): zone root, for
/// all its CAP_SYS_ADMIN in its user namespace, can neither unmount a mask nor remount
/// /sys or /proc/sys read-write, nor mount a fresh, unmasked procfs (the kernel only
/// allows that where a fully visible one exists). `dev_null` is the host's /dev/null.
pub fn mount_kernel_fs(fs: &mut dyn ZoneFs, root: &Path, dev_null: &Path) -> Result<()> {
    let proc_dir = ensure_dir(fs, root, "proc")?;
    fs.mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        NOSUID_NODEV_NOEXEC,
        None,
    )
    .ctx(|| "mounting /proc".into())?;
    let sys_dir = ensure_dir(fs, root, "sys")?;
    let ro = NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY;
    fs.mount(Some(Path::new("sysfs")), &sys_dir, Some("sysfs"), ro, None)
        .ctx(|| "mounting /sys (read-only)".into())?;
    for rel in MASKED_PATHS {
        mask(fs, root, rel, dev_null)?;
    }
    for rel in READONLY_PATHS {
        make_readonly(fs, &root.join(rel))?;
    }
    Ok(())
}

/// Mounts cgroup2 read-write on `root`/sys/fs/cgroup, after [`mount_kernel_fs`], from
/// the same helper, which has joined the zone's cgroup namespace too: the mount's root
/// is the zone's own cgroup, delegated to zone root (so an init like systemd can make
/// its sub-cgroups and enable controllers in them), while the zone's limit files stay
/// host root's. The mount is locked in the zone like /proc and /sys.
pub fn mount_cgroupfs(fs: &mut dyn ZoneFs, root: &Path) -> Result<()> {
    let dir = root.join("sys/fs/cgroup");
    if fs.kind(&dir) != Some(Kind::Dir) {
        return Err(ZoneError::Setup(
            "mounting the zone's cgroupfs: sysfs has no /sys/fs/cgroup (kernel without cgroups?)"
                .into(),
        ));
    }
    fs.mount(
        Some(Path::new("cgroup2")),
        &dir,
        Some("cgroup2"),
        NOSUID_NODEV_NOEXEC,
        None,
    )
    .ctx(|| "mounting the zone's cgroup2 on /sys/fs/cgroup".into())
}

/// Run by the zone init in its own mount namespace, after [`mount_kernel_fs`]: makes
/// `root` a mount of its own (a bind of it; the locked mounts below come along, still
/// locked), mounts a minimal /dev, then pivots into it. `console` is the pty slave to
/// bind at /dev/console, if any; `metadata`, the ends of the zone's metadata service,
/// whose directory is attached after the pivot, so that a symlink in the image
/// resolves inside the zone.
pub fn enter(
    fs: &mut dyn ZoneFs,
    root: &Path,
    console: Option<&Path>,
    metadata: Option<&MetadataBinds<'_>>,
) -> Result<()> {
    // Mounts inherited from the runtime's namespace are locked in ours, and pivot_root
    // refuses a locked new root: a bind of it made here is ours to pivot into.
    fs.mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .ctx(|| format!("bind-mounting {} onto itself", root.display()))?;
    let dev = ensure_dir(fs, root, "dev")?;
    let dev_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    fs.mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        dev_flags,
        Some("mode=0755,size=64k"),
    )
    .ctx(|| "mounting /dev".into())?;
    for name in DEVICES {
        bind_file(fs, &Path::new("/dev").join(name), &dev.join(name))?;
    }
    if let Some(console) = console {
        bind_file(fs, console, &dev.join("console"))?;
    }
    if let Some(m) = metadata {
        bind_file(fs, m.tty, &dev.join("ttyS1"))?;
    }
    let pts = ensure_dir(fs, &dev, "pts")?;
    let pts_opts = "newinstance,ptmxmode=0666,mode=0620,gid=5";
    fs.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        dev_flags,
        Some(pts_opts),
    )
    .ctx(|| "mounting /dev/pts".into())?;
    let shm = ensure_dir(fs, &dev, "shm")?;
    fs.mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        NOSUID_NODEV_NOEXEC,
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
        fs.symlink(target, &dev.join(link))
            .ctx(|| format!("creating /dev/{link}"))?;
    }
    fs.pivot(root)?;
    if let Some(m) = metadata {
        let dir = ensure_dir(fs, Path::new("/"), ZONECONTROL_DIR)?;
        fs.attach(m.control, &dir).ctx(|| {
            format!(
                "attaching the metadata socket's directory at {}",
                dir.display()
            )
        })?;
    }
    Ok(())
}

fn ensure_dir(fs: &mut dyn ZoneFs, parent: &Path, name: &str) -> Result<PathBuf> {
    let p = parent.join(name);
    if fs.kind(&p) != Some(Kind::Dir) {
        fs.create_dir_all(&p)
            .ctx(|| format!("creating {} in the zone rootfs", p.display()))?;
    }
    Ok(p)
}

fn bind_file(fs: &mut dyn ZoneFs, src: &Path, dst: &Path) -> Result<()> {
    fs.create_file(dst)
        .ctx(|| format!("creating {}", dst.display()))?;
    fs.mount(Some(src), dst, None, MsFlags::MS_BIND, None)
        .ctx(|| format!("bind-mounting {} on {}", src.display(), dst.display()))
}

fn mask(fs: &mut dyn ZoneFs, root: &Path, rel: &str, dev_null: &Path) -> Result<()> {
    let p = root.join(rel);
    let res = match fs.kind(&p) {
        None => return Ok(()), // nothing there to hide
        Some(Kind::Dir) => fs.mount(
            Some(Path::new("tmpfs")),
            &p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        ),
        Some(Kind::Other) => fs.mount(Some(dev_null), &p, None, MsFlags::MS_BIND, None),
    };
    res.ctx(|| format!("masking /{rel}"))
}

fn make_readonly(fs: &mut dyn ZoneFs, p: &Path) -> Result<()> {
    if fs.kind(p).is_none() {
        return Ok(());
    }
    fs.mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
        .ctx(|| format!("bind-mounting {} read-only", p.display()))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    fs.mount(None, p, None, flags, None)
        .ctx(|| format!("remounting {} read-only", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Records every call; `paths` says what exists.
    #[derive(Default)]
    struct Recorder {
        paths: BTreeMap<PathBuf, Kind>,
        ops: Vec<String>,
        fail_on: Option<&'static str>,
    }

    impl ZoneFs for Recorder {
        fn mount(
            &mut self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            _data: Option<&str>,
        ) -> nix::Result<()> {
            let src = source.map_or("-".into(), |s| s.display().to_string());
            let op = format!(
                "mount {src} {} {} {:?}",
                target.display(),
                fstype.unwrap_or("-"),
                flags
            );
            let fail = self.fail_on.is_some_and(|f| op.contains(f));
            self.ops.push(op);
            if fail {
                Err(nix::errno::Errno::EPERM)
            } else {
                Ok(())
            }
        }
        fn kind(&self, path: &Path) -> Option<Kind> {
            self.paths.get(path).copied()
        }
        fn create_dir_all(&mut self, path: &Path) -> std::io::Result<()> {
            self.ops.push(format!("mkdir {}", path.display()));
            self.paths.insert(path.to_path_buf(), Kind::Dir);
            Ok(())
        }
        fn create_file(&mut self, path: &Path) -> std::io::Result<()> {
            self.paths.insert(path.to_path_buf(), Kind::Other);
            Ok(())
        }
        fn symlink(&mut self, target: &str, link: &Path) -> std::io::Result<()> {
            self.ops
                .push(format!("symlink {target} {}", link.display()));
            Ok(())
        }
        fn pivot(&mut self, root: &Path) -> Result<()> {
            self.ops.push(format!("pivot {}", root.display()));
            Ok(())
        }
        fn attach(&mut self, _tree: BorrowedFd<'_>, target: &Path) -> std::io::Result<()> {
            self.ops.push(format!("attach {}", target.display()));
            Ok(())
        }
    }

    fn proc_tree() -> Recorder {
        let mut r = Recorder::default();
        for (p, k) in [
            ("/r/proc", Kind::Dir),
            ("/r/sys", Kind::Dir),
            ("/r/proc/kcore", Kind::Other),
            ("/r/proc/acpi", Kind::Dir),
            ("/r/proc/sys", Kind::Dir),
            ("/r/proc/sysrq-trigger", Kind::Other),
        ] {
            r.paths.insert(PathBuf::from(p), k);
        }
        r
    }

    fn index(ops: &[String], needle: &str) -> usize {
        ops.iter()
            .position(|o| o.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {ops:#?}"))
    }

    #[test]
    fn kernel_fs_masks_after_proc_and_binds_read_only_paths() {
        let mut r = proc_tree();
        mount_kernel_fs(&mut r, Path::new("/r"), Path::new("/dev/null")).unwrap();
        let ops = &r.ops;
        let proc = index(ops, "mount proc /r/proc proc");
        assert!(index(ops, "/r/proc/kcore") > proc);
        assert!(
            ops.iter()
                .any(|o| o.starts_with("mount /dev/null /r/proc/kcore")),
            "file masked by the host's /dev/null"
        );
        assert!(
            ops.iter()
                .any(|o| o.starts_with("mount tmpfs /r/proc/acpi tmpfs MsFlags(MS_RDONLY)")),
            "dir masked by tmpfs"
        );
        assert!(ops
            .iter()
            .any(|o| o.contains("mount sysfs /r/sys sysfs") && o.contains("MS_RDONLY")));
        // Missing paths are not masked (nothing to hide) and not created.
        assert!(!ops.iter().any(|o| o.contains("sched_debug")));
        // proc/sys: bound onto itself, then remounted read-only.
        let bind = index(ops, "mount /r/proc/sys /r/proc/sys");
        assert!(
            ops[bind + 1].starts_with("mount - /r/proc/sys") && ops[bind + 1].contains("MS_RDONLY")
        );
        assert!(!ops.iter().any(|o| o.starts_with("pivot")));
    }

    #[test]
    fn enter_binds_root_first_mounts_dev_and_pivots_last() {
        let mut r = proc_tree();
        enter(&mut r, Path::new("/r"), Some(Path::new("/dev/pts/7")), None).unwrap();
        let ops = &r.ops;
        assert!(
            ops[0].starts_with("mount /r /r - MsFlags(MS_BIND | MS_REC)"),
            "{ops:#?}"
        );
        assert_eq!(ops.last().unwrap(), "pivot /r");
        assert!(ops
            .iter()
            .any(|o| o.starts_with("mount /dev/pts/7 /r/dev/console")));
        // /proc, /sys and the masks are the runtime's (mount_kernel_fs), never ours.
        assert!(!ops
            .iter()
            .any(|o| o.contains("/r/proc") || o.contains("/r/sys")));
        for dev in DEVICES {
            assert!(
                ops.iter()
                    .any(|o| o.starts_with(&format!("mount /dev/{dev} /r/dev/{dev}"))),
                "{dev}"
            );
        }
    }

    #[test]
    fn missing_mount_points_are_created_and_no_console_without_pty() {
        let mut r = Recorder::default();
        mount_kernel_fs(&mut r, Path::new("/r"), Path::new("/dev/null")).unwrap();
        enter(&mut r, Path::new("/r"), None, None).unwrap();
        assert!(r.ops.contains(&"mkdir /r/proc".to_string()));
        assert!(r.ops.contains(&"mkdir /r/sys".to_string()));
        assert!(!r.ops.iter().any(|o| o.contains("console")));
        assert!(!r
            .ops
            .iter()
            .any(|o| o.contains("ttyS1") || o.contains("zonecontrol")));
    }

    #[test]
    fn metadata_ends_go_to_dev_ttys1_and_after_the_pivot_to_native_zonecontrol() {
        let mut r = proc_tree();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let binds = MetadataBinds {
            tty: Path::new("/dev/pts/9"),
            control: std::os::fd::AsFd::as_fd(&devnull),
        };
        enter(&mut r, Path::new("/r"), None, Some(&binds)).unwrap();
        let ops = &r.ops;
        let tty = index(ops, "mount /dev/pts/9 /r/dev/ttyS1");
        let pivot = index(ops, "pivot /r");
        assert!(tty < pivot, "{ops:#?}");
        // Created and attached inside the zone's own root, never through the image's
        // paths as seen from outside it.
        let mkdir = index(ops, "mkdir /native/.zonecontrol");
        let attach = index(ops, "attach /native/.zonecontrol");
        assert!(pivot < mkdir && mkdir < attach, "{ops:#?}");
    }

    #[test]
    fn cgroupfs_goes_on_sysfs_own_mount_point() {
        let mut r = proc_tree();
        let err = mount_cgroupfs(&mut r, Path::new("/r"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no /sys/fs/cgroup"), "{err}");
        assert!(
            r.ops.is_empty(),
            "nothing is created in a read-only sysfs: {:?}",
            r.ops
        );
        r.paths.insert(PathBuf::from("/r/sys/fs/cgroup"), Kind::Dir);
        mount_cgroupfs(&mut r, Path::new("/r")).unwrap();
        assert_eq!(r.ops.len(), 1, "{:?}", r.ops);
        assert!(r.ops[0].starts_with("mount cgroup2 /r/sys/fs/cgroup cgroup2"));
        assert!(!r.ops[0].contains("MS_RDONLY"), "{}", r.ops[0]);
    }

    #[test]
    fn a_failing_step_is_named() {
        let mut r = proc_tree();
        r.fail_on = Some("sysfs");
        let err = mount_kernel_fs(&mut r, Path::new("/r"), Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mounting /sys (read-only)"), "{err}");
    }
}
