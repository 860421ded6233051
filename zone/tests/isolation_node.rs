//! Tenant isolation on the node's own kernel, whose bridge family tracks connections
//! itself (this machine's kernel has no nf_conntrack_bridge, nor bridge VLAN
//! filtering): zone/bench/isolation-node boots it in a QEMU TCG VM and runs
//! zone/examples/isolation_bench.rs's `tenants` check there. Two tenants on two
//! VLANs of one nic tag and a third on another tag chose the same addresses; one's
//! flow must not open the others' firewalls, and each firewall must still let in
//! what it allows and the replies to its instance's own flows, from an instance and
//! from an uplink. Over UDP, which the antispoof rules' fast path leaves to the
//! class chains, and over raw IP protocol 253, which takes it (its lookup sets the
//! zone).

mod common;
use common::*;
use std::process::Command;

#[test]
fn on_the_nodes_kernel_tenants_with_the_same_addresses_do_not_share_connections() {
    require_root();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/isolation-node");
    let out = Command::new(script)
        .arg("tenants")
        .output()
        .expect("zone/bench/isolation-node");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // Every check ran, and passed (the script fails on any FAIL).
    let oks = text
        .lines()
        .filter(|l| l.trim_start().starts_with("ok:"))
        .count();
    // 11 over UDP, 9 over IP protocol 253 (the firewall's rule is UDP's, and
    // without ports a new flow from the uplink's host is not told from its reply).
    assert_eq!(oks, 20, "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}
