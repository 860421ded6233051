//! API filesystems, cgroup2, and the pool disk.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::{io, sys, BootError};

fn mnt(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), BootError> {
    fs::create_dir_all(target).map_err(io(target))?;
    match mount(Some(src), target, Some(fstype), flags, data) {
        Ok(()) => Ok(()),
        // Already there (the kernel or an initramfs stage mounted it).
        Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(sys(format_args!("mount {fstype} on {target}"))(e)),
    }
}

/// Mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /run, /tmp. Every failure is
/// reported; the others are still attempted.
pub fn api_filesystems() -> Vec<BootError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut errs = Vec::new();
    let steps: [(&str, &str, &str, MsFlags, Option<&str>); 7] = [
        ("proc", "/proc", "proc", nosuid, None),
        ("sysfs", "/sys", "sysfs", nosuid, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=620,ptmxmode=666"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    ];
    for (src, target, fstype, flags, data) in steps {
        if let Err(e) = mnt(src, target, fstype, flags, data) {
            errs.push(e);
        }
    }
    // Tools expect /var/run and /dev/fd.
    let _ = fs::create_dir_all("/var");
    let _ = std::os::unix::fs::symlink("/run", "/var/run");
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    errs
}

/// Mounts cgroup2 at /sys/fs/cgroup and enables every available controller for
/// children (the zone monitors create their cgroups below it).
pub fn cgroup2() -> Result<Vec<String>, BootError> {
    let root = Path::new("/sys/fs/cgroup");
    mnt(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("nsdelegate"),
    )?;
    let available = fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(io("/sys/fs/cgroup/cgroup.controllers"))?;
    let mut enabled = Vec::new();
    for c in available.split_whitespace() {
        // One at a time: a controller the kernel refuses must not block the others.
        match fs::write(root.join("cgroup.subtree_control"), format!("+{c}")) {
            Ok(()) => enabled.push(c.to_string()),
            Err(e) => log::warn!("cgroup2: cannot enable {c}: {e}"),
        }
    }
    // The parent of every instance's and import's cgroup, made now, while PID 1 is
    // the only thread: the kernel's first non-root memory cgroup turns on slab
    // accounting by live-patching a static branch inside the slab allocator. Done
    // later, amid several threads forking import children, a TCG-emulated node was
    // seen with both vCPUs stuck for minutes on a static-branch site of
    // kmem_cache_alloc_node (soft lockups, RCU stalls), likely that one; the patch is
    // best made while nothing else runs. host::cgroup finds the directory there and
    // enables its controllers.
    let parent = root.join("skerry");
    if let Err(e) = fs::create_dir(&parent) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            log::warn!("cgroup2: cannot make {}: {e}", parent.display());
        }
    }
    Ok(enabled)
}

/// The ext2/3/4 label of a block device, if it carries such a filesystem.
pub fn ext_label(dev: &Path) -> Option<String> {
    let mut f = fs::File::open(dev).ok()?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024)).ok()?;
    f.read_exact(&mut sb).ok()?;
    // s_magic at 0x38, s_volume_name (16 bytes) at 0x78 of the superblock.
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let name = &sb[0x78..0x88];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Whether the device's first MiB is all zeros (a blank disk that may be formatted).
pub fn is_blank(dev: &Path) -> bool {
    let Ok(mut f) = fs::File::open(dev) else {
        return false;
    };
    let mut buf = vec![0u8; 1 << 20];
    match f.read(&mut buf) {
        Ok(n) => buf[..n].iter().all(|&b| b == 0),
        Err(_) => false,
    }
}

/// Block devices of the node (whole disks and partitions), from /sys/class/block.
pub fn block_devices() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir("/sys/class/block")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| Path::new("/dev").join(e.file_name()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            !n.starts_with("loop") && !n.starts_with("ram")
        })
        .collect();
    out.sort();
    out
}

/// The device holding the filesystem labelled `label`.
pub fn find_label(label: &str) -> Option<PathBuf> {
    block_devices()
        .into_iter()
        .find(|d| ext_label(d).as_deref() == Some(label))
}

/// Formats `dev` as ext4 with `label` (mkfs.ext4 with project quota, else busybox
/// mke2fs, which cannot make it).
pub fn format_ext4(dev: &Path, label: &str) -> Result<(), BootError> {
    let tools: [(&str, &[&str]); 2] = [
        ("mkfs.ext4", &["-q", "-F", "-O", "quota,project", "-L"]),
        ("mke2fs", &["-L"]),
    ];
    let mut last = BootError::NoMkfs;
    for (tool, args) in tools {
        let r = std::process::Command::new(tool)
            .args(args)
            .arg(label)
            .arg(dev)
            .status();
        match r {
            Ok(s) if s.success() => return Ok(()),
            Ok(status) => {
                last = BootError::Mkfs {
                    tool,
                    dev: dev.to_path_buf(),
                    status,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => last = io(tool)(e),
        }
    }
    Err(last)
}

/// Mounts the pool device at `target` (noatime, nosuid, nodev): ext4 with project
/// quota enforced (`prjquota`,
/// for zone quotas) when the filesystem has the feature, else plain ext4, falling back
/// to ext2 for a busybox-made filesystem. Returns how it was mounted, for the log.
pub fn mount_pool(dev: &Path, target: &str) -> Result<&'static str, BootError> {
    fs::create_dir_all(target).map_err(io(target))?;
    let mut last = BootError::NoPoolDevice;
    let attempts = [
        ("ext4", Some("prjquota"), "ext4, project quota enforced"),
        ("ext4", None, "ext4, without project quota"),
        ("ext2", None, "ext2, without project quota"),
    ];
    for (fstype, data, how) in attempts {
        // nosuid, nodev: nothing on the pool is a set-id program or a device the
        // node uses (images, disks and state are plain files; zones get their /dev
        // from the runtime), so an image unpacked there cannot bring either.
        let flags = MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        match mount(Some(dev), target, Some(fstype), flags, data) {
            Ok(()) => return Ok(how),
            Err(e) => {
                last = sys(format_args!(
                    "mount {} on {target} ({fstype})",
                    dev.display()
                ))(e)
            }
        }
    }
    Err(last)
}

/// Unmounts the pool (lazily if busy, after a sync); the error of the plain unmount
/// when only the lazy one could be done.
pub fn unmount_pool(target: &str) -> nix::Result<()> {
    nix::unistd::sync();
    umount2(target, MntFlags::empty()).inspect_err(|e| {
        log::warn!("umount {target}: {e}; detaching it");
        let _ = umount2(target, MntFlags::MNT_DETACH);
    })
}
