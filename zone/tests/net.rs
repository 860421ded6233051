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
        monitor::default_bridge_name(&tag_a),
        monitor::default_bridge_name(&tag_b),
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

#[test]
fn dhcp_nic_runs_the_images_dhcp_client() {
    require_root();
    let r = busybox_rootfs();
    // busybox udhcpc configures the nic through this script, as distributions ship it.
    // (Debian builds busybox with /etc/udhcpc/default.script.)
    let script = r.path().join("etc/udhcpc/default.script");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr add \"$ip/${mask:-24}\" dev \"$interface\";; esac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rootfs = r.path().to_str().unwrap();
    let tag = unique("d");
    let _guard = BridgeGuard(monitor::default_bridge_name(&tag));

    // Zone A serves DHCP (busybox udhcpd) on the bridge.
    let server = Command::new(ZONE)
        // A DHCP server answers from port 67: only a nic allowed to may (antispoof).
        .args(["run", "--rootfs", rootfs, "--net", &format!("{tag}=10.232.0.1/24,allow-dhcp-spoofing"), "--"])
        .args([
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; printf 'start 10.232.0.100\\nend 10.232.0.150\\ninterface net0\\nlease_file /tmp/leases\\noption subnet 255.255.255.0\\n' > /tmp/udhcpd.conf; touch /tmp/leases; udhcpd -f /tmp/udhcpd.conf & wait",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let server_pid = server.id();
    let bridge = monitor::default_bridge_name(&tag);
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridge_ports(&bridge).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the DHCP server zone never plugged in"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = sh(
        r.path(),
        &["--net", &format!("{tag}=dhcp")],
        "for i in $(seq 100); do ip -o -4 addr show net0 | grep -q inet && break; sleep 0.1; done; ip -o -4 addr show net0",
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server_pid as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let mut server = server;
    assert!(server.wait().unwrap().success());
    assert_nothing_left(server_pid);
    assert!(
        out.contains("inet 10.232.0.1"),
        "no DHCP lease on net0: {out:?}"
    );
}
