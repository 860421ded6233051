//! The nf_tables script of one port: pure text, so every rule is unit-tested without
//! root. [`super::apply`] feeds a script to `nft -f -`, one kernel transaction.
//!
//! Layout (both tables are shared by every port; each port owns only its chains and
//! one element per map, so installing or removing a port touches nothing else):
//!
//! ```text
//! table bridge skerry
//!   map in_ports  { ifname : verdict }   port -> jump in-PORT   (frames FROM the instance)
//!   map out_marks { ifname : mark }      port -> MARK  (firewalled ports only)
//!   chain prerouting (hook prerouting)   iifname vmap @in_ports
//!   chain forward    (hook forward)      meta mark set 0; meta mark set oifname map @out_marks
//!   chain in-PORT                        antispoof
//! table inet skerry
//!   map fw_ports { mark : verdict }      MARK -> jump fw-PORT
//!   chain forward (hook forward)         meta mark vmap @fw_ports
//!   chain fw-PORT                        ct established/related, allow rules, drop
//! ```
//!
//! Installing a port needs only nft's table cache: chains are filled with the block
//! form (`add chain T C { rule; ... }`) and map elements added with the map's block
//! (`add map T M { ...; elements = { ... } }`), both of which nft evaluates without
//! listing the node's chains and sets; `add rule` and `add element` would make it list
//! every chain of every table first (host/README.md, "Measured"). Every port has both
//! chains and all three elements (an empty `fw-PORT` without a firewall), so
//! installing never deletes (deleting makes nft list the chains too); removing a port
//! does, and its cost grows with the node's ports.
//!
//! The firewall lives in the inet family because connection tracking of bridged
//! traffic comes from br_netfilter (which hands bridged IPv4/IPv6 to the inet hooks
//! with their conntrack entry); the bridge family's own conntrack needs
//! nf_conntrack_bridge, which not every kernel has. The bridge-family forward
//! chain marks frames with the destination port's mark so the inet chain knows which
//! port a packet is leaving by.

use super::PortPolicy;
use spec::{FirewallProto, FirewallRule};
use std::fmt::Write;
use std::net::{IpAddr, Ipv6Addr};

/// The tables' name in both families.
pub const TABLE: &str = "skerry";

