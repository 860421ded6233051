//! Zone networking: veths on per-tag bridges, asserted with ping from inside zones.

mod common;
use common::pool::*;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

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
    wait_plugged(&bridge_a, "zone A");

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

/// Gives `rootfs` the script busybox udhcpc configures a nic with, as distributions
/// ship it (Debian builds busybox with /etc/udhcpc/default.script).
fn with_udhcpc_script(rootfs: &Path) {
    let script = rootfs.join("etc/udhcpc/default.script");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr add \"$ip/${mask:-24}\" dev \"$interface\";; esac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A zone serving DHCP (busybox udhcpd) on the bridge of `tag`, from `net`.1, leasing
/// from `net`.100; killed (and checked to leave nothing) when dropped.
struct DhcpServer(std::process::Child);

impl DhcpServer {
    fn start(rootfs: &Path, tag: &str, net: &str) -> DhcpServer {
        let conf = format!(
            "start {net}.100\nend {net}.150\ninterface net0\nlease_file /tmp/leases\noption subnet 255.255.255.0\n"
        );
        let server = Command::new(ZONE)
            // A DHCP server answers from port 67: only a nic allowed to may (antispoof).
            .args(["run", "--rootfs", rootfs.to_str().unwrap()])
            .args(["--net", &format!("{tag}={net}.1/24,allow-dhcp-spoofing"), "--"])
            .args([
                "/bin/sh",
                "-c",
                &format!("trap 'exit 0' TERM; printf '{conf}' > /tmp/udhcpd.conf; touch /tmp/leases; udhcpd -f /tmp/udhcpd.conf & wait"),
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let server = DhcpServer(server);
        wait_plugged(&monitor::default_bridge_name(tag), "the DHCP server zone");
        server
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        let pid = self.0.id();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGTERM,
        );
        let ok = self.0.wait().map(|s| s.success()).unwrap_or(false);
        if !std::thread::panicking() {
            assert!(ok, "the DHCP server zone failed");
            assert_nothing_left(pid);
        }
    }
}

#[test]
fn dhcp_nic_runs_the_images_dhcp_client() {
    require_root();
    let r = busybox_rootfs();
    with_udhcpc_script(r.path());
    let tag = unique("d");
    let _guard = BridgeGuard(monitor::default_bridge_name(&tag));
    let server = DhcpServer::start(r.path(), &tag, "10.232.0");
    // Held to its lease (host/README.md, "DHCP nics"): the leased address reaches the
    // server once `zone run` has put it into the port's rules, another does not.
    let out = sh(
        r.path(),
        &["--net", &format!("{tag}=dhcp")],
        "for i in $(seq 100); do ip -o -4 addr show net0 | grep -q inet && break; sleep 0.1; done; \
         ip -o -4 addr show net0; \
         for i in $(seq 20); do ping -c 1 -W 1 10.232.0.1 >/dev/null && { echo leased=reached; break; }; done; \
         ip addr add 10.232.0.77/24 dev net0; \
         ping -c 1 -W 2 -I 10.232.0.77 10.232.0.1 >/dev/null && echo foreign=reached; true",
    );
    drop(server);
    assert!(
        out.contains("inet 10.232.0.1"),
        "no DHCP lease on net0: {out:?}"
    );
    assert!(
        out.contains("leased=reached"),
        "the leased address is not let through: {out:?}"
    );
    assert!(
        !out.contains("foreign=reached"),
        "an address never leased got through: {out:?}"
    );
}

/// A nic with `ip="dhcp"` added to a running zone (a `Reload`) gets the image's DHCP
/// client as the zone's own nics do at its start: a lease, from a client that is the
/// zone init's child, in the zone's cgroup, as zone root, writing to the zone's console.
#[test]
fn a_dhcp_nic_added_live_gets_its_client() {
    require_root();
    let tag = unique("v");
    let _guard = BridgeGuard(monitor::default_bridge_name(&tag));
    let pool = Pool::new(&["/bin/sh", "-c", "sleep 600 & wait"]);
    with_udhcpc_script(pool.image());
    let _server = DhcpServer::start(pool.image(), &tag, "10.238.0");
    let mut child = pool.spawn();
    let _monitor = MonitorGuard(&pool);
    let st = pool.wait_running();
    let zpid = st.instance_pid.expect("the zone init's pid");
    let mut config = pool.config.clone();
    config
        .spec
        .nics
        .push(spec::Nic::new("net0", tag, spec::IpConfig::Dhcp));
    pool.save_config(&config);
    let (resp, _) = pool.request(monitor::MonitorRequest::Reload);
    assert!(
        resp.ok
            && resp.message.contains("nic net0 added")
            && resp.message.contains("its DHCP client started"),
        "{resp:?}"
    );
    let fib = || std::fs::read_to_string(format!("/proc/{zpid}/net/fib_trie")).unwrap();
    wait_for("a DHCP lease on the added nic", || {
        fib().contains("10.238.0.1").then_some(())
    });
    // The monitor holds the nic to its lease: the leased address reaches the server,
    // another does not.
    let in_zone = |args: &[&str]| {
        Command::new("nsenter")
            .args(["-t", &zpid.to_string(), "-n"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("nsenter (util-linux)")
            .success()
    };
    wait_for("the leased address to reach the server", || {
        in_zone(&["ping", "-c", "1", "-W", "1", "10.238.0.1"]).then_some(())
    });
    assert!(in_zone(&[
        "ip",
        "addr",
        "add",
        "10.238.0.77/24",
        "dev",
        "net0"
    ]));
    assert!(
        !in_zone(&[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-I",
            "10.238.0.77",
            "10.238.0.1"
        ]),
        "an address never leased got through"
    );
    // The client: the zone init's child (not the monitor's), confined as the zone is.
    let status = |pid: &str, key: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            })
            .unwrap_or_default()
    };
    let client: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|pid| status(pid, "Name:") == "udhcpc")
        .filter(|pid| status(pid, "PPid:") == zpid.to_string())
        .collect();
    assert_eq!(
        client.len(),
        1,
        "no udhcpc whose parent is the zone init {zpid}"
    );
    let c = &client[0];
    assert_eq!(
        status(c, "Uid:"),
        pool.config.id_range_start.to_string(),
        "not zone root"
    );
    let cgroup = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(
        cgroup(c),
        cgroup(&zpid.to_string()),
        "not in the zone's cgroups"
    );
    assert_eq!(status(c, "Seccomp:"), "2", "no seccomp filter");
    assert_eq!(status(c, "NoNewPrivs:"), "1");
    let console = monitor::console_log_path(pool.dir(), &pool.config.uuid);
    wait_for("udhcpc's words on the zone's console", || {
        std::fs::read_to_string(&console)
            .unwrap_or_default()
            .contains("udhcpc")
            .then_some(())
    });
    pool.stop(&mut child);
}

