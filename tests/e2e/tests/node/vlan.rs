//! Issue 14, VLAN half, on the booted node (the development host's kernel has no
//! bridge VLAN filtering; the node's Debian kernel has): zones on nic tag `admin`
//! with `vlan=` values, beside `hello`, which is untagged.

use super::{sh, SHELL};
use e2e::node::Node;
use std::path::Path;

/// The zones of this check: alias, address on `admin`, VLAN.
pub const ZONES: [(&str, &str, u16); 3] = [
    ("vlan10a", "10.88.0.41", 10),
    ("vlan10b", "10.88.0.42", 10),
    ("vlan20", "10.88.0.43", 20),
];

/// hello's address (untagged on `admin`, set by the main test's manifest).
const UNTAGGED: &str = "10.88.0.11";

/// The node-side uplink the check plugs into `sk-admin` (this node has one nic,
/// eth0, its own management link: no nic tag has an uplink).
const UPLINK: &str = "skup0";

/// Writes the manifests of [`ZONES`] into `dir`.
pub fn write_manifests(dir: &Path) {
    for (alias, ip, vlan) in ZONES {
        std::fs::write(
            dir.join(format!("{alias}.kdl")),
            format!(
                "zone {alias} {{\n    image \"busybox@1.36\"\n    \
                 nic net0 tag=\"admin\" ip=\"{ip}/24\" vlan={vlan}\n}}\n"
            ),
        )
        .unwrap();
    }
}

/// `zlogin FROM ping TO`: whether an answer came back (3 tries, 2 s each).
fn reaches(node: &mut Node, from: &str, to: &str) -> bool {
    let cmd = format!("zlogin {from} ping -c 3 -W 2 {to}");
    let (out, rc) = node
        .shell(&cmd, SHELL)
        .unwrap_or_else(|e| panic!("`{cmd}`: {e}"));
    let answered = rc == 0 && !out.contains(" 0 packets received");
    println!("{cmd}: {}", if answered { "answered" } else { "no answer" });
    answered
}

/// The instance port of `alias` (monitor::host_ifname of its uuid, nic 0).
fn port_of(ids: &str, alias: &str) -> String {
    let uuid = ids
        .lines()
        .find_map(|l| l.trim().strip_suffix(&format!(":{alias}")))
        .unwrap_or_else(|| panic!("no {alias} in `vmadm list -p -o uuid,alias`:\n{ids}"));
    let hex: String = uuid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    format!("sk{hex}n0")
}

/// `bridge vlan show dev PORT`'s entries as (vid, flags) text, e.g. ("10", "PVID
/// Egress Untagged").
fn vlans_of(node: &mut Node, port: &str) -> Vec<(String, String)> {
    let out = sh(node, &format!("bridge vlan show dev {port}"), SHELL);
    out.lines()
        .filter_map(|l| {
            let l = l.strip_prefix(port).unwrap_or(l).trim();
            let (vid, flags) = l.split_once(' ').unwrap_or((l, ""));
            vid.parse::<u16>()
                .ok()
                .map(|_| (vid.to_owned(), flags.trim().to_owned()))
        })
        .collect()
}

/// Restarts zone `alias` and waits until it runs again.
fn restart(node: &mut Node, alias: &str) {
    sh(
        node,
        &format!(
            "vmadm stop {alias} -t 10 && vmadm start {alias} && i=0; \
             until vmadm list -p -o alias,state | grep -qx '{alias}:running'; do \
             i=$((i+1)); [ $i -lt 60 ] || exit 1; sleep 1; done"
        ),
        SHELL * 2,
    );
}

/// Two zones on VLAN 10 reach each other; the zone on VLAN 20 and the untagged
/// `hello` reach neither. With the bridge's VLAN filtering switched off the same
/// pings cross (so they would show a leak); on again, they do not. `bridge vlan show`
/// has each port alone on its VLAN as PVID, untagged; an uplink plugged into the
/// bridge carries the instances' VLANs tagged once they are (re)plugged.
pub fn vlans_separate_zones_on_one_tag(node: &mut Node) {
    let [(a, a_ip, _), (b, b_ip, _), (c, c_ip, _)] = ZONES;
    let filtering = "/sys/class/net/sk-admin/bridge/vlan_filtering";
    let on = sh(node, &format!("cat {filtering}"), SHELL);
    assert_eq!(on.trim(), "1", "sk-admin has VLAN filtering off");
    let ids = sh(node, "vmadm list -p -o uuid,alias", SHELL);
    for (alias, _, vid) in ZONES {
        let port = port_of(&ids, alias);
        let vlans = vlans_of(node, &port);
        assert_eq!(
            vlans,
            vec![(vid.to_string(), "PVID Egress Untagged".to_owned())],
            "{alias}'s port {port} is not alone on VLAN {vid}, untagged"
        );
    }
    let hello = port_of(&ids, "hello");
    assert_eq!(
        vlans_of(node, &hello),
        vec![("1".to_owned(), "PVID Egress Untagged".to_owned())],
        "hello's port {hello} is not on the default VLAN 1"
    );
    let separated = |node: &mut Node| {
        [
            (a, c_ip),
            (c, a_ip),
            (a, UNTAGGED),
            ("hello", c_ip),
            ("hello", b_ip),
        ]
        .into_iter()
        .filter(|(from, to)| reaches(node, from, to))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect::<Vec<_>>()
    };
    assert!(reaches(node, a, b_ip), "{a} does not reach {b} on VLAN 10");
    assert!(reaches(node, b, a_ip), "{b} does not reach {a} on VLAN 10");
    let leaks = separated(node);
    assert!(leaks.is_empty(), "VLANs leak: {leaks:?}");
    // The negative control: the same pings without filtering cross.
    sh(node, &format!("echo 0 > {filtering}"), SHELL);
    let crossed = separated(node);
    sh(node, &format!("echo 1 > {filtering}"), SHELL);
    assert_eq!(
        crossed.len(),
        5,
        "without VLAN filtering only {crossed:?} crossed: the pings prove nothing"
    );
    let leaks = separated(node);
    assert!(
        leaks.is_empty(),
        "VLANs leak after filtering is back: {leaks:?}"
    );

    // Uplink: none here (node.kdl names no link for `admin`, and eth0 is the node's
    // own link). One plugged in now gets the VLANs of the ports plugged after it.
    sh(
        node,
        &format!("ip link add {UPLINK} type veth && ip link set {UPLINK} up && brctl addif sk-admin {UPLINK}"),
        SHELL,
    );
    println!("{}", sh(node, "bridge vlan show", SHELL));
    restart(node, b);
    restart(node, c);
    let trunk = vlans_of(node, UPLINK);
    println!("{UPLINK}: {trunk:?}");
    for vid in ["10", "20"] {
        assert!(
            trunk.iter().any(|(v, flags)| v == vid && flags.is_empty()),
            "the uplink {UPLINK} does not carry VLAN {vid} tagged: {trunk:?}"
        );
    }
    assert!(reaches(node, b, a_ip), "{b} lost {a} after its restart");
    assert!(
        !reaches(node, c, a_ip),
        "{c} reaches VLAN 10 after its restart"
    );
}
