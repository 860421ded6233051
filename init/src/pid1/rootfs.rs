//! Leaving the initramfs: the kernel's rootfs can never be unmounted, so
//! `pivot_root(2)` fails with EINVAL in any mount namespace whose root it is, and the
//! zone and VMM jails are built on pivot_root. Like switch_root, init copies the image
//! into a tmpfs, frees the initramfs, makes the tmpfs the root and re-executes itself
//! there. The node still runs entirely from RAM; its root just became a real mount.

use super::error::{io, sys, BootError};
use nix::mount::{mount, MsFlags};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Set in the environment of the re-executed init.
pub const SWITCHED_ENV: &str = "SKERRY_ROOT_SWITCHED";
const NEW_ROOT: &str = "/.skerry-root";

/// Whether `/` is still the kernel's rootfs (the boot image's stage 0 usually moved
/// it to a tmpfs already; this covers an image whose /init is init itself, or a
/// stage 0 that could not). Mounts /proc for a moment to read mountinfo.
pub fn needs_switch() -> bool {
    if std::env::var_os(SWITCHED_ENV).is_some() {
        return false;
    }
    let _ = fs::create_dir_all("/proc");
    let mounted_here = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::empty(),
        None::<&str>,
    )
    .is_ok();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounted_here {
        // Unmounted again so the copy below does not meet it; init mounts it for good.
        let _ = nix::mount::umount("/proc");
    }
    root_is_rootfs(&info)
}

/// Whether the mount at `/` (the last one listed: stacked mounts come later) is the
/// kernel's `rootfs`.
pub fn root_is_rootfs(mountinfo: &str) -> bool {
    let root = mountinfo.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (left.split_whitespace().nth(4) == Some("/")).then_some(right)
    });
    root.is_some_and(|fs| fs.starts_with("rootfs "))
}

/// Copies the root into a tmpfs, frees the old root, makes the tmpfs `/` and
/// re-executes init. Returns only on failure (init then carries on from the rootfs).
pub fn switch_to_tmpfs() -> Result<(), BootError> {
    let root_dev = fs::metadata("/").map_err(io("/"))?.dev();
    fs::create_dir_all(NEW_ROOT).map_err(io(NEW_ROOT))?;
    mount(
        Some("rootfs"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(sys(format_args!("mount tmpfs on {NEW_ROOT}")))?;
    for entry in fs::read_dir("/").map_err(io("/"))? {
        let entry = entry.map_err(io("/"))?;
        let src = entry.path();
        if src == Path::new(NEW_ROOT) {
            continue;
        }
        let dst = Path::new(NEW_ROOT).join(entry.file_name());
        copy_tree(&src, &dst, root_dev).map_err(io(format_args!("copying {}", src.display())))?;
        // Free the initramfs copy at once: the image is held in RAM only once.
        remove_tree(&src, root_dev);
    }
    std::env::set_current_dir(NEW_ROOT).map_err(io(format_args!("chdir {NEW_ROOT}")))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys(format_args!("moving {NEW_ROOT} to /")))?;
    nix::unistd::chroot(".").map_err(sys("chroot"))?;
    std::env::set_current_dir("/").map_err(io("chdir /"))?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let err = std::process::Command::new("/init")
        .args(args)
        .env(SWITCHED_ENV, "1")
        .exec();
    Err(io("re-executing /init in the new root")(err))
}

fn copy_tree(src: &Path, dst: &Path, dev: u64) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else if ft.is_dir() {
        fs::create_dir(dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        // Mount points (another device) stay empty directories.
        if meta.dev() == dev {
            for e in fs::read_dir(src)? {
                let e = e?;
                copy_tree(&e.path(), &dst.join(e.file_name()), dev)?;
            }
        }
    } else if ft.is_file() {
        fs::copy(src, dst)?;
    } else {
        // Device nodes, fifos, sockets of the image (e.g. /dev/console).
        nix::sys::stat::mknod(
            dst,
            nix::sys::stat::SFlag::from_bits_truncate(meta.mode()),
            nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .map_err(io::Error::from)?;
    }
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    Ok(())
}

fn remove_tree(p: &Path, dev: u64) {
    let Ok(meta) = fs::symlink_metadata(p) else {
        return;
    };
    if meta.is_dir() {
        if meta.dev() != dev {
            return;
        }
        if let Ok(entries) = fs::read_dir(p) {
            for e in entries.flatten() {
                remove_tree(&e.path(), dev);
            }
        }
        let _ = fs::remove_dir(p);
    } else {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_initramfs_root_from_a_switched_one() {
        let initramfs = "1 1 0:2 / / rw - rootfs rootfs rw,size=1522212k\n";
        let switched = "1 1 0:2 / / rw - rootfs rootfs rw\n22 1 0:21 / / rw,relatime - tmpfs skerry-root rw,mode=755\n";
        assert!(root_is_rootfs(initramfs));
        // The old rootfs stays listed under the new root; the newest `/` wins.
        assert!(!root_is_rootfs(switched));
        assert!(!root_is_rootfs("25 1 8:1 / / rw - ext4 /dev/sda1 rw\n"));
    }

    #[test]
    fn copies_files_links_modes_and_frees_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("tool", src.join("bin/alias")).unwrap();
        let dev = fs::metadata(&src).unwrap().dev();
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst, dev).unwrap();
        assert_eq!(fs::read(dst.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            fs::metadata(dst.join("bin/tool")).unwrap().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_link(dst.join("bin/alias")).unwrap(),
            Path::new("tool")
        );
        remove_tree(&src, dev);
        assert!(!src.exists());
    }
}
