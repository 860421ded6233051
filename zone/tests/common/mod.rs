//! Shared helpers of the zone integration tests: they run the real `zone` binary as
//! root against the real kernel, on a busybox rootfs built here.

#![allow(dead_code)]

pub mod pool;
pub mod shell;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `zone` binary under test.
pub const ZONE: &str = env!("CARGO_BIN_EXE_zone");

/// Fails (never skips) when not root: these tests exercise namespaces and cgroups.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the zone integration tests need root (namespaces, cgroups, mounts): run them as root"
    );
}

/// The static busybox of Debian's busybox-static package.
fn busybox() -> PathBuf {
    let p = PathBuf::from("/bin/busybox");
    assert!(
        p.exists(),
        "/bin/busybox is missing: install busybox-static (tests/deps/zone.txt)"
    );
    let out = Command::new(&p)
        .arg("--list")
        .output()
        .expect("running /bin/busybox --list");
    assert!(out.status.success(), "/bin/busybox --list failed");
    p
}

/// A fresh busybox rootfs (like an image's unpacked rootfs) in a temp dir, owned by
/// host root as an imported image would be.
pub fn busybox_rootfs() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("zone-test-rootfs")
        .tempdir()
        .unwrap();
    let root = dir.path();
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = busybox();
    std::fs::copy(&bb, root.join("bin/busybox")).unwrap();
    let list = Command::new(&bb).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("/bin/busybox", link).unwrap();
        }
    }
    std::fs::write(root.join("etc/motd"), "from the image\n").unwrap();
    dir
}

/// `zone run` with `args` (before `--`) and `cmd`; returns the output and its pid.
pub fn zone_run(args: &[&str], cmd: &[&str]) -> (Output, u32) {
    let child = Command::new(ZONE)
        .arg("run")
        .args(args)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning zone run");
    let pid = child.id();
    let out = child.wait_with_output().expect("waiting for zone run");
    (out, pid)
}

/// `zone run --rootfs R [args] -- /bin/sh -c script`, asserting success; stdout.
pub fn sh(rootfs: &Path, args: &[&str], script: &str) -> String {
    let mut all = vec!["--rootfs", rootfs.to_str().unwrap()];
    all.extend_from_slice(args);
    let (out, pid) = zone_run(&all, &["/bin/sh", "-c", script]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "zone run failed ({}): stdout {stdout:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(pid);
    stdout
}

/// Directories where a zone's cgroup could be, on this host's layout.
fn cgroup_candidates(name: &str) -> Vec<PathBuf> {
    let mut v = vec![];
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("/"),
        );
        for ctrl in ctrls.split(',') {
            let base = if ctrl.is_empty() {
                PathBuf::from("/sys/fs/cgroup")
            } else {
                Path::new("/sys/fs/cgroup").join(ctrl)
            };
            v.push(
                base.join(path.trim_start_matches('/'))
                    .join("skerry")
                    .join(name),
            );
            v.push(base.join("skerry").join(name));
        }
    }
    v
}

/// After `zone run` (pid `pid`) returned: no cgroup, staging dir or mount of it is left.
pub fn assert_nothing_left(pid: u32) {
    let name = format!("run-{pid}");
    for c in cgroup_candidates(&name) {
        assert!(!c.exists(), "cgroup {} left behind", c.display());
    }
    let stage = std::env::temp_dir().join(format!("zone-run.{pid}"));
    assert!(
        !stage.exists(),
        "staging dir {} left behind",
        stage.display()
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!("zone-run.{pid}")),
        "a mount of zone-run.{pid} is visible on the host"
    );
}

/// Host interfaces whose master is `bridge` (veth ends still plugged in).
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("ip link (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|s| s.split('@').next().unwrap_or(s).to_string())
        })
        .collect()
}

/// Deletes a bridge made by a test (even when the test failed: call from a guard).
/// Waits (10 s at most) until something is plugged into `bridge`: `what`.
pub fn wait_plugged(bridge: &str, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while bridge_ports(bridge).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never plugged into {bridge}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub struct BridgeGuard(pub String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// A short unique token for names (bridges are at most 15 bytes).
pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{:05x}", (std::process::id() ^ n) & 0xfffff)
}
