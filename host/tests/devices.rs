//! Device restriction on this host's real kernel, as root: the v1 `devices` controller
//! of this hybrid host's hierarchy and a v2 device program attached to a cgroup on the
//! host's cgroup2 mount (a pure v2 node's only way). A task in the cgroup opens
//! /dev/null but not /dev/kmsg, which it opens outside.

use host::cgroup::{Cgroup, Hierarchy, V2Cgroup, STANDARD_DEVICES};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What a shell in `cg` (moved there before it touches a device) says when it opens
/// /dev/kmsg and /dev/null.
fn opens_in(cg: Option<&dyn Cgroup>) -> String {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read go; (: < /dev/kmsg) && echo kmsg-opened; (: > /dev/null) && echo null-opened",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(cg) = cg {
        cg.add_process(child.id() as i32).unwrap();
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_restricted(what: &str, said: &str) {
    assert!(!said.contains("kmsg-opened"), "{what}: {said}");
    assert!(said.contains("Operation not permitted"), "{what}: {said}");
    assert!(said.contains("null-opened"), "{what}: {said}");
}

#[test]
fn outside_any_restriction_both_open() {
    assert!(nix::unistd::getuid().is_root(), "device tests need root");
    let said = opens_in(None);
    assert!(
        said.contains("kmsg-opened") && said.contains("null-opened"),
        "{said}"
    );
}

#[test]
fn the_v1_devices_controller_allows_only_the_list() {
    assert!(nix::unistd::getuid().is_root(), "device tests need root");
    let h = Hierarchy::detect().unwrap();
    let Hierarchy::V1 { controllers } = &h else {
        panic!("this test is for a hybrid host's v1 hierarchy; the v2 test covers nodes");
    };
    assert!(
        controllers.contains_key("devices"),
        "no v1 devices hierarchy: {controllers:?}"
    );
    let name = format!("skhost-dev-{}", std::process::id());
    let cg = h.create(&name).unwrap();
    cg.restrict_devices(&STANDARD_DEVICES).unwrap();
    let said = opens_in(Some(cg.as_ref()));
    cg.remove().unwrap();
    assert_restricted("v1", &said);
}

/// The host's cgroup2 mount (`/sys/fs/cgroup/unified` here, `/sys/fs/cgroup` on a node).
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .expect("no cgroup2 mount on this host");
    PathBuf::from(line.split_whitespace().nth(4).unwrap())
}

#[test]
fn a_v2_device_program_allows_only_the_list() {
    assert!(nix::unistd::getuid().is_root(), "device tests need root");
    let root = cgroup2_mount();
    let name = format!("skhost-dev2-{}", std::process::id());
    let cg = V2Cgroup::create(&root, &name).unwrap();
    cg.restrict_devices(&STANDARD_DEVICES).unwrap();
    let said = opens_in(Some(&cg));
    cg.remove().unwrap();
    assert_restricted("v2", &said);
}
