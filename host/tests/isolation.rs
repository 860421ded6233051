//! host::isolation's bookkeeping against the kernel, as root, in throwaway network
//! namespaces: what a port's install, reinstall and removal leave in the nf_tables
//! sets, read back with `nft -j`. (What the rules do to frames is tested on real
//! bridges in zone/tests/isolation.rs.)

mod common;

use common::Netns;
use host::isolation::{self, IsolationError, PortPolicy};
use spec::{Firewall, FirewallProto, FirewallRule, NicAllow};
use std::collections::HashMap;
use std::process::Command;

fn policy(port: &str, addr: &str, firewall: Option<Firewall>) -> PortPolicy {
    PortPolicy {
        port: port.into(),
        mac: [2, 0x5c, 0, 0, 0, 1],
        addrs: vec![addr.parse().unwrap()],
        dhcp: false,
        allow: NicAllow::default(),
        firewall,
        tag: "admin".into(),
        vlan: 0,
        zone: 0,
    }
}

fn tcp(ports: (u16, u16), from: Option<(&str, u8)>) -> FirewallRule {
    FirewallRule {
        proto: FirewallProto::Tcp,
        ports: Some(ports),
        from: from.map(|(a, p)| (a.parse().unwrap(), p)),
    }
}

/// Every element of every skerry set in `ns`, as nft prints them, by set name.
fn elements(ns: &Netns) -> HashMap<String, Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-j", "list", "ruleset"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut sets = HashMap::new();
    for item in json["nftables"].as_array().unwrap() {
        let Some(set) = item.get("set").or_else(|| item.get("map")) else {
            continue;
        };
        let els: Vec<String> = set["elem"]
            .as_array()
            .map(|a| a.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        sets.insert(set["name"].as_str().unwrap().to_owned(), els);
    }
    sets
}

/// The elements naming `needle` (a port or its mark), over all sets.
fn naming(ns: &Netns, needle: &str) -> Vec<String> {
    let mut found: Vec<String> = elements(ns)
        .into_iter()
        .flat_map(|(set, els)| els.into_iter().map(move |e| format!("{set} {e}")))
        .filter(|e| e.contains(needle))
        .collect();
    found.sort();
    found
}

/// The record of `port` in `ns` (`/run/skerry/ports/COOKIE/PORT`).
fn record_path(ns: &Netns, port: &str) -> std::path::PathBuf {
    let cookie = ns.run(isolation::netns_cookie).unwrap();
    std::path::Path::new(isolation::RECORDS)
        .join(cookie.to_string())
        .join(port)
}

#[test]
fn a_reinstall_replaces_the_old_address_and_a_removal_leaves_nothing() {
    let ns = Netns::new();
    let port = "skrec0n0";
    let p = policy(port, "10.9.0.1", None);
    ns.run(move || isolation::install(&p)).unwrap();
    let addrs = |ns: &Netns| -> Vec<String> {
        naming(ns, port)
            .into_iter()
            .filter(|e| e.starts_with("addr4 "))
            .collect()
    };
    assert_eq!(addrs(&ns).len(), 1);
    assert!(addrs(&ns)[0].contains("10.9.0.1"), "{:?}", addrs(&ns));
    let first = naming(&ns, port);
    // The same policy again changes nothing.
    let p = policy(port, "10.9.0.1", None);
    ns.run(move || isolation::install(&p)).unwrap();
    assert_eq!(naming(&ns, port), first);
    // A new address replaces the old: the old one is no longer allowed.
    let p = policy(port, "10.9.0.2", None);
    ns.run(move || isolation::install(&p)).unwrap();
    assert_eq!(addrs(&ns).len(), 1);
    assert!(addrs(&ns)[0].contains("10.9.0.2"), "{:?}", addrs(&ns));
    assert!(record_path(&ns, port).exists());
    ns.run(move || isolation::remove(port)).unwrap();
    assert_eq!(naming(&ns, port), Vec::<String>::new());
    let mark = format!("{}", isolation::mark_of(port));
    assert_eq!(naming(&ns, &mark), Vec::<String>::new());
    assert!(!record_path(&ns, port).exists());
    // Removing what is not there is no error.
    ns.run(move || isolation::remove(port)).unwrap();
}

