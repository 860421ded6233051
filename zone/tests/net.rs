//! Zone networking: veths on per-tag bridges, asserted with ping from inside zones.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn zones_on_one_bridge_reach_each_other_and_other_tags_do_not() {
    require_root();
    let r = busybox_rootfs();
    let rootfs = r.path().to_str().unwrap();
    let tag_a = unique("a");
    let tag_b = unique("b");
    let (bridge_a, bridge_b) = (
        spec::monitor::default_bridge_name(&tag_a),
        spec::monitor::default_bridge_name(&tag_b),
    );
    let _guards = (BridgeGuard(bridge_a.clone()), BridgeGuard(bridge_b.clone()));

    // Zone A stays up (its init handles SIGTERM) while the others ping it.
    let a = Command::new(ZONE)
        .args([
            "run",
            "--rootfs",
            rootfs,
            "--net",
            &format!("{tag_a}=10.231.0.1/24"),
            "--",
        ])
        .args([
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; ip -o addr show net0; sleep 60 & wait",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridge_ports(&bridge_a).is_empty() {
        assert!(
            Instant::now() < deadline,
            "zone A never plugged into {bridge_a}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let same = sh(
        r.path(),
        &["--net", &format!("{tag_a}=10.231.0.2/24")],
        "ping -c 1 -W 3 10.231.0.1 >/dev/null; echo ping=$?",
    );
    let other = sh(
        r.path(),
        &["--net", &format!("{tag_b}=10.231.0.3/24")],
        "ping -c 1 -W 1 10.231.0.1 >/dev/null; echo ping=$?",
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let a_pid = a.id();
    let out = a.wait_with_output().unwrap();
    let a_out = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "zone A: {} {a_out}", out.status);
    assert!(
        a_out.contains("net0") && a_out.contains("10.231.0.1/24"),
        "zone A's nic: {a_out}"
    );
    assert_nothing_left(a_pid);
    assert_eq!(
        same.trim(),
        "ping=0",
        "zones on one bridge cannot reach each other"
    );
    assert_eq!(
        other.trim(),
        "ping=1",
        "a zone on another tag reached zone A"
    );
    assert!(
        bridge_ports(&bridge_a).is_empty(),
        "veths left on {bridge_a}: {:?}",
        bridge_ports(&bridge_a)
    );
    assert!(
        bridge_ports(&bridge_b).is_empty(),
        "veths left on {bridge_b}"
    );
}
