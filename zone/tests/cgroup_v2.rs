//! The cgroup v2 backend on a real cgroup2 mount. This hybrid host binds its
//! controllers to v1, so the v2 limits are unit-tested on plain files; here the kernel
//! checks the rest: creating the cgroup, moving a process in, usage, cgroup.kill, rmdir.

mod common;
use common::*;
use nix::mount::{mount, MsFlags};
use std::process::Command;
use zone::cgroups::{Hierarchy, Limits};

#[test]
fn v2_backend_on_a_real_cgroup2_mount() {
    require_root();
    // unshare(CLONE_NEWNS) in a thread of its own: the mount stays private to it.
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        mount(
            Some("cgroup2"),
            dir.path(),
            Some("cgroup2"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("mounting cgroup2 (kernel without cgroup v2?)");
        let h = Hierarchy::V2 {
            root: dir.path().to_path_buf(),
        };
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
        assert!(!dir.path().join("skerry").join(&name).exists());
        let _ = std::fs::remove_dir(dir.path().join("skerry"));
        nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    })
    .join()
    .unwrap();
}
