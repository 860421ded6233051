//! The cgroup v2 backend on a real cgroup2 mount. This hybrid host binds its
//! controllers to v1, so the v2 limits are unit-tested on plain files; here the kernel
//! checks the rest: creating the cgroup, moving a process in, usage, cgroup.kill, rmdir.

mod common;
use common::*;
use nix::mount::{mount, MsFlags};
use std::process::Command;
use zone::cgroups::{Hierarchy, Limits};

/// Runs `f` on a cgroup2 hierarchy mounted at a temp dir, in a thread of its own that
/// unshared its mount namespace (the mount stays private to it).
fn on_private_cgroup2(f: impl FnOnce(&std::path::Path, &Hierarchy) + Send + 'static) {
    std::thread::spawn(move || {
        zone::rootfs::enter_private_mount_ns().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        mount(
            Some("cgroup2"),
            dir,
            Some("cgroup2"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("mounting cgroup2 (kernel without cgroup v2?)");
        let h = Hierarchy::V2 {
            root: dir.to_path_buf(),
        };
        f(dir, &h);
        let _ = std::fs::remove_dir(dir.join("skerry"));
        nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn v2_backend_on_a_real_cgroup2_mount() {
    require_root();
    on_private_cgroup2(|dir, h| {
        let name = unique("v2test");
        let cg = h.create(&name).unwrap();
        assert!(cg.describe().starts_with("v2:"));
        cg.set_limits(&Limits {
            memory: None,
            cpu_cap: 0,
            pids: None,
        })
        .unwrap();
        let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = sleeper.id() as i32;
        cg.add_process(pid).unwrap();
        assert_eq!(cg.processes().unwrap(), vec![pid]);
        cg.cpu_usage_usec().unwrap();
        cg.remove().unwrap();
        let status = sleeper.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "cgroup.kill did not kill the member"
        );
        assert!(!dir.join("skerry").join(&name).exists());
    });
}

/// A cgroup a killed runtime left behind on v2 is found by name, its processes killed
/// (cgroup.kill) and the directory removed; a name with no cgroup is left alone.
#[test]
fn v2_stale_cgroup_is_killed_and_removed() {
    require_root();
    on_private_cgroup2(|dir, h| {
        let name = unique("v2stale");
        assert_eq!(h.remove_stale(&name).unwrap(), None);
        let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = sleeper.id() as i32;
        // The runtime that made it dies: only the directory and its member remain.
        h.create(&name).unwrap().add_process(pid).unwrap();
        let stale = h.remove_stale(&name).unwrap().expect("the stale cgroup");
        assert_eq!(stale.killed, vec![pid]);
        assert!(stale.cgroup.contains(&name), "{stale:?}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(sleeper.wait().unwrap().signal(), Some(9));
        assert!(!dir.join("skerry").join(&name).exists());
    });
}
