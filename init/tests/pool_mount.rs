//! The pool as PID 1 mounts it (`pid1::mounts::mount_pool`), on a real ext4 on a loop
//! device: nosuid and nodev, so a device node or a set-id program that an image
//! brings onto the pool is inert.

use skerry_init::pid1::mounts::{mount_pool, unmount_pool};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device on an ext4 image (kept in the directory until then), detached when
/// dropped.
struct Loop {
    dev: String,
    _image: tempfile::TempDir,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn the_pool_is_mounted_nosuid_and_nodev() {
    assert!(nix::unistd::geteuid().is_root(), "mounting needs root");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("pool.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    let dev = run(Command::new("losetup").args(["--find", "--show"]).arg(&img));
    let dev = Loop {
        dev: dev.trim().to_string(),
        _image: dir,
    };
    let target = tempfile::tempdir().unwrap();
    let target_str = target.path().to_str().unwrap();
    mount_pool(std::path::Path::new(&dev.dev), target_str).unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(target_str))
        .map(str::to_string);
    // A device node on the pool (the null device: harmless, so only nodev stops it).
    let node = target.path().join("null");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .open(&node)
        .map(drop);
    unmount_pool(target_str).unwrap();
    let line = line.expect("the pool is not in mountinfo");
    let opts: Vec<&str> = line.split_whitespace().nth(5).unwrap().split(',').collect();
    assert!(
        opts.contains(&"nosuid") && opts.contains(&"nodev"),
        "{line}"
    );
    let e = opened.expect_err("a device node on the pool opened");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
}