/// A firewall changed in a running zone's config takes effect at its `Reload`, without
/// a restart: the port allowed before is refused after, the one refused is allowed,
/// and with the firewall removed both answer.
#[test]
fn a_firewall_change_applies_to_the_running_zone() {
    require_root();
    let tag = unique("f");
    let _guard = BridgeGuard(monitor::default_bridge_name(&tag));
    let allow = |port: u16| spec::Firewall {
        rules: vec![spec::FirewallRule {
            proto: spec::FirewallProto::Tcp,
            ports: Some((port, port)),
            from: None,
        }],
    };
    let mut pool = Pool::new(&[
        "/bin/sh",
        "-c",
        "echo up > /tmp/i; httpd -p 8001 -h /tmp; httpd -p 8002 -h /tmp; sleep 600 & wait",
    ]);
    pool.config.spec.nics.push(spec::Nic::new(
        "net0",
        tag.clone(),
        spec::IpConfig::Static {
            addr: "10.239.0.1".parse().unwrap(),
            prefix: 24,
        },
    ));
    pool.config.spec.firewall = Some(allow(8001));
    pool.save_config(&pool.config);
    let mut child = pool.spawn();
    let _monitor = MonitorGuard(&pool);
    let zpid = pool.wait_running().instance_pid;
    // Which of the zone's two web servers a zone beside it reaches (busybox's nc:
    // Debian's static busybox wget crashes).
    let probe = || {
        let out = sh(
            pool.image(),
            &["--net", &format!("{tag}=10.239.0.2/24")],
            "for p in 8001 8002; do printf 'GET /i HTTP/1.0\\r\\n\\r\\n' | nc -w 2 10.239.0.1 $p 2>/dev/null | grep -q '^up' && echo $p; done; true",
        );
        out.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // The servers daemonize at the zone's start: wait for the allowed one.
    wait_for("the zone's allowed web server", || {
        (probe() == ["8001"]).then_some(())
    });
    let reload = |firewall: Option<spec::Firewall>| {
        let mut config = pool.config.clone();
        config.spec.firewall = firewall;
        pool.save_config(&config);
        let (resp, _) = pool.request(monitor::MonitorRequest::Reload);
        assert!(resp.ok, "{resp:?}");
        resp.message
    };
    let note = reload(Some(allow(8002)));
    assert!(note.contains("firewall applied on net0"), "{note}");
    assert_eq!(probe(), ["8002"], "the firewall did not change");
    let note = reload(None);
    assert!(note.contains("firewall removed on net0"), "{note}");
    assert_eq!(probe(), ["8001", "8002"], "the firewall is still on");
    assert_eq!(pool.status().instance_pid, zpid, "the zone was restarted");
    pool.stop(&mut child);
}
