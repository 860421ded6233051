//! What the runtime keeps from a zone beyond namespaces, caps and seccomp: the overlay
//! is nosuid and nodev (a device node in an image is dead), the zone's cgroup opens
//! only the standard devices, and the runtime's binary cannot be reopened for writing
//! through /proc/PID/exe (the CVE-2019-5736 pattern).

mod common;

use common::{busybox_rootfs, require_root, sh, ZONE};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[test]
fn a_device_node_in_the_image_cannot_be_opened_and_the_root_is_nosuid() {
    require_root();
    let r = busybox_rootfs();
    // The null device itself: allowed by the device cgroup, so only nodev stops it.
    nix::sys::stat::mknod(
        &r.path().join("image-null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let out = sh(
        r.path(),
        &[],
        "(echo x > /image-null) 2>&1 && echo WROTE; (echo x > /dev/null) && echo DEVNULL; \
         grep ' / / ' /proc/self/mountinfo",
    );
    assert!(!out.contains("WROTE"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(out.contains("DEVNULL"), "{out}");
    let root = out.lines().find(|l| l.contains(" / / ")).unwrap();
    let opts = root.split_whitespace().nth(5).unwrap();
    assert!(
        opts.split(',').any(|o| o == "nosuid") && opts.split(',').any(|o| o == "nodev"),
        "{root}"
    );
}

/// `zone run` of `script` on `rootfs` with `zone`; waits for its first line of output.
fn start_zone(zone: &Path, rootfs: &Path, script: &str) -> Child {
    let mut child = Command::new(zone)
        .args(["run", "--rootfs", rootfs.to_str().unwrap(), "--"])
        .args(["/bin/sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "up", "the zone did not start");
    child
}

/// The zone `run-PID`'s cgroup that controls devices: v1 `devices` hierarchy here, the
/// cgroup2 directory on a pure v2 node.
fn device_cgroup(pid: u32) -> PathBuf {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let name = format!("skerry/run-{pid}");
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if ctrls.split(',').any(|c| c == "devices") {
            return Path::new("/sys/fs/cgroup/devices")
                .join(path.trim_start_matches('/'))
                .join(name);
        }
    }
    Path::new("/sys/fs/cgroup").join(name)
}

#[test]
fn the_zones_cgroup_opens_only_the_standard_devices() {
    require_root();
    let r = busybox_rootfs();
    let mut zone = start_zone(Path::new(ZONE), r.path(), "echo up; sleep 20");
    let dir = device_cgroup(zone.id());
    // A host root shell put into the zone's cgroup: capabilities do not matter to the
    // device cgroup, only the device.
    let mut probe = Command::new("sh")
        .args([
            "-c",
            "read go; (: < /dev/kmsg) && echo KMSG; (: < /dev/mem) && echo MEM; \
             (: > /dev/null) && echo NULL",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let joined = std::fs::write(dir.join("cgroup.procs"), probe.id().to_string());
    probe.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = probe.wait_with_output().unwrap();
    let _ = zone.kill();
    let _ = zone.wait();
    joined.unwrap_or_else(|e| panic!("joining {}: {e}", dir.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains("KMSG") && !said.contains("MEM"), "{said}");
    assert!(said.contains("Operation not permitted"), "{said}");
    assert!(said.contains("NULL"), "{said}");
}

#[test]
fn the_runtime_binary_cannot_be_reopened_for_writing_through_proc_exe() {
    require_root();
    // A copy of the binary: were the protection missing, only the copy is at stake.
    let bin = tempfile::tempdir().unwrap();
    let zone = bin.path().join("zone");
    std::fs::copy(ZONE, &zone).unwrap();
    std::fs::set_permissions(&zone, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = busybox_rootfs();
    let mut child = start_zone(&zone, r.path(), "echo up; sleep 1");
    // The attacker's half: an O_PATH handle on the runtime's exe, kept past its exit.
    let exe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{}/exe", child.id()))
        .unwrap();
    assert!(child.wait().unwrap().success());
    let reopen = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    match reopen {
        Ok(_) => panic!("the zone binary was reopened for writing through /proc/PID/exe"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}"),
    }
    // And the file on the host is still writable by its owner: only the runtime's view
    // of it is read-only.
    assert!(std::fs::OpenOptions::new().write(true).open(&zone).is_ok());
}
