//! An image cannot aim the runtime's mounts at the host: a mount point that is a
//! symlink (`proc -> /zones`, `dev -> /`) makes the zone fail to start with an error
//! naming it, and nothing is mounted or created where the symlink points.

mod common;

use common::{busybox_rootfs, require_root, zone_run};
use std::path::Path;

/// Whether `path` is a mount point in this (the host's) mount namespace.
fn is_mount_point(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(path))
}

#[test]
fn a_mount_point_symlink_fails_the_zone_and_changes_nothing() {
    require_root();
    for dir in ["proc", "sys", "dev"] {
        let r = busybox_rootfs();
        // Where the image points: one host directory that exists (a mount there would
        // show, as would files created in it) and one that does not (it must not be
        // created).
        let host = tempfile::tempdir().unwrap();
        let target = host.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::remove_dir(r.path().join(dir)).unwrap();
        std::os::unix::fs::symlink(&target, r.path().join(dir)).unwrap();
        let (out, _) = zone_run(
            &["--rootfs", r.path().to_str().unwrap()],
            &["/bin/echo", "started"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{dir}: the zone started: {stderr}");
        assert!(
            stderr.contains(&format!("/{dir} in the zone image is a symlink")),
            "{dir}: {stderr}"
        );
        assert!(!is_mount_point(&target), "{dir}: mounted on the host");
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "{dir}: files created on the host"
        );

        // And a target that does not exist is not created.
        let r = busybox_rootfs();
        let missing = host.path().join("missing/deeper");
        std::fs::remove_dir(r.path().join(dir)).unwrap();
        std::os::unix::fs::symlink(&missing, r.path().join(dir)).unwrap();
        let (out, _) = zone_run(
            &["--rootfs", r.path().to_str().unwrap()],
            &["/bin/echo", "started"],
        );
        assert!(!out.status.success(), "{dir}: the zone started");
        assert!(
            !host.path().join("missing").exists(),
            "{dir}: created on the host"
        );
    }
}