#[test]
fn overlapping_firewall_rules_install_and_a_new_firewall_replaces_the_old() {
    let ns = Netns::new();
    let port = "skrec1n0";
    let fw = |rules| Some(Firewall { rules });
    // The kernel refuses overlapping elements of one set: these only install because
    // they are split apart first.
    let p = policy(
        port,
        "10.9.0.1",
        fw(vec![
            tcp((25, 35), Some(("10.1.0.0", 16))),
            tcp((20, 30), Some(("10.0.0.0", 8))),
            tcp((22, 22), None),
            tcp((20, 30), None),
        ]),
    );
    ns.run(move || isolation::install(&p)).unwrap();
    let mark = format!("{}", isolation::mark_of(port));
    let fw_elements = |ns: &Netns| -> Vec<String> {
        naming(ns, &mark)
            .into_iter()
            .filter(|e| e.starts_with("fw"))
            .collect()
    };
    // fw_on; from anywhere 22, 20-21 and 23-30 in fw4 and fw6; 10.0.0.0/8's range
    // is within those; 10.1.0.0/16 keeps 31-35.
    assert_eq!(fw_elements(&ns).len(), 8, "{:#?}", fw_elements(&ns));
    let p = policy(port, "10.9.0.1", fw(vec![tcp((80, 80), None)]));
    ns.run(move || isolation::install(&p)).unwrap();
    let now = fw_elements(&ns);
    assert_eq!(now.len(), 3, "{now:#?}");
    assert!(now.iter().all(|e| !e.contains("\"10.1.0.0\"")), "{now:#?}");
    // No firewall any more: the port leaves fw_on and its ranges go.
    let p = policy(port, "10.9.0.1", None);
    ns.run(move || isolation::install(&p)).unwrap();
    assert_eq!(fw_elements(&ns), Vec::<String>::new());
    ns.run(move || isolation::remove(port)).unwrap();
    assert_eq!(naming(&ns, port), Vec::<String>::new());
}

/// A record holding two candidates (an install that died between its transaction
/// and the record's update): the next install and the removal find the one the
/// kernel holds, whichever it is.
#[test]
fn a_record_left_by_an_interrupted_install_is_still_replaced_and_removed() {
    let ns = Netns::new();
    let port = "skrec2n0";
    let guarded = || {
        let fw = Firewall {
            rules: vec![tcp((25, 35), None)],
        };
        policy(port, "10.9.0.1", Some(fw))
    };
    let path = record_path(&ns, port);
    // The candidate that did not commit: its range overlaps the one the port holds,
    // so the kernel refuses it as long as the held one is there.
    let mark = isolation::mark_of(port);
    let other = format!(
        "bridge addr4 \"{port}\" . 10.9.0.7\ninet fw4_{} 0x{mark:08x} . 6 . 0.0.0.0/0 . 20-30\n",
        mark % isolation::SHARDS
    );
    // Installs `guarded`, then leaves the record as an install dying after its
    // transaction would, the candidate it held first or second.
    let interrupted = |held_first: bool| {
        let p = guarded();
        ns.run(move || isolation::install(&p)).unwrap();
        let held = std::fs::read_to_string(&path).unwrap();
        let record = match held_first {
            false => format!("{other}pending\n{held}"),
            true => format!("{held}pending\n{other}"),
        };
        std::fs::write(&path, record).unwrap();
    };
    for held_first in [false, true] {
        interrupted(held_first);
        let p = policy(port, "10.9.0.3", None);
        ns.run(move || isolation::install(&p)).unwrap();
        let now = naming(&ns, port);
        assert!(now.iter().any(|e| e.contains("10.9.0.3")), "{now:#?}");
        assert!(!now.iter().any(|e| e.contains("10.9.0.1")), "{now:#?}");
        let marked = naming(&ns, &mark.to_string());
        assert!(marked.iter().all(|e| !e.starts_with("fw")), "{marked:#?}");

        interrupted(held_first);
        ns.run(move || isolation::remove(port)).unwrap();
        assert_eq!(naming(&ns, port), Vec::<String>::new());
        assert_eq!(naming(&ns, &mark.to_string()), Vec::<String>::new());
        assert!(!path.exists());
    }
}