/// The mark that stands for `port` between the bridge and inet tables: a 32-bit hash
/// of the name (FNV-1a), never 0 (0 is "no firewalled port").
pub fn mark_of(port: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in port.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// The maps' types, by name.
const IN_PORTS: &str = "in_ports { type ifname : verdict;";
const OUT_MARKS: &str = "out_marks { type ifname : mark;";
const FW_PORTS: &str = "fw_ports { type mark : verdict;";

/// The shared tables, maps and base chains: idempotent (`add` of what exists is a
/// no-op; each base chain is flushed and refilled in the same transaction, so it is
/// never seen empty).
fn skeleton(s: &mut String) {
    let t = TABLE;
    let _ = writeln!(s, "add table bridge {t}");
    let _ = writeln!(s, "add map bridge {t} {IN_PORTS} }}");
    let _ = writeln!(s, "add map bridge {t} {OUT_MARKS} }}");
    // Before br_netfilter (priority 0) hands the frame to the inet hooks.
    let _ = writeln!(
        s,
        "add chain bridge {t} prerouting {{ type filter hook prerouting priority -300; policy accept; }}"
    );
    fill_chain(s, "bridge", "prerouting", ["iifname vmap @in_ports"]);
    let _ = writeln!(
        s,
        "add chain bridge {t} forward {{ type filter hook forward priority -300; policy accept; }}"
    );
    // A mark from elsewhere must not select some port's firewall; a port that is not
    // in the map leaves the mark 0: no firewall.
    fill_chain(
        s,
        "bridge",
        "forward",
        ["meta mark set 0", "meta mark set oifname map @out_marks"],
    );
    let _ = writeln!(s, "add table inet {t}");
    let _ = writeln!(s, "add map inet {t} {FW_PORTS} }}");
    let _ = writeln!(
        s,
        "add chain inet {t} forward {{ type filter hook forward priority 0; policy accept; }}"
    );
    fill_chain(s, "inet", "forward", ["meta mark vmap @fw_ports"]);
}

/// Makes sure `chain` exists and holds exactly `rules`, in one transaction with what
/// follows (the block form: no `add rule`, so nft needs no chain cache).
fn fill_chain<R: AsRef<str>>(
    s: &mut String,
    family: &str,
    chain: &str,
    rules: impl IntoIterator<Item = R>,
) {
    let _ = writeln!(s, "add chain {family} {TABLE} {chain}");
    let _ = writeln!(s, "flush chain {family} {TABLE} {chain}");
    let mut rules = rules.into_iter().peekable();
    if rules.peek().is_some() {
        let _ = writeln!(s, "add chain {family} {TABLE} {chain} {{");
        for r in rules {
            let _ = writeln!(s, "    {}", r.as_ref());
        }
        let _ = writeln!(s, "}}");
    }
}

/// Adds `element` to map `map` (its name and type, one of the consts above) with the
/// map's block form (no `add element`, so nft needs no chain cache). Adding an
/// element that is there with the same value is no error.
fn add_element(s: &mut String, family: &str, map: &str, element: &str) {
    let _ = writeln!(
        s,
        "add map {family} {TABLE} {map} elements = {{ {element} }} }}"
    );
}

/// Makes sure `chain` exists, for the deletes of [`drop_chain`].
fn fresh_chain(s: &mut String, family: &str, chain: &str) {
    let _ = writeln!(s, "add chain {family} {TABLE} {chain}");
}

/// Deletes `chain` and its map element whether or not they exist: adding them first
/// in the same transaction makes the deletes always valid.
fn drop_chain(s: &mut String, family: &str, map: &str, key: &str, chain: &str) {
    fresh_chain(s, family, chain);
    let _ = writeln!(
        s,
        "add element {family} {TABLE} {map} {{ {key} : jump {chain} }}"
    );
    let _ = writeln!(s, "delete element {family} {TABLE} {map} {{ {key} }}");
    let _ = writeln!(s, "delete chain {family} {TABLE} {chain}");
}

/// Deletes `port`'s element of the mark map whether or not it exists (added first,
/// as in [`drop_chain`], with the value it has if it exists: adding an existing key
/// with another value is an error).
fn drop_mark(s: &mut String, quoted_port: &str, mark: &str) {
    let _ = writeln!(
        s,
        "add element bridge {TABLE} out_marks {{ {quoted_port} : {mark} }}"
    );
    let _ = writeln!(
        s,
        "delete element bridge {TABLE} out_marks {{ {quoted_port} }}"
    );
}

fn mac_text(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// The IPv6 link-local address a kernel derives from `mac` (EUI-64, RFC 4291).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        a ^ 2,
        b,
        c,
        0xff,
        0xfe,
        d,
        e,
        f,
    ])
}

