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

/// Where this host mounts cgroup2 (`/sys/fs/cgroup/unified` on a hybrid host).
fn host_cgroup2_mount() -> std::path::PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split_whitespace().nth(4).unwrap().into())
        })
        .expect("this host has no cgroup2 mount")
}

/// On a pure cgroup v2 host (as a node is) the zone gets its own cgroup as a cgroup2
/// mount on /sys/fs/cgroup, delegated: zone root makes sub-cgroups and moves its
/// processes into them, but cannot write the files of its own cgroup that bound it.
/// Everything it made goes with the zone. Run in a mount namespace whose only cgroup
/// mount is cgroup2 on /sys/fs/cgroup, so `zone run` detects a v2 host.
#[test]
fn a_v2_zone_gets_its_cgroup_delegated_on_sys_fs_cgroup() {
    require_root();
    let rootfs = busybox_rootfs();
    let inside = "\
        test -f /sys/fs/cgroup/cgroup.procs && echo cgroupfs-mounted; \
        echo \"own=$(grep ^0:: /proc/self/cgroup)\"; \
        grep -qx 1 /sys/fs/cgroup/cgroup.procs && echo init-listed; \
        mkdir /sys/fs/cgroup/init.scope && echo $$ > /sys/fs/cgroup/init.scope/cgroup.procs \
            && echo \"moved=$(grep ^0:: /proc/self/cgroup)\"; \
        mkdir /sys/fs/cgroup/init.scope/deeper && echo nested-ok; \
        if echo 1 > /sys/fs/cgroup/cgroup.max.descendants; then echo bounds-writable; \
            else echo bounds-protected; fi; \
        if umount /sys/fs/cgroup; then echo unmounted; else echo mount-locked; fi";
    let outer = format!(
        "umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && \
         exec {ZONE} run --rootfs {} -- /bin/sh -c '{inside}'",
        rootfs.path().display()
    );
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &outer])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stdout} {stderr}", out.status);
    for want in [
        "cgroupfs-mounted",
        "own=0::/\n",
        "init-listed",
        "moved=0::/init.scope\n",
        "nested-ok",
        "bounds-protected",
        "mount-locked",
    ] {
        assert!(
            stdout.contains(want),
            "no {want:?} in {stdout:?} (stderr {stderr:?})"
        );
    }
    let cgroup = host_cgroup2_mount().join(format!("skerry/run-{pid}"));
    assert!(
        !cgroup.exists(),
        "{} and its sub-cgroups are left",
        cgroup.display()
    );
}