/// Two ports whose names hash to one firewall mark: the second is refused (its
/// frames would otherwise get the first port's firewall), and removing it leaves the
/// first port's claim on the mark.
#[test]
fn a_port_whose_mark_collides_with_another_is_refused() {
    let mut seen = HashMap::new();
    let (a, b) = (0u32..)
        .find_map(|i| {
            let name = format!("skc{i:06x}n0");
            seen.insert(isolation::mark_of(&name), name.clone())
                .map(|other| (other, name))
        })
        .unwrap();
    let ns = Netns::new();
    let fw = Some(Firewall::default());
    let (pa, pb) = (
        policy(&a, "10.9.0.1", fw.clone()),
        policy(&b, "10.9.0.2", fw),
    );
    ns.run(move || isolation::install(&pa)).unwrap();
    let err = ns.run(move || isolation::install(&pb)).unwrap_err();
    assert!(matches!(err, IsolationError::Refused { .. }), "{err}");
    assert_eq!(
        naming(&ns, &b),
        Vec::<String>::new(),
        "nothing of {b} stays"
    );
    let b2 = b.clone();
    ns.run(move || isolation::remove(&b2)).unwrap();
    let claim = naming(&ns, &a)
        .into_iter()
        .filter(|e| e.starts_with("mark_ports"))
        .count();
    assert_eq!(claim, 1, "{a} keeps its mark");
    let a2 = a.clone();
    ns.run(move || isolation::remove(&a2)).unwrap();
    assert_eq!(naming(&ns, &a), Vec::<String>::new());
}

#[test]
fn a_name_that_is_not_an_interface_is_refused_before_nft_runs() {
    for bad in ["", ".lock", "a/b", "sixteen-chars-xx", "a\"b", "a b"] {
        let p = policy(bad, "10.9.0.1", None);
        assert!(
            matches!(isolation::install(&p), Err(IsolationError::BadName { .. })),
            "{bad:?}"
        );
        assert!(matches!(
            isolation::remove(bad),
            Err(IsolationError::BadName { .. })
        ));
    }
}

/// Chains an older build filled (its rules differ, and it had no set of this build's
/// rules) are refilled by the next port's install, not left to enforce the old rules.
#[test]
fn chains_of_an_older_build_are_refilled_by_the_next_install() {
    let ns = Netns::new();
    let p = policy("skgen0n0", "10.9.2.1", None);
    ns.run(move || isolation::install(&p)).unwrap();
    let nft = |args: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0, "nft"])
            .args(args.split(' '))
            .output()
            .unwrap();
        assert!(out.status.success(), "nft {args}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let gens: Vec<String> = elements(&ns)
        .into_keys()
        .filter(|s| s.starts_with("rules_"))
        .collect();
    assert_eq!(gens.len(), 1, "{gens:?}");
    // What an older build left: other rules, and no set of this build's.
    nft("flush chain bridge skerry class_15");
    nft("add rule bridge skerry class_15 meta mark 0x1234 drop");
    nft(&format!("delete set bridge skerry {}", gens[0]));
    let p = policy("skgen1n0", "10.9.2.2", None);
    ns.run(move || isolation::install(&p)).unwrap();
    let chain = nft("list chain bridge skerry class_15");
    assert!(!chain.contains("0x00001234"), "{chain}");
    assert!(chain.contains("@addr4 drop"), "{chain}");
    assert!(elements(&ns).contains_key(&gens[0]));
}