/// `KEY != A KEY != B ...`: true when the field is none of `values`. Written as a
/// conjunction rather than an anonymous set, because nft reads every set of the table
/// before each transaction: sets per port would make installing one port's rules grow
/// with the number of ports on the node.
fn none_of<T: ToString>(key: &str, values: impl IntoIterator<Item = T>) -> String {
    values
        .into_iter()
        .map(|v| format!("{key} != {}", v.to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The antispoof rules of frames the instance sends.
fn antispoof(p: &PortPolicy) -> Vec<String> {
    let mut rules = vec![];
    let mut rule = |r: String| rules.push(r);
    let mac = mac_text(p.mac);
    if !p.allow.mac_spoofing {
        rule(format!("ether saddr != {mac} drop"));
        rule(format!("arp saddr ether != {mac} drop"));
    }
    if !p.allow.restricted_traffic {
        rule(format!(
            "{} drop",
            none_of("ether type", ["ip", "ip6", "arp"])
        ));
    }
    if !p.allow.dhcp_spoofing {
        rule("udp sport 67 drop".into());
        rule("udp sport 547 drop".into());
        rule("icmpv6 type nd-router-advert drop".into());
    }
    // A DHCP nic's address is the server's to choose and is not known here: its
    // sources are not pinned (host/README.md, "DHCP nics").
    if !p.allow.ip_spoofing && !p.dhcp {
        let v4: Vec<IpAddr> = p.addrs.iter().copied().filter(IpAddr::is_ipv4).collect();
        let mut v6: Vec<IpAddr> = p.addrs.iter().copied().filter(IpAddr::is_ipv6).collect();
        v6.push(IpAddr::V6(link_local(p.mac)));
        // ARP probes (RFC 5227) and DAD (RFC 4862) send from the unspecified address.
        let arp = std::iter::once("0.0.0.0".to_string()).chain(v4.iter().map(|a| a.to_string()));
        rule(format!("{} drop", none_of("arp saddr ip", arp)));
        if v4.is_empty() {
            rule("ether type ip drop".into());
        } else {
            rule(format!("{} drop", none_of("ip saddr", &v4)));
        }
        let src = std::iter::once("::".to_string()).chain(v6.iter().map(|a| a.to_string()));
        rule(format!("{} drop", none_of("ip6 saddr", src)));
        // The target of a neighbour advertisement (128 bits after the ICMPv6 header).
        let targets = v6.iter().map(|a| match a {
            IpAddr::V6(a) => format!("0x{:032x}", u128::from(*a)),
            IpAddr::V4(_) => unreachable!("v6 holds IPv6 addresses only"),
        });
        rule(format!(
            "icmpv6 type nd-neighbor-advert {} drop",
            none_of("@th,64,128", targets)
        ));
    }
    rules
}

/// One allow rule as nft rules.
fn allow(r: &FirewallRule) -> Vec<String> {
    let mut out = String::new();
    if let Some((addr, prefix)) = r.from {
        let fam = if addr.is_ipv4() { "ip" } else { "ip6" };
        let _ = write!(out, "{fam} saddr {addr}/{prefix} ");
    }
    match r.proto {
        FirewallProto::Tcp | FirewallProto::Udp => {
            let l4 = r.proto.as_str();
            let _ = write!(out, "meta l4proto {l4} ");
            if let Some((lo, hi)) = r.ports {
                if lo == hi {
                    let _ = write!(out, "{l4} dport {lo} ");
                } else {
                    let _ = write!(out, "{l4} dport {lo}-{hi} ");
                }
            }
        }
        FirewallProto::Icmp => {
            // Two rules (see `none_of` for why not a set).
            let v4 = format!("{out}meta l4proto icmp accept");
            return vec![v4, format!("{out}meta l4proto ipv6-icmp accept")];
        }
    }
    out.push_str("accept");
    vec![out]
}

/// The firewall chain: replies and allowed traffic in, the rest dropped.
fn firewall(p: &PortPolicy, rules: &[FirewallRule]) -> Vec<String> {
    let mut out = vec![];
    let mut rule = |r: &str| out.push(r.to_owned());
    rule("ct state established,related accept");
    // IPv6 needs neighbour discovery both ways; ARP never reaches the inet family.
    for nd in [
        "nd-neighbor-solicit",
        "nd-neighbor-advert",
        "nd-router-advert",
    ] {
        rule(&format!("icmpv6 type {nd} accept"));
    }
    if p.dhcp {
        // The server's offer is not a reply conntrack can match (the client asked
        // from 0.0.0.0 to the broadcast address).
        rule("udp sport 67 udp dport 68 accept");
    }
    for r in rules {
        for text in allow(r) {
            rule(&text);
        }
    }
    rule("drop");
    out
}

/// The whole transaction that puts `p` in place, replacing whatever `p.port` had
/// before (chains flushed and refilled: no instant without rules). Without a
/// firewall, `fw-PORT` is empty (frames to the port pass); its elements stay, so
/// nothing is deleted (see the module's doc for why).
pub fn install_script(p: &PortPolicy) -> String {
    let mut s = String::new();
    skeleton(&mut s);
    let port = &p.port;
    let quoted = format!("\"{port}\"");
    let inc = format!("in-{port}");
    fill_chain(&mut s, "bridge", &inc, antispoof(p));
    add_element(
        &mut s,
        "bridge",
        IN_PORTS,
        &format!("{quoted} : jump {inc}"),
    );
    let fwc = format!("fw-{port}");
    let mark = format!("0x{:08x}", mark_of(port));
    let fw = match &p.firewall {
        Some(fw) => firewall(p, &fw.rules),
        None => vec![],
    };
    fill_chain(&mut s, "inet", &fwc, fw);
    add_element(&mut s, "inet", FW_PORTS, &format!("{mark} : jump {fwc}"));
    add_element(&mut s, "bridge", OUT_MARKS, &format!("{quoted} : {mark}"));
    s
}

/// The transaction that removes every rule of `port` (valid whether or not it has any).
pub fn remove_script(port: &str) -> String {
    let mut s = String::new();
    skeleton(&mut s);
    let quoted = format!("\"{port}\"");
    let mark = format!("0x{:08x}", mark_of(port));
    drop_chain(&mut s, "bridge", "in_ports", &quoted, &format!("in-{port}"));
    drop_mark(&mut s, &quoted, &mark);
    drop_chain(&mut s, "inet", "fw_ports", &mark, &format!("fw-{port}"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use spec::{Firewall, NicAllow};

    /// The rules `script` puts in `chain` of `family` (its block's lines).
    fn chain_rules<'a>(script: &'a str, family: &str, chain: &str) -> Vec<&'a str> {
        let open = format!("add chain {family} skerry {chain} {{");
        script
            .lines()
            .skip_while(|l| *l != open)
            .skip(1)
            .take_while(|l| *l != "}")
            .map(str::trim)
            .collect()
    }

    fn policy() -> PortPolicy {
        PortPolicy {
            port: "sk0123abcdn0".into(),
            mac: [0x02, 0x5c, 1, 2, 3, 4],
            addrs: vec!["10.88.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            dhcp: false,
            allow: NicAllow::default(),
            firewall: None,
        }
    }

    #[test]
    fn antispoof_pins_mac_addresses_and_servers() {
        let s = install_script(&policy());
        let rules = chain_rules(&s, "bridge", "in-sk0123abcdn0");
        assert_eq!(rules[0], "ether saddr != 02:5c:01:02:03:04 drop");
        for want in [
            "arp saddr ether != 02:5c:01:02:03:04 drop",
            "ether type != ip ether type != ip6 ether type != arp drop",
            "udp sport 67 drop",
            "icmpv6 type nd-router-advert drop",
            "arp saddr ip != 0.0.0.0 arp saddr ip != 10.88.0.10 drop",
            "ip saddr != 10.88.0.10 drop",
            "ip6 saddr != :: ip6 saddr != fd00::10 ip6 saddr != fe80::5c:1ff:fe02:304 drop",
            "nd-neighbor-advert @th,64,128 != 0xfd000000000000000000000000000010 \
             @th,64,128 != 0xfe80000000000000005c01fffe020304 drop",
        ] {
            assert!(
                rules.iter().any(|r| r.contains(want)),
                "missing {want:?} in\n{s}"
            );
        }
        for want in [
            "add map bridge skerry in_ports { type ifname : verdict; \
             elements = { \"sk0123abcdn0\" : jump in-sk0123abcdn0 } }",
            // No firewall: an empty chain (nothing is deleted when installing).
            "flush chain inet skerry fw-sk0123abcdn0\nadd map inet",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        assert!(chain_rules(&s, "inet", "fw-sk0123abcdn0").is_empty(), "{s}");
    }

    /// What keeps installing from growing with the node: nft evaluates these without
    /// listing the node's chains and sets (`add rule`, `add element` and any delete
    /// make it list them; host/README.md, "Measured").
    #[test]
    fn installing_needs_no_chain_cache() {
        let mut p = policy();
        p.firewall = Some(Firewall { rules: vec![] });
        for p in [policy(), p] {
            let s = install_script(&p);
            let listing: Vec<&str> = s
                .lines()
                .filter(|l| {
                    l.starts_with("add rule")
                        || l.starts_with("add element")
                        || l.starts_with("delete")
                })
                .collect();
            assert!(listing.is_empty(), "{listing:#?}");
        }
    }

    #[test]
    fn each_switch_lifts_its_rules() {
        let mut p = policy();
        p.allow = NicAllow {
            ip_spoofing: true,
            mac_spoofing: true,
            dhcp_spoofing: true,
            restricted_traffic: true,
        };
        let s = install_script(&p);
        let port_rules = chain_rules(&s, "bridge", "in-sk0123abcdn0");
        assert!(port_rules.is_empty(), "{port_rules:?}");
        // A DHCP nic keeps MAC and server rules but no address pins.
        let mut p = policy();
        p.dhcp = true;
        let s = install_script(&p);
        assert!(s.contains("ether saddr !="));
        assert!(s.contains("udp sport 67 drop"));
        assert!(!s.contains("ip saddr !="), "{s}");
    }

    #[test]
    fn firewall_chain_is_stateful_default_deny_with_the_allow_rules() {
        let mut p = policy();
        p.dhcp = true;
        p.firewall = Some(Firewall {
            rules: vec![
                FirewallRule {
                    proto: FirewallProto::Tcp,
                    ports: Some((22, 22)),
                    from: None,
                },
                FirewallRule {
                    proto: FirewallProto::Udp,
                    ports: Some((8000, 8080)),
                    from: Some(("10.88.0.0".parse().unwrap(), 24)),
                },
                FirewallRule {
                    proto: FirewallProto::Icmp,
                    ports: None,
                    from: None,
                },
            ],
        });
        let s = install_script(&p);
        let fw = chain_rules(&s, "inet", "fw-sk0123abcdn0");
        assert_eq!(
            fw,
            vec![
                "ct state established,related accept",
                "icmpv6 type nd-neighbor-solicit accept",
                "icmpv6 type nd-neighbor-advert accept",
                "icmpv6 type nd-router-advert accept",
                "udp sport 67 udp dport 68 accept",
                "meta l4proto tcp tcp dport 22 accept",
                "ip saddr 10.88.0.0/24 meta l4proto udp udp dport 8000-8080 accept",
                "meta l4proto icmp accept",
                "meta l4proto ipv6-icmp accept",
                "drop",
            ]
        );
        let mark = format!("0x{:08x}", mark_of("sk0123abcdn0"));
        assert!(s.contains(&format!("elements = {{ \"sk0123abcdn0\" : {mark} }}")));
        assert!(s.contains(&format!("elements = {{ {mark} : jump fw-sk0123abcdn0 }}")));
    }

    #[test]
    fn per_port_rules_use_no_anonymous_sets() {
        let mut p = policy();
        p.firewall = Some(Firewall {
            rules: vec![FirewallRule {
                proto: FirewallProto::Icmp,
                ports: None,
                from: None,
            }],
        });
        let s = install_script(&p);
        let mut sets = chain_rules(&s, "bridge", "in-sk0123abcdn0");
        sets.extend(chain_rules(&s, "inet", "fw-sk0123abcdn0"));
        assert!(sets.len() > 10, "{s}");
        sets.retain(|r| r.contains('{'));
        assert!(sets.is_empty(), "{sets:#?}");
    }

    #[test]
    fn removal_deletes_only_this_port() {
        let s = remove_script("skport1");
        assert!(s.contains("delete element bridge skerry in_ports { \"skport1\" }"));
        assert!(s.contains("delete chain bridge skerry in-skport1"));
        assert!(s.contains("delete chain inet skerry fw-skport1"));
        assert!(!s.contains("flush table"), "{s}");
    }
}
