//! Tenant isolation on a real bridge: an attacker, a victim and a probe, each a
//! network namespace plugged by the zone runtime's own nic code (`zone::net::setup`:
//! rules, veth, bridge, addresses), send and receive raw frames crafted with scapy
//! (tests/deps/zone.txt). What the probe captures says which frames the host let
//! through. An HVM's tap gets the same rules by name before it is opened.

mod common;
use common::*;
use spec::{Firewall, FirewallProto, FirewallRule, IpConfig, Nic, NicAllow};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use zone::net::NicPlan;

const FRAMES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/isolation/frames.py");
/// Debian's python3, where python3-scapy installs.
const PYTHON: &str = "/usr/bin/python3";

/// A network namespace held open by a sleeping process, with nics plugged the way a
/// zone's are; unplugged and killed on drop.
struct Netns {
    child: Child,
    plans: Vec<NicPlan>,
}

impl Netns {
    fn new() -> Netns {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "300"])
            .spawn()
            .expect("unshare (util-linux)");
        // unshare execs sleep once the namespace is made: wait for that.
        let me = std::fs::read_link("/proc/self/ns/net").unwrap();
        let path = format!("/proc/{}/ns/net", child.id());
        wait_for("the new netns", || {
            std::fs::read_link(&path).ok().filter(|ns| *ns != me)
        });
        Netns {
            child,
            plans: vec![],
        }
    }

    fn plug(&mut self, plan: NicPlan) {
        let port = plan.host_if.clone();
        self.try_plug(plan)
            .unwrap_or_else(|e| panic!("plugging {port}: {e}"));
    }

    fn try_plug(&mut self, plan: NicPlan) -> zone::error::Result<()> {
        zone::net::setup(self.child.id() as i32, std::slice::from_ref(&plan))?;
        self.plans.push(plan);
        Ok(())
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.child.id()))
            .arg(PYTHON)
            .arg(FRAMES)
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("nsenter + python3");
        assert!(
            out.status.success(),
            "frames.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `args` in the background and waits for its "ready" line.
    fn start(&self, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
        let mut child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("nsenter + python3");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "frames.py {args:?} did not start");
        (child, out)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        zone::net::teardown(&self.plans);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn nic(tag: &str, ip: &str) -> Nic {
    let (addr, prefix) = spec::format::parse_cidr(ip).unwrap();
    Nic {
        name: "net0".into(),
        tag: tag.into(),
        ip: IpConfig::Static { addr, prefix },
        gateway: None,
        mtu: None,
        mac: None,
        vlan: 0,
        allow: NicAllow::default(),
    }
}

/// A distinct fake instance uuid per namespace (the host port is named after it).
fn uuid(n: u32) -> String {
    format!(
        "{:08x}-0000-4000-8000-000000000000",
        std::process::id().wrapping_shl(4) | n
    )
}

fn plan(n: u32, nic: &Nic, bridge: &str, firewall: Option<Firewall>) -> NicPlan {
    NicPlan::new(&uuid(n), 0, nic, bridge.into(), firewall)
}

fn mac_text(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// Sends `frames` from `from` while `probe` listens; returns the markers it saw.
fn captured(from: &Netns, probe: &Netns, frames: &serde_json::Value, words: &[&str]) -> String {
    let (child, out) = probe.start(&["sniff", "net0", "8", &words.join(",")]);
    from.run(&["send", "net0", &frames.to_string()]);
    let seen: Vec<String> = out.lines().map(Result::unwrap).collect();
    let mut child = child;
    assert!(child.wait().unwrap().success());
    seen.join(" ")
}

#[test]
fn antispoof_drops_forged_frames_and_lets_the_instances_own_through() {
    require_root();
    let tag = unique("i");
    let bridge = monitor::default_bridge_name(&tag);
    let _guard = BridgeGuard(bridge.clone());
    let (mut attacker, mut victim, mut probe) = (Netns::new(), Netns::new(), Netns::new());
    let a = plan(1, &nic(&tag, "10.232.0.1/24"), &bridge, None);
    let mut lax_nic = nic(&tag, "10.232.0.3/24");
    // The probe may do anything: its own rules must not hide what reaches it.
    lax_nic.allow = NicAllow {
        ip_spoofing: true,
        mac_spoofing: true,
        dhcp_spoofing: true,
        restricted_traffic: true,
    };
    let (a_mac, a_ll) = (
        mac_text(a.mac),
        host::isolation::link_local(a.mac).to_string(),
    );
    attacker.plug(a);
    victim.plug(plan(2, &nic(&tag, "10.232.0.2/24"), &bridge, None));
    probe.plug(plan(3, &lax_nic, &bridge, None));

    let frames = serde_json::json!([
        {"kind": "udp", "marker": "own-ip", "mac": a_mac, "src": "10.232.0.1", "dst": "10.232.0.3"},
        {"kind": "udp", "marker": "foreign-ip", "mac": a_mac, "src": "10.232.0.99", "dst": "10.232.0.3"},
        {"kind": "udp", "marker": "victim-ip", "mac": a_mac, "src": "10.232.0.2", "dst": "10.232.0.3"},
        {"kind": "udp", "marker": "foreign-mac", "mac": "02:00:de:ad:be:ef", "src": "10.232.0.1", "dst": "10.232.0.3"},
        {"kind": "arp", "marker": "-", "mac": a_mac, "src": "10.232.0.1"},
        {"kind": "arp", "marker": "-", "mac": a_mac, "src": "10.232.0.2"},
        {"kind": "dhcp-offer", "marker": "dhcp-offer", "mac": a_mac, "src": "10.232.0.1"},
        {"kind": "ra", "marker": "router-adv", "mac": a_mac, "src": a_ll},
        {"kind": "udp6", "marker": "own-v6", "mac": a_mac, "src": a_ll, "dst": "ff02::1"},
        {"kind": "udp6", "marker": "foreign-v6", "mac": a_mac, "src": "fe80::bad", "dst": "ff02::1"},
        {"kind": "vlan", "marker": "tagged", "mac": a_mac, "vlan": 7, "src": "10.232.0.1", "dst": "10.232.0.3"},
        // All but UDP and ICMPv6 meet the fast path's one lookup of port, MAC and
        // source: TCP, ICMP, GRE (47) here. (No marker may hold another: the sniffer
        // looks for each in every payload.)
        {"kind": "tcp", "marker": "tcpown", "mac": a_mac, "src": "10.232.0.1", "dst": "10.232.0.3"},
        {"kind": "tcp", "marker": "tcpvictim", "mac": a_mac, "src": "10.232.0.2", "dst": "10.232.0.3"},
        {"kind": "tcp", "marker": "tcpmac", "mac": "02:00:de:ad:be:ef", "src": "10.232.0.1", "dst": "10.232.0.3"},
        {"kind": "icmp", "marker": "icmpown", "mac": a_mac, "src": "10.232.0.1", "dst": "10.232.0.3"},
        {"kind": "icmp", "marker": "icmpforeign", "mac": a_mac, "src": "10.232.0.99", "dst": "10.232.0.3"},
        {"kind": "tcp6", "marker": "tcp6own", "mac": a_mac, "src": a_ll, "dst": "ff02::1"},
        {"kind": "tcp6", "marker": "tcp6foreign", "mac": a_mac, "src": "fe80::bad", "dst": "ff02::1"},
        {"kind": "tcp6", "marker": "tcp6mac", "mac": "02:00:de:ad:be:ef", "src": a_ll, "dst": "ff02::1"},
        {"kind": "proto", "proto": 47, "marker": "greown", "mac": a_mac, "src": "10.232.0.1", "dst": "10.232.0.3"},
        {"kind": "proto", "proto": 47, "marker": "greforeign", "mac": a_mac, "src": "10.232.0.99", "dst": "10.232.0.3"},
        {"kind": "proto", "proto": 47, "marker": "gremac", "mac": "02:00:de:ad:be:ef", "src": "10.232.0.1", "dst": "10.232.0.3"},
        {"kind": "proto6", "proto": 47, "marker": "gre6own", "mac": a_mac, "src": a_ll, "dst": "ff02::1"},
        {"kind": "proto6", "proto": 47, "marker": "gre6foreign", "mac": a_mac, "src": "fe80::bad", "dst": "ff02::1"},
    ]);
    let words = [
        "own-ip",
        "foreign-ip",
        "victim-ip",
        "foreign-mac",
        "dhcp-offer",
        "router-adv",
        "own-v6",
        "foreign-v6",
        "tagged",
        "tcpown",
        "tcpvictim",
        "tcpmac",
        "icmpown",
        "icmpforeign",
        "tcp6own",
        "tcp6foreign",
        "tcp6mac",
        "greown",
        "greforeign",
        "gremac",
        "gre6own",
        "gre6foreign",
    ];
    let seen = captured(&attacker, &probe, &frames, &words);
    let arp_own = format!("arp:10.232.0.1:{a_mac}");
    let arp_victim = format!("arp:10.232.0.2:{a_mac}");
    let own = [
        "own-ip", "own-v6", "tcpown", "icmpown", "tcp6own", "greown", "gre6own",
    ];
    for want in own.iter().copied().chain([arp_own.as_str()]) {
        assert!(
            seen.split(' ').any(|m| m == want),
            "the attacker's own {want} never arrived: {seen}"
        );
    }
    for forged in [
        "foreign-ip",
        "victim-ip",
        "foreign-mac",
        "dhcp-offer",
        "router-adv",
        "foreign-v6",
        "tagged",
        "tcpvictim",
        "tcpmac",
        "icmpforeign",
        "tcp6foreign",
        "tcp6mac",
        "greforeign",
        "gremac",
        "gre6foreign",
        &arp_victim,
    ] {
        assert!(
            !seen.split(' ').any(|m| m == forged),
            "forged {forged} got through: {seen}"
        );
    }
}

#[test]
fn the_switches_lift_their_rules() {
    require_root();
    let tag = unique("s");
    let bridge = monitor::default_bridge_name(&tag);
    let _guard = BridgeGuard(bridge.clone());
    let (mut attacker, mut probe) = (Netns::new(), Netns::new());
    let mut lax = nic(&tag, "10.233.0.1/24");
    lax.allow.ip_spoofing = true;
    lax.allow.dhcp_spoofing = true;
    let a = plan(4, &lax, &bridge, None);
    let a_mac = mac_text(a.mac);
    attacker.plug(a);
    probe.plug(plan(5, &nic(&tag, "10.233.0.3/24"), &bridge, None));
    let frames = serde_json::json!([
        {"kind": "udp", "marker": "foreign-ip", "mac": a_mac, "src": "10.233.0.99", "dst": "10.233.0.3"},
        {"kind": "dhcp-offer", "marker": "dhcp-offer", "mac": a_mac, "src": "10.233.0.1"},
        {"kind": "udp", "marker": "foreign-mac", "mac": "02:00:de:ad:be:ef", "src": "10.233.0.1", "dst": "10.233.0.3"},
    ]);
    let seen = captured(
        &attacker,
        &probe,
        &frames,
        &["foreign-ip", "dhcp-offer", "foreign-mac"],
    );
    assert!(seen.contains("foreign-ip"), "allow-ip-spoofing: {seen}");
    assert!(seen.contains("dhcp-offer"), "allow-dhcp-spoofing: {seen}");
    assert!(
        !seen.contains("foreign-mac"),
        "allow-mac-spoofing is still off: {seen}"
    );
}

/// An `ip="dhcp"` nic without a lease yet: its DHCP client's discover (from 0.0.0.0)
/// gets out, while a foreign MAC, a server's offer and any other IPv4 source from it
/// do not (its leases are its addresses: zone/tests/net.rs holds one to its lease).
#[test]
fn a_dhcp_nic_can_ask_for_a_lease_but_not_serve_one_or_change_its_mac() {
    require_root();
    let tag = unique("d");
    let bridge = monitor::default_bridge_name(&tag);
    let _guard = BridgeGuard(bridge.clone());
    let (mut client, mut probe) = (Netns::new(), Netns::new());
    let mut dhcp = nic(&tag, "10.234.0.1/24");
    dhcp.ip = IpConfig::Dhcp;
    let c = plan(6, &dhcp, &bridge, None);
    let c_mac = mac_text(c.mac);
    client.plug(c);
    let mut lax = nic(&tag, "10.234.0.3/24");
    lax.allow = NicAllow {
        ip_spoofing: true,
        mac_spoofing: true,
        dhcp_spoofing: true,
        restricted_traffic: true,
    };
    probe.plug(plan(7, &lax, &bridge, None));
    let frames = serde_json::json!([
        {"kind": "dhcp-discover", "marker": "discover", "mac": c_mac},
        {"kind": "dhcp-discover", "marker": "foreign-mac", "mac": "02:00:de:ad:be:ef"},
        {"kind": "dhcp-offer", "marker": "dhcp-offer", "mac": c_mac, "src": "10.234.0.1"},
        {"kind": "udp", "marker": "unleased", "mac": c_mac, "src": "10.234.0.1", "dst": "10.234.0.3"},
        {"kind": "tcp", "marker": "tcpunleased", "mac": c_mac, "src": "10.234.0.1", "dst": "10.234.0.3"},
    ]);
    let seen = captured(
        &client,
        &probe,
        &frames,
        &[
            "discover",
            "foreign-mac",
            "dhcp-offer",
            "unleased",
            "tcpunleased",
        ],
    );
    let has = |m: &str| seen.split(' ').any(|s| s == m);
    assert!(
        has("discover"),
        "the DHCP client's discover never arrived: {seen}"
    );
    assert!(!has("foreign-mac"), "a foreign MAC got through: {seen}");
    assert!(!has("dhcp-offer"), "a DHCP offer got through: {seen}");
    assert!(
        !has("unleased") && !has("tcpunleased"),
        "an address it was never leased got through: {seen}"
    );
}

#[test]
fn the_firewall_admits_allowed_ports_and_replies_only() {
    require_root();
    let tag = unique("f");
    let bridge = monitor::default_bridge_name(&tag);
    let _guard = BridgeGuard(bridge.clone());
    let (mut server, mut client) = (Netns::new(), Netns::new());
    let firewall = Firewall {
        rules: vec![
            FirewallRule {
                proto: FirewallProto::Tcp,
                ports: Some((8000, 8080)),
                from: Some(("10.234.0.0".parse().unwrap(), 24)),
            },
            FirewallRule {
                proto: FirewallProto::Tcp,
                ports: Some((7000, 7000)),
                from: Some(("10.99.0.0".parse().unwrap(), 16)),
            },
        ],
    };
    let server_plan = plan(6, &nic(&tag, "10.234.0.1/24"), &bridge, Some(firewall));
    let server_port = server_plan.host_if.clone();
    server.plug(server_plan);
    client.plug(plan(7, &nic(&tag, "10.234.0.2/24"), &bridge, None));
    let (mut listeners, _) = server.start(&["serve", "20", "8080", "9090", "7000"]);
    let (mut outside, _) = client.start(&["serve", "20", "5555"]);
    let allowed = client.run(&["connect", "10.234.0.1", "8080"]);
    let blocked = client.run(&["connect", "10.234.0.1", "9090"]);
    let other_source = client.run(&["connect", "10.234.0.1", "7000"]);
    // Outbound is open, and the reply to it comes back in through the firewall.
    let outbound = server.run(&["connect", "10.234.0.2", "5555"]);
    let _ = listeners.kill();
    let _ = outside.kill();
    let _ = (listeners.wait(), outside.wait());
    assert_eq!(allowed.trim(), "open", "an allowed port must connect");
    assert_eq!(blocked.trim(), "closed", "a port no rule allows must not");
    assert_eq!(
        other_source.trim(),
        "closed",
        "a rule for another source must not admit this one"
    );
    assert_eq!(outbound.trim(), "open", "replies to outbound connections");
    // Unplugging takes the port's rules with it: nothing of the port is left in any
    // of skerry's sets, not its name, not its firewall mark.
    let mark = format!("0x{:08x}", host::isolation::mark_of(&server_port));
    let tables = || -> String {
        [
            ("bridge", "skerry"),
            ("bridge", "skerry_fw"),
            ("inet", "skerry_fw"),
        ]
        .iter()
        .map(|(family, table)| {
            let listed = Command::new("nft")
                .args(["list", "table", family, table])
                .output()
                .unwrap();
            String::from_utf8_lossy(&listed.stdout).into_owned()
        })
        .collect()
    };
    let before = tables();
    assert!(
        before.contains(&server_port) && before.contains(&mark),
        "{before}"
    );
    drop(server);
    let after = tables();
    assert!(
        !after.contains(&server_port) && !after.contains(&mark),
        "{server_port} ({mark}) left behind:\n{after}"
    );
}

#[test]
fn an_hvm_tap_is_filtered_by_rules_installed_before_it_exists() {
    require_root();
    let tag = unique("t");
    let bridge = monitor::default_bridge_name(&tag);
    let _guard = BridgeGuard(bridge.clone());
    let mut probe = Netns::new();
    probe.plug(plan(8, &nic(&tag, "10.235.0.3/24"), &bridge, None));
    // What the vmm monitor does: rules by the tap's name, then the child opens it.
    let guest = nic(&tag, "10.235.0.1/24");
    let tap = monitor::host_ifname(&uuid(9), 0);
    let mac = spec::MacAddr::of_nic(None, &uuid(9), 0).octets();
    let policy = host::isolation::PortPolicy::for_nic(&tap, mac, &guest, None);
    host::isolation::install(&policy).unwrap();
    let file = host::link::open_tap(&tap).unwrap();
    host::link::plug_into_bridge(&tap, &bridge).unwrap();
    // Frames written to the tap are what the guest sends; scapy builds them here.
    let a_mac = mac_text(mac);
    let frames = serde_json::json!([
        {"kind": "udp", "marker": "own-ip", "mac": a_mac, "src": "10.235.0.1", "dst": "10.235.0.3"},
        {"kind": "udp", "marker": "foreign-ip", "mac": a_mac, "src": "10.235.0.99", "dst": "10.235.0.3"},
        {"kind": "udp", "marker": "foreign-mac", "mac": "02:00:de:ad:be:ef", "src": "10.235.0.1", "dst": "10.235.0.3"},
    ]);
    let (child, out) = probe.start(&["sniff", "net0", "8", "own-ip,foreign-ip,foreign-mac"]);
    let bytes = Command::new(PYTHON)
        .args([FRAMES, "bytes", &frames.to_string()])
        .output()
        .unwrap();
    assert!(
        bytes.status.success(),
        "{}",
        String::from_utf8_lossy(&bytes.stderr)
    );
    write_frames(&file, &bytes.stdout);
    let seen: Vec<String> = out.lines().map(Result::unwrap).collect();
    let mut child = child;
    assert!(child.wait().unwrap().success());
    drop(file);
    host::isolation::remove(&tap).unwrap();
    assert!(seen.contains(&"own-ip".to_string()), "{seen:?}");
    assert!(!seen.contains(&"foreign-ip".to_string()), "{seen:?}");
    assert!(!seen.contains(&"foreign-mac".to_string()), "{seen:?}");
}

/// Writes hex frames, one a line, to a tap (IFF_NO_PI: each write is one frame).
fn write_frames(tap: &std::fs::File, hex_lines: &[u8]) {
    use std::io::Write;
    for line in String::from_utf8_lossy(hex_lines).lines() {
        let frame: Vec<u8> = (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
            .collect();
        (&*tap).write_all(&frame).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn vlans_separate_instances_of_one_tag_and_the_uplink_carries_them_tagged() {
    require_root();
    let tag = unique("v");
    let bridge = monitor::default_bridge_name(&tag);
    let _guard = BridgeGuard(bridge.clone());
    host::link::ensure_bridge(&bridge).unwrap();
    // The nic tag's uplink, plugged in before any instance (as init does at boot); its
    // far end sits in a namespace that sees what leaves the node.
    let uplink = format!("{}u", &tag[..tag.len().min(12)]);
    let wire = Netns::new();
    let peer = format!("{uplink}p");
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&[
        "link", "add", &uplink, "type", "veth", "peer", "name", &peer,
    ]);
    let _uplink_guard = BridgeGuard(uplink.clone());
    ip(&["link", "set", &peer, "netns", &wire.child.id().to_string()]);
    host::link::plug_into_bridge(&uplink, &bridge).unwrap();
    let in_wire = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", wire.child.id()))
        .args(["ip", "link", "set", &peer, "up"])
        .status()
        .unwrap();
    assert!(in_wire.success());

    let on_vlan = |ip: &str, vlan: u16| {
        let mut n = nic(&tag, ip);
        n.vlan = vlan;
        n
    };
    let (mut a, mut b, mut c) = (Netns::new(), Netns::new(), Netns::new());
    let pa = plan(10, &on_vlan("10.236.0.1/24", 10), &bridge, None);
    let pb = plan(11, &on_vlan("10.236.0.2/24", 20), &bridge, None);
    let (a_mac, b_mac) = (mac_text(pa.mac), mac_text(pb.mac));
    // The kernel has bridge VLAN filtering when the bridge has the switch for it.
    let filtering = std::path::Path::new("/sys/class/net")
        .join(&bridge)
        .join("bridge/vlan_filtering");
    if !filtering.exists() {
        // A kernel without CONFIG_BRIDGE_VLAN_FILTERING (this development host's; the
        // node's Debian kernel has it) cannot separate VLANs: the instance must then
        // not start at all, and its port must be gone. That is all this host can show.
        let e = a
            .try_plug(pa)
            .expect_err("a VLAN nic plugged without VLAN filtering");
        assert!(
            e.to_string()
                .contains("VLAN filtering: Operation not supported"),
            "{e}"
        );
        assert!(!bridge_ports(&bridge).iter().any(|p| p.starts_with("sk")));
        // Straight to fd 2, which libtest does not capture (eprintln! it does, and
        // would hide the line from a passing run).
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** VLAN SEPARATION NOT TESTED HERE: this kernel has no bridge VLAN \
             filtering ({} is missing). Checked only that a VLAN nic is refused ({e}) \
             and left unplugged. The separation itself is tested on a booted node: \
             tests/e2e/tests/node/vlan.rs. ***\n",
            filtering.display()
        );
        return;
    }
    a.plug(pa);
    b.plug(pb);
    c.plug(plan(12, &on_vlan("10.236.0.3/24", 20), &bridge, None));
    let from_a = serde_json::json!([
        {"kind": "udp", "marker": "from-vlan10", "mac": a_mac, "src": "10.236.0.1", "dst": "10.236.0.3"},
        {"kind": "vlan", "marker": "hop-to-20", "mac": a_mac, "vlan": 20, "src": "10.236.0.1", "dst": "10.236.0.3"},
    ]);
    let from_b = serde_json::json!([
        {"kind": "udp", "marker": "from-vlan20", "mac": b_mac, "src": "10.236.0.2", "dst": "10.236.0.3"},
    ]);
    let words = "from-vlan10,hop-to-20,from-vlan20";
    let (c_sniff, c_out) = c.start(&["sniff", "net0", "8", words]);
    let (w_sniff, w_out) = wire.start(&["sniff", &peer, "8", words]);
    a.run(&["send", "net0", &from_a.to_string()]);
    b.run(&["send", "net0", &from_b.to_string()]);
    let seen_c: Vec<String> = c_out.lines().map(Result::unwrap).collect();
    let seen_wire: Vec<String> = w_out.lines().map(Result::unwrap).collect();
    for mut child in [c_sniff, w_sniff] {
        assert!(child.wait().unwrap().success());
    }
    let has = |seen: &[String], m: &str| seen.iter().any(|s| s == m);
    assert!(has(&seen_c, "from-vlan20"), "same VLAN: {seen_c:?}");
    assert!(!has(&seen_c, "from-vlan10"), "another VLAN: {seen_c:?}");
    assert!(!has(&seen_c, "hop-to-20"), "a forged tag: {seen_c:?}");
    assert!(
        has(&seen_wire, "vlan20:from-vlan20") && has(&seen_wire, "vlan10:from-vlan10"),
        "the uplink carries each VLAN tagged: {seen_wire:?}"
    );
    assert!(!has(&seen_wire, "hop-to-20"), "{seen_wire:?}");
}

#[test]
#[ignore = "br_netfilter kernels (this host's) have no conntrack zones per port (host/README.md, \"Conntrack zones\"); the node's kernel: tests/isolation_node.rs"]
fn a_flow_of_one_tenant_does_not_open_anothers_firewall() {
    require_root();
    // Two nic tags, each with a client at .5 and a server at .9 of the same network:
    // tenants that chose the same addresses. The second tag's server is firewalled.
    let (tag1, tag2) = (unique("c"), unique("d"));
    let (br1, br2) = (
        monitor::default_bridge_name(&tag1),
        monitor::default_bridge_name(&tag2),
    );
    let _guards = (BridgeGuard(br1.clone()), BridgeGuard(br2.clone()));
    let ssh_only = Firewall {
        rules: vec![FirewallRule {
            proto: FirewallProto::Tcp,
            ports: Some((22, 22)),
            from: None,
        }],
    };
    let (mut a1, mut b1, mut a2, mut b2) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    let pa1 = plan(20, &nic(&tag1, "10.239.0.5/24"), &br1, None);
    let pb1 = plan(21, &nic(&tag1, "10.239.0.9/24"), &br1, None);
    let pa2 = plan(22, &nic(&tag2, "10.239.0.5/24"), &br2, None);
    let pb2 = plan(23, &nic(&tag2, "10.239.0.9/24"), &br2, Some(ssh_only));
    let macs = [pa1.mac, pb1.mac, pa2.mac, pb2.mac].map(mac_text);
    a1.plug(pa1);
    b1.plug(pb1);
    a2.plug(pa2);
    b2.plug(pb2);
    let udp =
        |marker: &str, mac: &str, dst_mac: &str, src: &str, dst: &str, sport: u16, dport: u16| {
            serde_json::json!({"kind": "udp", "marker": marker, "mac": mac, "dst_mac": dst_mac,
            "src": src, "dst": dst, "sport": sport, "dport": dport})
        };
    // The first tenant's flow, both ways: conntrack now has it as established.
    let flow = |n: u16| {
        udp(
            &format!("flow{n}"),
            &macs[0],
            &macs[1],
            "10.239.0.5",
            "10.239.0.9",
            4000,
            9999,
        )
    };
    let reply = udp(
        "reply",
        &macs[1],
        &macs[0],
        "10.239.0.9",
        "10.239.0.5",
        9999,
        4000,
    );
    a1.run(&["send", "net0", &serde_json::json!([flow(1)]).to_string()]);
    b1.run(&["send", "net0", &serde_json::json!([reply]).to_string()]);
    // The second tenant's client sends the same packet to its own server, and the
    // same with another source port, which no flow has.
    let words = ["crosstenant", "control"];
    let seen = captured(
        &a2,
        &b2,
        &serde_json::json!([
            udp(
                "crosstenant",
                &macs[2],
                &macs[3],
                "10.239.0.5",
                "10.239.0.9",
                4000,
                9999
            ),
            udp(
                "control",
                &macs[2],
                &macs[3],
                "10.239.0.5",
                "10.239.0.9",
                4001,
                9999
            ),
        ]),
        &words,
    );
    assert!(!seen.contains("control"), "the firewall is on: {seen}");
    assert!(
        !seen.contains("crosstenant"),
        "another tenant's flow opened the firewall: {seen}"
    );
}
