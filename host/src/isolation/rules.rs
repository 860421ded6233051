//! The nf_tables side of port isolation as pure text, so every rule is unit-tested
//! without root. [`super::apply`] feeds a script to `nft -f -`, one kernel transaction.
//!
//! The rules are fixed: a few chains, the same for every port and every node. What
//! differs per port is data: elements of named sets and maps, each keyed by the
//! port's name (or its firewall mark), e.g. `"sk0123abcdn0" . 10.88.0.10` in `addr4`.
//! Installing a port adds its elements; nothing else changes.
//!
//! ```text
//! table bridge skerry                        frames FROM instance ports
//!   map port_class { ifname : verdict }      port -> jump class_N (N: its switches)
//!   set fast4 { ifname . ether_addr . ipv4_addr }   (fast6 likewise)
//!   map fast4z { ifname . ether_addr . ipv4_addr : zone }  (fast6z; bridge conntrack)
//!   set macs  { ifname . ether_addr }    set addr4 { ifname . ipv4_addr }
//!   set addr6 { ifname . ipv6_addr }     set na6   { ifname . 128-bit ND target }
//!   map out_marks  { ifname : mark }     every port's firewall mark
//!   map mark_ports { mark : ifname }     who owns a mark (a hash collision is refused)
//!   map port_zone { ifname : zone }      map mac_zone { ether_addr : zone }
//!   chain prerouting (hook prerouting)   not UDP/ICMPv6: @fast4/@fast6 accept (with
//!                                        a bridge firewall: ct zone set ... map @fast4z);
//!                                        iifname vmap @port_class; (with a bridge
//!                                        firewall: ct zone set from @port_zone, @mac_zone)
//!   chain class_0 .. class_15            iifname . ether saddr != @macs drop, ...
//!   chain forward    (hook forward)      br_netfilter firewall only: mark from @out_marks
//! table bridge|inet skerry_fw                packets TO firewalled ports (Conntrack)
//!   map fw_marks { ifname : mark }       bridge only: the firewalled ports' marks
//!   set fw_on, fw_dhcp { mark }
//!   set fw4_S  { mark . l4proto . ipv4_addr . port, interval }  (fw6_S likewise)
//!   set fwp4_S { mark . l4proto . ipv4_addr, interval }         (rules without ports)
//!   chain forward (hook forward)         ct established accept first; (bridge: mark
//!                                        set oifname map @fw_marks), not firewalled
//!                                        accept, ND, meta mark & 63 vmap -> fw_S; drop
//!   chain fw_0 .. fw_63                  @fw4_S, @fw6_S, @fwp4_S, @fwp6_S accept
//! ```
//!
//! Why data and not a chain per port (as this module first did): every transaction
//! that adds a rule or a jump makes the kernel re-validate the table's whole jump
//! graph from its base chains, so with a chain per port the cost of installing one
//! port grew with the ports on the node. Here the graph is fixed (16 class chains, 64
//! shard chains), so its validation costs the same on any node, and elements of sets
//! without verdicts are not validated at all. A port's script is `add element`s only,
//! for which nft lists the tables' sets (a fixed number) and not their elements;
//! deleting elements (a port's removal, or a reinstall that drops some) costs more
//! (host/README.md, "Measured").
//!
//! Replacing or removing a port's elements needs to know them: the install records
//! them (see [`super::record`]), and a port's script is built from the policy and
//! that record.
//!
//! The firewall is stateful, so it needs bridged traffic connection-tracked
//! ([`Conntrack`]). Where the kernel has nf_conntrack_bridge (the node's does), the
//! bridge family tracks it itself and the firewall's table is a bridge one, whose
//! forward chain marks a frame with its destination port's mark (if that port is
//! firewalled) before the firewall reads it. Elsewhere br_netfilter hands bridged
//! IPv4/IPv6 to the inet hooks with their conntrack entry, and the same table is an
//! inet one; that trip costs every bridged packet more (host/README.md, "Measured").
//! There, a bridge-family forward chain of `skerry` marks the frames first, since
//! the inet hooks do not see which port a packet leaves by. The firewall's table
//! (and that chain) are made with the first firewalled port: until then nothing is
//! connection-tracked, and a frame meets one hook of ours, prerouting's.

use super::PortPolicy;
use spec::{FirewallProto, FirewallRule};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The table of antispoof (bridge family), and of the marks the firewall reads.
pub const TABLE: &str = "skerry";
/// The firewall's table, in [`Conntrack::family`]. Made with the first firewalled
/// port: its `ct` rule is what makes the kernel track a namespace's bridged traffic,
/// and a node without firewalls should not pay for that.
pub const FW_TABLE: &str = "skerry_fw";

/// Where bridged traffic gets the connection tracking the firewall's stateful half
/// needs, and so which table the firewall's sets and chains are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Conntrack {
    /// nf_conntrack_bridge: the bridge family tracks bridged traffic itself; the
    /// firewall is in the bridge table. Debian's kernels (the node's) have it.
    Bridge,
    /// br_netfilter hands bridged IPv4/IPv6 to the inet hooks, conntrack's among
    /// them; the firewall is in an inet table. For kernels without
    /// nf_conntrack_bridge.
    BrNetfilter,
}

impl Conntrack {
    /// The family of the table the firewall is in.
    pub fn family(self) -> &'static str {
        match self {
            Conntrack::Bridge => "bridge",
            Conntrack::BrNetfilter => "inet",
        }
    }
}

/// The mark that stands for `port` between the bridge and inet tables: a 32-bit hash
/// of the name (FNV-1a), never 0 (0 is "no port"). Two ports with one mark are
/// refused by `mark_ports` (the second port's install fails).
pub fn mark_of(port: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in port.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// A named set or map of the two tables: its family, name and declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Set {
    /// `bridge` or `inet`.
    pub family: &'static str,
    /// [`TABLE`] or [`FW_TABLE`].
    pub table: &'static str,
    /// The set's name, or its stem when it is sharded.
    base: &'static str,
    /// Which of [`SHARDS`] copies, for the firewall's range sets.
    shard: Option<u32>,
    /// `set` or `map`.
    kind: &'static str,
    /// What goes between the braces before `elements`.
    decl: &'static str,
    /// For a set that only the firewall's marking reads: the [`Conntrack`] under
    /// which it is made, together with the chain that reads it.
    marks_for: Option<Conntrack>,
    /// A conntrack-zone map ([`PORT_ZONE`], [`MAC_ZONE`]): made where a port has
    /// elements in it or the bridge family's firewall is, and nowhere else.
    zone: bool,
}

impl Set {
    /// The set's name in the table.
    pub fn name(&self) -> String {
        match self.shard {
            Some(i) => format!("{}_{i}", self.base),
            None => self.base.to_owned(),
        }
    }

    fn shard(self, i: u32) -> Set {
        Set {
            shard: Some(i),
            ..self
        }
    }

    /// The set as `ct` places it: the firewall's sets go where the firewall is.
    fn placed(self, ct: Conntrack) -> Set {
        match self.table {
            FW_TABLE => Set {
                family: ct.family(),
                ..self
            },
            _ => self,
        }
    }

    /// Whether it is one of the firewall's.
    fn is_firewall(&self) -> bool {
        self.table == FW_TABLE
    }
}

const fn set(family: &'static str, name: &'static str, decl: &'static str) -> Set {
    Set {
        family,
        table: TABLE,
        base: name,
        shard: None,
        kind: "set",
        decl,
        marks_for: None,
        zone: false,
    }
}

const fn map(family: &'static str, name: &'static str, decl: &'static str) -> Set {
    Set {
        kind: "map",
        ..set(family, name, decl)
    }
}

/// A set of the firewall's table (its family is [`Set::placed`]'s to say).
const fn fw_set(name: &'static str, decl: &'static str) -> Set {
    Set {
        table: FW_TABLE,
        ..set("inet", name, decl)
    }
}

/// Every instance port, to the chain of its class (the checks its switches leave
/// on: [`class_rules`]). Frames from other ports of the bridge (an uplink, the bridge
/// itself) match nothing and pass.
const PORT_CLASS: Set = map("bridge", "port_class", "type ifname : verdict;");
/// Each port's MAC and IPv4 addresses together, for ports whose class pins both:
/// the one lookup that lets most of their frames through ([`PREROUTING`]).
const FAST4: Set = set(
    "bridge",
    "fast4",
    "typeof iifname . ether saddr . ip saddr;",
);
/// The same with the port's IPv6 addresses.
const FAST6: Set = set(
    "bridge",
    "fast6",
    "typeof iifname . ether saddr . ip6 saddr;",
);
/// Under [`Conntrack::Bridge`], [`FAST4`]'s elements to the port's conntrack zone
/// ([`PORT_ZONE`]): with a firewall, the fast path's lookup is this one, and sets the
/// zone too ([`ZONED_PREROUTING`]). A second copy, since the node's kernel (6.1)
/// refuses a rule that only tests whether a key is in a map, and without a firewall
/// the lookup must not set a zone (a `ct` rule turns conntrack on).
const FAST4Z: Set = Set {
    zone: true,
    ..map(
        "bridge",
        "fast4z",
        "typeof iifname . ether saddr . ip saddr : ct zone;",
    )
};
/// The same with the port's IPv6 addresses.
const FAST6Z: Set = Set {
    zone: true,
    ..map(
        "bridge",
        "fast6z",
        "typeof iifname . ether saddr . ip6 saddr : ct zone;",
    )
};
/// Each port's MAC.
const MACS: Set = set("bridge", "macs", "typeof iifname . ether saddr;");
/// Each port's IPv4 addresses.
const ADDR4: Set = set("bridge", "addr4", "typeof iifname . ip saddr;");
/// Each port's IPv6 addresses, its MAC's link-local address among them.
const ADDR6: Set = set("bridge", "addr6", "typeof iifname . ip6 saddr;");
/// The same IPv6 addresses as 128-bit integers: the neighbour-advertisement targets
/// a port may name (nft 1.0.6 has no `icmpv6 taddr`; the raw field is an integer).
const NA6: Set = set("bridge", "na6", "typeof iifname . @th,64,128;");
/// Under [`Conntrack::BrNetfilter`], the firewalled ports' marks, which `skerry`'s
/// forward chain sets before br_netfilter hands the packet to the inet hooks. Made
/// with that chain and the firewall's table.
const OUT_MARKS: Set = Set {
    marks_for: Some(Conntrack::BrNetfilter),
    ..map("bridge", "out_marks", "type ifname : mark;")
};
/// Under [`Conntrack::Bridge`], each port's conntrack zone, that of its nic tag and
/// VLAN (one number for each on the node, see [`super::record`]): set on what the
/// port sends, before conntrack sees it, so that tenants who chose the same
/// addresses do not share connections (one's flow would be "established" for the
/// other's firewall).
const PORT_ZONE: Set = Set {
    zone: true,
    ..map("bridge", "port_zone", "typeof iifname : ct zone;")
};
/// The same zone by the port's MAC: set on what reaches the port from an uplink, so
/// both directions of a flow are tracked in one zone.
const MAC_ZONE: Set = Set {
    zone: true,
    ..map("bridge", "mac_zone", "typeof ether daddr : ct zone;")
};
/// The port that owns each mark.
const MARK_PORTS: Set = map("bridge", "mark_ports", "type mark : ifname;");
/// Under [`Conntrack::Bridge`], the firewalled ports' marks, which the firewall's own
/// chain sets: one forward hook, where br_netfilter needs the marking before its
/// inet hooks ([`OUT_MARKS`]).
const FW_MARKS: Set = Set {
    kind: "map",
    marks_for: Some(Conntrack::Bridge),
    ..fw_set("fw_marks", "type ifname : mark;")
};
/// The marks of firewalled ports.
const FW_ON: Set = fw_set("fw_on", "type mark;");
/// The marks of firewalled DHCP nics (their server's offers pass).
const FW_DHCP: Set = fw_set("fw_dhcp", "type mark;");
/// Allowed protocol, IPv4 source network and destination ports, per mark.
const FW4: Set = fw_set(
    "fw4",
    "typeof meta mark . meta l4proto . ip saddr . th dport; flags interval;",
);
/// The same for IPv6.
const FW6: Set = fw_set(
    "fw6",
    "typeof meta mark . meta l4proto . ip6 saddr . th dport; flags interval;",
);
/// Allowed protocol and IPv4 source network, every port (and ICMP), per mark.
const FWP4: Set = fw_set(
    "fwp4",
    "typeof meta mark . meta l4proto . ip saddr; flags interval;",
);
/// The same for IPv6.
const FWP6: Set = fw_set(
    "fwp6",
    "typeof meta mark . meta l4proto . ip6 saddr; flags interval;",
);

/// The sets that are one per table, in the order a script declares them.
const SINGLE: &[Set] = &[
    PORT_CLASS, FAST4, FAST6, FAST4Z, FAST6Z, MACS, ADDR4, ADDR6, NA6, OUT_MARKS, PORT_ZONE,
    MAC_ZONE, MARK_PORTS, FW_MARKS, FW_ON, FW_DHCP,
];

/// The firewall's range sets, each in [`SHARDS`] copies (`fw4_0` ... `fw4_63`).
const SHARDED: &[Set] = &[FW4, FW6, FWP4, FWP6];

/// How many copies of each range set, picked by a mark's low bits. The kernel's
/// set of concatenated ranges copies its whole lookup table for each element it
/// deletes, so a port's removal costs in proportion to the elements of the sets it
/// deletes from: shards divide that by their number.
pub const SHARDS: u32 = 64;

/// Every set, as `ct` places them.
fn all_sets(ct: Conntrack) -> impl Iterator<Item = Set> {
    SINGLE
        .iter()
        .copied()
        .chain(
            SHARDED
                .iter()
                .flat_map(|s| (0..SHARDS).map(move |i| s.shard(i))),
        )
        .map(move |s| s.placed(ct))
}

/// The set called `family name` under either [`Conntrack`], if there is one (a
/// record names the family its elements went to).
pub fn set_named(family: &str, name: &str) -> Option<Set> {
    [Conntrack::Bridge, Conntrack::BrNetfilter]
        .into_iter()
        .find_map(|ct| set_named_in(ct, family, name))
}

fn set_named_in(ct: Conntrack, family: &str, name: &str) -> Option<Set> {
    let single = SINGLE.iter().map(|s| s.placed(ct));
    if let Some(set) = single
        .clone()
        .find(|s| s.family == family && s.base == name)
    {
        return Some(set);
    }
    let (base, i) = name.rsplit_once('_')?;
    let i: u32 = i.parse().ok().filter(|i| *i < SHARDS)?;
    (i.to_string() == name[base.len() + 1..])
        .then_some(())
        .and_then(|()| {
            SHARDED
                .iter()
                .map(|s| s.placed(ct))
                .find(|s| s.family == family && s.base == base)
        })
        .map(|s| s.shard(i))
}

/// The range sets' shard of `mark`.
fn shard_of(mark: u32) -> u32 {
    mark % SHARDS
}

/// The checks a port's switches leave on, as bits of its class.
const PIN_MAC: u32 = 1;
/// Only IPv4, IPv6 and ARP (not `allow-restricted-traffic`).
const ONLY_IP: u32 = 2;
/// No DHCP server replies or router advertisements (not `allow-dhcp-spoofing`).
const NO_SERVERS: u32 = 4;
/// Sources held to the nic's addresses, a DHCP nic's leases (not `allow-ip-spoofing`).
const PIN_IP: u32 = 8;
/// Classes: every combination of the four.
const CLASSES: u32 = 16;

/// The class of `p`: which checks apply to what it sends.
fn class_of(p: &PortPolicy) -> u32 {
    let mut class = 0;
    if !p.allow.mac_spoofing {
        class |= PIN_MAC;
    }
    if !p.allow.restricted_traffic {
        class |= ONLY_IP;
    }
    if !p.allow.dhcp_spoofing {
        class |= NO_SERVERS;
    }
    // A DHCP nic is held to the addresses its port's monitor saw its server lease it
    // (`crate::snoop`; host/README.md, "DHCP nics").
    if !p.allow.ip_spoofing {
        class |= PIN_IP;
    }
    class
}

/// The checks of chain `class_N` on frames a port of class N sends (`bridge
/// prerouting` jumps there through `port_class`). A class per combination of
/// switches keeps the checks free of per-port membership tests: a frame meets one
/// map lookup, then only the checks that apply to its port, each testing the frame's
/// type before any set lookup.
fn class_rules(class: u32) -> Vec<&'static str> {
    let mut rules = vec![];
    if class & PIN_MAC != 0 {
        rules.push("iifname . ether saddr != @macs drop");
        rules.push("ether type arp iifname . arp saddr ether != @macs drop");
    }
    if class & ONLY_IP != 0 {
        // A conjunction, not an anonymous set: no set is made on each refill.
        rules.push("ether type != ip ether type != ip6 ether type != arp drop");
    }
    if class & NO_SERVERS != 0 {
        rules.push("udp sport 67 drop");
        rules.push("udp sport 547 drop");
        rules.push("icmpv6 type nd-router-advert drop");
    }
    if class & PIN_IP != 0 {
        // ARP probes (RFC 5227), DAD (RFC 4862) and a DHCP client without a lease
        // send from the unspecified address, which is nobody's.
        rules.push("ether type arp arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @addr4 drop");
        rules.push("ether type ip ip saddr != 0.0.0.0 iifname . ip saddr != @addr4 drop");
        rules.push("ether type ip6 ip6 saddr != :: iifname . ip6 saddr != @addr6 drop");
        // The target of a neighbour advertisement: 128 bits after the ICMPv6 header.
        rules.push("icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @na6 drop");
    }
    rules
}

/// The checks on frames instance ports send. First the fast path: any IPv4 packet
/// but UDP, or any IPv6 one but UDP and ICMPv6, from a port whose class pins its MAC
/// and addresses (the default) is accepted on one lookup of port, MAC and source
/// together. Nothing else of its class could drop such a packet: the other checks
/// are about ARP, other ether types, UDP (DHCP servers) and ICMPv6 (router and
/// neighbour advertisements, and DAD's unspecified source). The rest, and every
/// frame of a port with a switch lifting either pin, meets its class chain. One rule
/// a family: each rule a packet fails costs it (host/README.md, "Measured").
/// Protocols are numbers (17 UDP, 58 ICMPv6): see [`firewall_elements`].
const PREROUTING: &[&str] = &[
    "ether type ip meta l4proto != 17 iifname . ether saddr . ip saddr @fast4 accept",
    "ether type ip6 meta l4proto != 17 meta l4proto != 58 iifname . ether saddr . ip6 saddr @fast6 accept",
    "iifname vmap @port_class",
];

/// [`PREROUTING`] where the bridge family's conntrack tracks connections for a
/// firewall ([`Conntrack::Bridge`]): the same checks, which also put each frame in its
/// conntrack zone, that of its nic tag and VLAN, before conntrack (-200) sees it, so
/// that tenants who chose the same addresses do not share connections (one's flow
/// would be "established" for the other's firewall). The fast path's lookup gives
/// the zone of the port it finds: a frame there meets one rule for both. What an
/// instance port sends past it takes its port's zone; what reaches an instance from
/// an uplink, the zone of the instance's MAC, so both directions of a flow are
/// tracked in one zone. The kernel keeps the first zone set on a frame. Only with a
/// firewall: a `ct` rule is what makes the kernel track a namespace's bridged
/// traffic, which a node without firewalls should not pay for.
const ZONED_PREROUTING: &[&str] = &[
    "ether type ip meta l4proto != 17 ct zone set iifname . ether saddr . ip saddr map @fast4z accept",
    "ether type ip6 meta l4proto != 17 meta l4proto != 58 ct zone set iifname . ether saddr . ip6 saddr map @fast6z accept",
    "iifname vmap @port_class",
    "ct zone set iifname map @port_zone accept",
    "ct zone set ether daddr map @mac_zone",
];

/// The rules of `bridge skerry prerouting` where the firewall is at `fw`.
fn prerouting(fw: Option<Conntrack>) -> &'static [&'static str] {
    match fw {
        Some(Conntrack::Bridge) => ZONED_PREROUTING,
        Some(Conntrack::BrNetfilter) | None => PREROUTING,
    }
}

/// Under [`Conntrack::BrNetfilter`], frames leaving by a port carry its mark into the
/// inet forward hook; a mark from elsewhere must not select some port's firewall.
const BRIDGE_FORWARD: &[&str] = &["meta mark set 0", "meta mark set oifname map @out_marks"];

/// Under [`Conntrack::Bridge`], the firewall's chain marks the frame itself, with the
/// firewalled ports' marks alone (a port not in `fw_marks` leaves 0, no firewall),
/// after letting through what is not IP.
const BRIDGE_FIREWALL_HEAD: &[&str] = &[
    "ether type != ip ether type != ip6 accept",
    "meta mark set 0",
    "meta mark set oifname map @fw_marks",
];

/// The firewall of packets to firewalled ports (the firewall table's forward chain):
/// replies, neighbour discovery and allowed traffic pass, the rest is dropped.
const FIREWALL: &[&str] = &[
    "meta mark != @fw_on accept",
    // IPv6 needs neighbour discovery both ways; ARP never reaches the inet family,
    // and in the bridge family it passes with everything else that is not IP.
    "icmpv6 type nd-neighbor-solicit accept",
    "icmpv6 type nd-neighbor-advert accept",
    "icmpv6 type nd-router-advert accept",
    // A DHCP server's offer is not a reply conntrack can match (the client asked
    // from 0.0.0.0 to the broadcast address).
    "meta mark @fw_dhcp udp sport 67 udp dport 68 accept",
    // Then the allow rules, in the mark's shard chain ([`shard_rules`]).
];

/// The allow rules of shard `i`'s chain `fw_i`: what it does not accept falls back to
/// `inet forward` and its final drop.
fn shard_rules(i: u32) -> Vec<String> {
    vec![
        format!("meta mark . meta l4proto . ip saddr . th dport @fw4_{i} accept"),
        format!("meta mark . meta l4proto . ip6 saddr . th dport @fw6_{i} accept"),
        format!("meta mark . meta l4proto . ip saddr @fwp4_{i} accept"),
        format!("meta mark . meta l4proto . ip6 saddr @fwp6_{i} accept"),
    ]
}

/// The first rule of the firewall's chain: replies, and every packet of a connection
/// it let through. Most packets are these, and they meet this rule alone, before the
/// marking and its lookups ([`BRIDGE_FIREWALL_HEAD`], `fw_on`): a frame to a port
/// without a firewall would pass those anyway, so the verdicts are the same in either
/// order, at a fraction of the cost (host/README.md, "Measured").
const ESTABLISHED: &str = "ct state established,related accept";

/// The firewall's rules in the chain of its hook: [`ESTABLISHED`], `head` (the
/// marking, where the chain does it), [`FIREWALL`], the jump to the mark's shard
/// chain, and the drop of the rest.
fn firewall(head: &[&str]) -> Vec<String> {
    let shards: Vec<String> = (0..SHARDS).map(|i| format!("{i} : jump fw_{i}")).collect();
    let mut rules: Vec<String> = std::iter::once(&ESTABLISHED)
        .chain(head)
        .chain(FIREWALL)
        .map(|r| r.to_string())
        .collect();
    rules.push(format!(
        "meta mark & 0x{:x} vmap {{ {} }}",
        SHARDS - 1,
        shards.join(", ")
    ));
    rules.push("drop".into());
    rules
}

/// Where `els` put a firewall: the placement of its sets, or `None` when none of
/// `els` is the firewall's. A script derives it from the elements it carries, so it
/// declares the firewall's table where they were (or will be) put.
fn firewall_placement(els: &[Element]) -> Option<Conntrack> {
    let set = els.iter().map(|e| e.set).find(Set::is_firewall)?;
    [Conntrack::Bridge, Conntrack::BrNetfilter]
        .into_iter()
        .find(|ct| ct.family() == set.family)
}

/// The tables and sets, the firewall's where `fw` places it (`add` of what exists
/// is a no-op). A set that a chain reads is made with that chain, so that a script
/// of elements only (which fails on a missing set) never succeeds on a node without
/// the chain: `out_marks` with `skerry`'s marking chain under br_netfilter,
/// `fw_marks` with the bridge family's firewall. The zone maps are the exception:
/// every port's zone must be there before a firewall's conntrack sees its frames,
/// so they are made with the first port that has a zone (`zones`), chain or not.
/// Without the chain nothing tracks connections (no firewall), so nothing is open.
fn declarations(s: &mut String, fw: Option<Conntrack>, zones: bool) {
    // The antispoof table's sets are placed the same under either Conntrack.
    let tables = std::iter::once(("bridge", TABLE, Conntrack::Bridge))
        .chain(fw.map(|ct| (ct.family(), FW_TABLE, ct)));
    let zones = zones || fw == Some(Conntrack::Bridge);
    let wanted =
        |set: &Set| (set.marks_for.is_none() || set.marks_for == fw) && (!set.zone || zones);
    for (family, table, ct) in tables {
        let _ = writeln!(s, "add table {family} {table}");
        for set in all_sets(ct).filter(|set| set.table == table && wanted(set)) {
            let _ = writeln!(
                s,
                "add {} {family} {table} {} {{ {} }}",
                set.kind,
                set.name(),
                set.decl
            );
        }
    }
}

/// Makes sure base chain `chain` exists with `hook` and holds exactly `rules`: flushed
/// and refilled in the same transaction, so it is never seen empty, and a node whose
/// chains an older skerry wrote gets these.
fn base_chain<R: AsRef<str>>(
    s: &mut String,
    at: (&str, &str),
    chain: &str,
    hook: &str,
    rules: &[R],
) {
    let (family, table) = at;
    let _ = writeln!(
        s,
        "add chain {family} {table} {chain} {{ type filter hook {hook}; policy accept; }}"
    );
    fill_chain(s, at, chain, rules);
}

/// Makes sure `chain` of table `at` exists and holds exactly `rules` (flushed and
/// refilled).
fn fill_chain<R: AsRef<str>>(s: &mut String, at: (&str, &str), chain: &str, rules: &[R]) {
    let (family, table) = at;
    let _ = writeln!(s, "add chain {family} {table} {chain}");
    let _ = writeln!(s, "flush chain {family} {table} {chain}");
    let _ = writeln!(s, "add chain {family} {table} {chain} {{");
    for r in rules {
        let _ = writeln!(s, "    {}", r.as_ref());
    }
    let _ = writeln!(s, "}}");
}

/// Whether any of `els` is a port's conntrack zone.
fn zoned(els: &[Element]) -> bool {
    els.iter().any(|e| e.set.zone)
}

/// The tables, sets and the fixed chains; the firewall's where `fw` places it, and
/// the zone maps where `zones` says a port has a zone.
fn skeleton(s: &mut String, fw: Option<Conntrack>, zones: bool) {
    declarations(s, fw, zones);
    let bridge = ("bridge", TABLE);
    for class in 0..CLASSES {
        fill_chain(s, bridge, &format!("class_{class}"), &class_rules(class));
    }
    // Before conntrack (-200) and br_netfilter (0) see the frame.
    base_chain(
        s,
        bridge,
        "prerouting",
        "prerouting priority -300",
        prerouting(fw),
    );
    // Each hook costs every frame (host/README.md, "Measured"): without a firewall
    // on the node a frame meets prerouting's alone.
    let Some(ct) = fw else {
        return;
    };
    if ct == Conntrack::BrNetfilter {
        // Before br_netfilter hands the packet to the inet hooks.
        base_chain(
            s,
            bridge,
            "forward",
            "forward priority -300",
            BRIDGE_FORWARD,
        );
    }
    let at = (ct.family(), FW_TABLE);
    for i in 0..SHARDS {
        fill_chain(s, at, &format!("fw_{i}"), &shard_rules(i));
    }
    let (head, hook) = match ct {
        Conntrack::Bridge => (BRIDGE_FIREWALL_HEAD, "forward priority -200"),
        Conntrack::BrNetfilter => (&[][..], "forward priority 0"),
    };
    base_chain(s, at, "forward", hook, &firewall(head));
}

/// The set whose presence says the chains hold this build's rules: `rules_` and a
/// hash of every chain's text. A [`Form::Elements`] script adds to it, so on tables
/// an older build filled (a development host, a test machine used again) it is
/// refused and [`Form::Full`] refills the chains, which declares it.
fn generation() -> &'static str {
    static GENERATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    GENERATION.get_or_init(|| {
        let mut s = String::new();
        skeleton(&mut s, Some(Conntrack::Bridge), true);
        skeleton(&mut s, Some(Conntrack::BrNetfilter), false);
        format!("rules_{:08x}", mark_of(&s))
    })
}

/// [`generation`]'s set, made (with its one element) by a full script.
fn declare_generation(s: &mut String) {
    let gen = generation();
    let _ = writeln!(s, "add set bridge {TABLE} {gen} {{ type mark; }}");
    check_generation(s);
}

/// The line that fails where [`generation`]'s set is missing.
fn check_generation(s: &mut String) {
    let _ = writeln!(
        s,
        "add element bridge {TABLE} {} {{ 0x00000001 }}",
        generation()
    );
}

/// One element of one of [`SETS`], as nft writes it (`KEY` or `KEY : VALUE`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    /// Its set.
    pub set: Set,
    /// The element's text.
    pub text: String,
}

impl Element {
    fn new(set: Set, text: String) -> Self {
        Element { set, text }
    }

    /// The key alone (what `delete element` takes from a map).
    fn key(&self) -> &str {
        match self.set.kind {
            "map" => self.text.split(" : ").next().unwrap_or(&self.text),
            _ => &self.text,
        }
    }

    /// Whether it is the mark's claim in `mark_ports` (recorded only once the kernel
    /// took it: another port's claim on a colliding mark is not this port's to delete).
    pub fn is_mark_claim(&self) -> bool {
        self.set == MARK_PORTS
    }
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

/// Every element `p` puts in the sets, sorted and without repeats.
pub fn elements(p: &PortPolicy, ct: Conntrack) -> Vec<Element> {
    let mut out = BTreeSet::new();
    let port = format!("\"{}\"", p.port);
    let mark = format!("0x{:08x}", mark_of(&p.port));
    let mut add = |set: Set, text: String| out.insert(Element::new(set, text));
    let class = class_of(p);
    add(PORT_CLASS, format!("{port} : jump class_{class}"));
    add(MARK_PORTS, format!("{mark} : {port}"));
    let mac = mac_text(p.mac);
    if class & PIN_MAC != 0 {
        add(MACS, format!("{port} . {mac}"));
    }
    let fast = class & PIN_MAC != 0 && class & PIN_IP != 0;
    let zoned = ct == Conntrack::Bridge && p.zone != 0;
    if class & PIN_IP != 0 {
        let v6 = p
            .addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(a) => Some(*a),
                IpAddr::V4(_) => None,
            })
            .chain([link_local(p.mac)]);
        for a in v6 {
            add(ADDR6, format!("{port} . {a}"));
            add(NA6, format!("{port} . 0x{:032x}", u128::from(a)));
            if fast {
                add(FAST6, format!("{port} . {mac} . {a}"));
                if zoned {
                    add(FAST6Z, format!("{port} . {mac} . {a} : {}", p.zone));
                }
            }
        }
        for a in p.addrs.iter().filter(|a| a.is_ipv4()) {
            add(ADDR4, format!("{port} . {a}"));
            if fast {
                add(FAST4, format!("{port} . {mac} . {a}"));
                if zoned {
                    add(FAST4Z, format!("{port} . {mac} . {a} : {}", p.zone));
                }
            }
        }
    }
    if zoned {
        add(PORT_ZONE, format!("{port} : {}", p.zone));
        add(MAC_ZONE, format!("{mac} : {}", p.zone));
    }
    if let Some(fw) = &p.firewall {
        add(FW_ON.placed(ct), mark.clone());
        // Marked by the firewall's own chain, or under br_netfilter by skerry's.
        let marks = match ct {
            Conntrack::Bridge => FW_MARKS.placed(ct),
            Conntrack::BrNetfilter => OUT_MARKS,
        };
        add(marks, format!("{port} : {mark}"));
        if p.dhcp {
            add(FW_DHCP.placed(ct), mark.clone());
        }
        let shard = shard_of(mark_of(&p.port));
        for (set, text) in firewall_elements(&fw.rules) {
            add(set.shard(shard).placed(ct), format!("{mark} . {text}"));
        }
    }
    out.into_iter().collect()
}

/// A source network with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn new(addr: IpAddr, prefix: u8) -> Net {
        let addr = match addr {
            IpAddr::V4(a) => {
                let prefix = prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let prefix = prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Net { addr, prefix }
    }

    fn any(v6: bool) -> Net {
        match v6 {
            false => Net::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            true => Net::new(Ipv6Addr::UNSPECIFIED.into(), 0),
        }
    }

    /// Whether every address of `other` is in `self`.
    fn contains(&self, other: &Net) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && self.prefix <= other.prefix
            && Net::new(other.addr, self.prefix).addr == self.addr
    }

    fn text(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

/// One allowed protocol, source network and destination-port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Allow {
    l4: &'static str,
    from: Net,
    ports: Option<(u16, u16)>,
}

/// `(lo, hi)` with `cut` taken out: up to two ranges.
fn minus(lo: u16, hi: u16, cut: (u16, u16)) -> Vec<(u16, u16)> {
    let (clo, chi) = cut;
    if chi < lo || clo > hi {
        return vec![(lo, hi)];
    }
    let mut out = vec![];
    if clo > lo {
        out.push((lo, clo - 1));
    }
    if chi < hi {
        out.push((chi + 1, hi));
    }
    out
}

/// The firewall's rules as elements of the four firewall sets (without the mark),
/// none overlapping another of its set: the kernel's set of concatenated ranges
/// refuses an element one of whose ends lies inside another element, and rules such
/// as `port=22` beside `port="20-30"` do overlap. Source networks are either nested
/// or apart, so taking every wider network's ports out of a narrower one's ranges
/// leaves the same union of allowed traffic with no overlaps.
fn firewall_elements(rules: &[FirewallRule]) -> Vec<(Set, String)> {
    let mut allows: Vec<Allow> = vec![];
    for r in rules {
        let nets = match r.from {
            Some((addr, prefix)) => vec![Net::new(addr, prefix)],
            None => vec![Net::any(false), Net::any(true)],
        };
        for from in nets {
            // IP protocol numbers, not names: nft resolves a name with
            // getprotobyname(3), which fails without /etc/protocols ("Could not
            // resolve protocol name"); `nft list` prints names where the file is.
            let l4 = match (r.proto, from.addr.is_ipv6()) {
                (FirewallProto::Tcp, _) => "6",
                (FirewallProto::Udp, _) => "17",
                (FirewallProto::Icmp, false) => "1",
                (FirewallProto::Icmp, true) => "58",
            };
            let ports = match r.proto {
                FirewallProto::Icmp => None,
                _ => r.ports,
            };
            allows.push(Allow { l4, from, ports });
        }
    }
    // Wider networks first, so each allow is cut by every one that contains it.
    allows.sort_by_key(|a| a.from.prefix);
    let mut placed: Vec<Allow> = vec![];
    for a in allows {
        let covering = || {
            placed
                .iter()
                .filter(move |p| p.l4 == a.l4 && p.from.contains(&a.from))
        };
        // Every port of its network and protocol already allowed: nothing to add.
        if covering().any(|p| p.ports.is_none()) {
            continue;
        }
        let Some((lo, hi)) = a.ports else {
            // An every-port allow lives in its own set (fwp*), apart from ranges.
            placed.push(a);
            continue;
        };
        let mut pieces = vec![(lo, hi)];
        for p in covering() {
            let cut = p.ports.expect("every-port coverers were handled above");
            pieces = pieces
                .into_iter()
                .flat_map(|(lo, hi)| minus(lo, hi, cut))
                .collect();
        }
        let pieces: Vec<Allow> = pieces
            .into_iter()
            .map(|ports| Allow {
                ports: Some(ports),
                ..a
            })
            .collect();
        placed.extend(pieces);
    }
    // An every-port allow added after narrower ranges of its network makes them
    // redundant; they may stay (fw* and fwp* are different sets, so nothing overlaps).
    placed
        .into_iter()
        .map(|a| {
            let v6 = a.from.addr.is_ipv6();
            match a.ports {
                Some((lo, hi)) => {
                    let set = if v6 { FW6 } else { FW4 };
                    let ports = if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    };
                    (set, format!("{} . {} . {ports}", a.l4, a.from.text()))
                }
                None => {
                    let set = if v6 { FWP6 } else { FWP4 };
                    (set, format!("{} . {}", a.l4, a.from.text()))
                }
            }
        })
        .collect()
}

/// Adds `els`, one command per set that gets any (`add element` fails when the set
/// is not there: see [`install_script`]).
fn add_elements<'a>(s: &mut String, els: impl IntoIterator<Item = &'a Element>) {
    let mut by_set: Vec<(Set, Vec<&str>)> = vec![];
    for e in els {
        match by_set.iter_mut().find(|(set, _)| *set == e.set) {
            Some((_, texts)) => texts.push(&e.text),
            None => by_set.push((e.set, vec![&e.text])),
        }
    }
    for (set, texts) in by_set {
        let _ = writeln!(
            s,
            "add element {} {} {} {{ {} }}",
            set.family,
            set.table,
            set.name(),
            texts.join(", ")
        );
    }
}

/// Deletes `els` whether or not the kernel has them: each is added first in the same
/// transaction (a no-op when it is there), which makes its delete always valid. One
/// at a time, so two recorded elements that overlap (from two different installs)
/// never meet.
fn delete_elements<'a>(s: &mut String, els: impl IntoIterator<Item = &'a Element>) {
    for e in els {
        let (family, table, name) = (e.set.family, e.set.table, e.set.name());
        let _ = writeln!(s, "add element {family} {table} {name} {{ {} }}", e.text);
        let _ = writeln!(
            s,
            "delete element {family} {table} {name} {{ {} }}",
            e.key()
        );
    }
}

/// Whether a script makes the tables, sets and chains before its elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Elements only: for a node whose tables are in place (the usual case). Refused
    /// as a whole when they are not (a set is missing), and then the full form runs.
    /// Cheap: redeclaring a base chain costs the kernel a wait of some 15 ms.
    Elements,
    /// The tables, sets and fixed chains (made if missing, refilled), then the
    /// elements. It carries where the namespace's firewall is, if it has one already
    /// (asked of the kernel): the antispoof chain's rules depend on it
    /// ([`prerouting`]), so a port without a firewall must not refill them as if
    /// there were none.
    Full(Option<Conntrack>),
}

/// The transaction that gives the port `new` (the elements of its policy) when the
/// kernel holds `old` for it: the elements of `old` are deleted before `new` is
/// added, in one transaction, so there is no instant without rules and none with
/// both. When `exact` (the kernel holds `old`, or less of it), elements of both are
/// kept rather than deleted and added again; otherwise (`old` is several candidates
/// of what the kernel holds, see [`super::record`]) everything in it goes first, since
/// a candidate's element may overlap a held one that `new` keeps.
///
/// That the sets are there means the chains are: only [`Form::Full`] makes them,
/// together, and the chains' rules name the sets (the kernel does not delete a set
/// a rule uses). The firewall's table goes where `new`'s firewall elements are
/// placed, or `old`'s when `new` has none, or where the namespace has it.
pub fn install_script(new: &[Element], old: &[Element], exact: bool, form: Form) -> String {
    let mut s = String::new();
    match form {
        Form::Full(held) => {
            let zones = zoned(new) || zoned(old);
            skeleton(
                &mut s,
                firewall_placement(new).or(firewall_placement(old)).or(held),
                zones,
            );
            declare_generation(&mut s);
        }
        Form::Elements => check_generation(&mut s),
    }
    delete_elements(&mut s, old.iter().filter(|e| !exact || !new.contains(e)));
    add_elements(&mut s, new);
    s
}

/// The transaction that deletes `old` (what the record says the port has), in that
/// order. Its full form makes the chains too, not only the sets its deletes need:
/// sets without their chains would let a later port's elements-only script
/// succeed with no rules reading them.
pub fn remove_script(old: &[Element], form: Form) -> String {
    let mut s = String::new();
    match form {
        Form::Full(held) => {
            skeleton(&mut s, firewall_placement(old).or(held), zoned(old));
            declare_generation(&mut s);
        }
        Form::Elements => check_generation(&mut s),
    }
    delete_elements(&mut s, old);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use spec::{Firewall, NicAllow};

    fn policy() -> PortPolicy {
        PortPolicy {
            port: "sk0123abcdn0".into(),
            mac: [0x02, 0x5c, 1, 2, 3, 4],
            addrs: vec!["10.88.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            dhcp: false,
            allow: NicAllow::default(),
            firewall: None,
            tag: "admin".into(),
            vlan: 0,
            zone: 0,
        }
    }

    /// The rules script `s` fills chain `at` ("FAMILY TABLE CHAIN") with.
    fn filled(s: &str, at: &str) -> Vec<String> {
        s.split(&format!("add chain {at} {{\n"))
            .nth(1)
            .and_then(|rest| rest.split("\n}\n").next())
            .unwrap_or_else(|| panic!("{at} is not filled:\n{s}"))
            .lines()
            .map(|r| r.trim().to_owned())
            .collect()
    }

    /// The elements under br_netfilter (this machine's kernel, and the tests').
    fn els(p: &PortPolicy) -> Vec<Element> {
        elements(p, Conntrack::BrNetfilter)
    }

    fn texts(p: &PortPolicy, set: Set) -> Vec<String> {
        els(p)
            .into_iter()
            .filter(|e| e.set.family == set.family && e.set.base == set.base)
            .map(|e| e.text)
            .collect()
    }

    fn rule(proto: FirewallProto, ports: Option<(u16, u16)>, from: Option<&str>) -> FirewallRule {
        FirewallRule {
            proto,
            ports,
            from: from.map(|f| {
                let (a, p) = f.split_once('/').unwrap();
                (a.parse().unwrap(), p.parse().unwrap())
            }),
        }
    }

    #[test]
    fn antispoof_pins_mac_addresses_and_servers() {
        let mut p = policy();
        let port = "\"sk0123abcdn0\"";
        assert_eq!(texts(&p, PORT_CLASS), [format!("{port} : jump class_15")]);
        assert_eq!(texts(&p, MACS), [format!("{port} . 02:5c:01:02:03:04")]);
        assert_eq!(texts(&p, ADDR4), [format!("{port} . 10.88.0.10")]);
        assert_eq!(
            texts(&p, ADDR6),
            [
                format!("{port} . fd00::10"),
                format!("{port} . fe80::5c:1ff:fe02:304")
            ]
        );
        assert_eq!(
            texts(&p, NA6),
            [
                format!("{port} . 0xfd000000000000000000000000000010"),
                format!("{port} . 0xfe80000000000000005c01fffe020304")
            ]
        );
        let mark = format!("0x{:08x}", mark_of("sk0123abcdn0"));
        assert_eq!(texts(&p, MARK_PORTS), [format!("{mark} : {port}")]);
        // Marks are for firewalled ports only.
        assert!(texts(&p, OUT_MARKS).is_empty());
        assert!(texts(&p, FW_ON).is_empty());
        // Without a firewall, no firewall table (nothing turns on conntrack) and no
        // forward chain: a frame meets one hook of ours.
        for ct in [Conntrack::Bridge, Conntrack::BrNetfilter] {
            let s = install_script(&elements(&p, ct), &[], true, Form::Full(None));
            assert!(!s.contains(FW_TABLE), "{s}");
            assert!(!s.contains(" inet "), "{s}");
            assert!(s.contains("hook prerouting"), "{s}");
            assert!(!s.contains("hook forward"), "{s}");
        }
        // The checks themselves are fixed and name the sets.
        p.firewall = Some(Firewall::default());
        let s = install_script(&els(&p), &[], true, Form::Full(None));
        assert!(s.contains("add table inet skerry_fw\n"), "{s}");
        let fixed = PREROUTING.iter().chain(FIREWALL).map(|r| r.to_string());
        assert!(
            s.contains(&format!(
                "add chain inet skerry_fw forward {{\n    {ESTABLISHED}\n    {}\n",
                FIREWALL[0]
            )),
            "{s}"
        );
        let classes = class_rules(15).into_iter().map(String::from);
        for want in fixed.chain(classes).chain(shard_rules(3)) {
            assert!(s.contains(&format!("\n    {want}\n")), "{want}\n{s}");
        }
        assert!(
            s.contains("\n    meta mark & 0x3f vmap { 0 : jump fw_0, 1 : jump fw_1,"),
            "{s}"
        );
        assert!(s.contains("vmap { 0 : jump fw_0, 1 : jump fw_1,"), "{s}");
        assert!(s.contains(&format!(
            "add element bridge skerry addr4 {{ {port} . 10.88.0.10 }}"
        )));
    }

    /// With the bridge family's own conntrack the firewall's table is a bridge one,
    /// whose forward chain marks the frame itself: no inet table and no forward chain
    /// in `skerry` are made, and what is not IP passes (ARP among it).
    #[test]
    fn with_bridge_conntrack_the_firewall_is_in_the_bridge_table() {
        let mut p = policy();
        p.firewall = Some(Firewall {
            rules: vec![rule(FirewallProto::Tcp, Some((22, 22)), None)],
        });
        let new = elements(&p, Conntrack::Bridge);
        let s = install_script(&new, &[], true, Form::Full(None));
        assert!(!s.contains(" inet "), "{s}");
        let chain = |table: &str| filled(&s, &format!("bridge {table} forward"));
        assert!(!s.contains("add chain bridge skerry forward"), "{s}");
        let got = chain(FW_TABLE);
        assert_eq!(got, firewall(BRIDGE_FIREWALL_HEAD));
        // Packets of allowed connections meet one rule, before the marking.
        assert_eq!(got[0], ESTABLISHED);
        assert_eq!(got[1..=BRIDGE_FIREWALL_HEAD.len()], *BRIDGE_FIREWALL_HEAD);
        // Under br_netfilter the marking is skerry's forward chain, before the inet hooks.
        let brnf = install_script(&els(&p), &[], true, Form::Full(None));
        assert!(
            brnf.contains(
                "add chain bridge skerry forward { type filter hook forward priority -300;"
            ),
            "{brnf}"
        );
        assert!(
            s.contains(
                "add chain bridge skerry_fw forward { type filter hook forward priority -200;"
            ),
            "{s}"
        );
        assert!(s.contains("add chain bridge skerry_fw fw_3\n"), "{s}");
        assert!(s.contains("add set bridge skerry_fw fw4_3 {"), "{s}");
        let mark = format!("0x{:08x}", mark_of("sk0123abcdn0"));
        assert!(s.contains(&format!("add element bridge skerry_fw fw_on {{ {mark} }}")));
        assert!(s.contains(&format!(
            "add element bridge skerry_fw fw_marks {{ \"sk0123abcdn0\" : {mark} }}"
        )));
        // The same policy under br_netfilter differs only in the firewall's family,
        // and in its marks being in out_marks rather than fw_marks.
        let key = |e: &Element, family: &str| (e.set.name(), e.text.clone(), family.to_owned());
        let mut moved: Vec<_> = els(&p)
            .iter()
            .filter(|e| e.set != OUT_MARKS)
            .map(|e| key(e, "bridge"))
            .collect();
        let mut got: Vec<_> = new
            .iter()
            .filter(|e| e.set != FW_MARKS.placed(Conntrack::Bridge))
            .map(|e| key(e, e.set.family))
            .collect();
        moved.sort();
        got.sort();
        assert_eq!(moved, got);
    }

    /// The fast path holds a port's MAC with each of its addresses, and only for a
    /// port whose class pins both; any switch lifting either leaves it to its class
    /// chain.
    #[test]
    fn the_fast_path_pairs_the_mac_with_each_address() {
        let p = policy();
        let port = "\"sk0123abcdn0\"";
        let mac = "02:5c:01:02:03:04";
        assert_eq!(texts(&p, FAST4), [format!("{port} . {mac} . 10.88.0.10")]);
        assert_eq!(
            texts(&p, FAST6),
            [
                format!("{port} . {mac} . fd00::10"),
                format!("{port} . {mac} . fe80::5c:1ff:fe02:304")
            ]
        );
        // No zones under br_netfilter.
        assert!(texts(&p, FAST4Z).is_empty() && texts(&p, FAST6Z).is_empty());
        let lifted = |f: fn(&mut PortPolicy)| {
            let mut p = policy();
            f(&mut p);
            texts(&p, FAST4).len() + texts(&p, FAST6).len()
        };
        assert_eq!(lifted(|p| p.allow.mac_spoofing = true), 0);
        assert_eq!(lifted(|p| p.allow.ip_spoofing = true), 0);
        // A DHCP nic's leases are its addresses like any others'.
        assert_eq!(lifted(|p| p.dhcp = true), 3);
        // The other two switches lift checks the fast path's packets never meet.
        assert_eq!(lifted(|p| p.allow.dhcp_spoofing = true), 3);
        assert_eq!(lifted(|p| p.allow.restricted_traffic = true), 3);
        // Its rules come before the class lookup, one a family, and UDP (DHCP) and
        // ICMPv6 (RA, NA, DAD) never take it.
        let s = install_script(&els(&p), &[], true, Form::Full(None));
        let rules = filled(&s, "bridge skerry prerouting");
        assert_eq!(rules, PREROUTING);
        assert_eq!(
            rules.last().map(String::as_str),
            Some("iifname vmap @port_class")
        );
        assert_eq!(rules.len(), 3);
        assert!(rules[0].starts_with("ether type ip meta l4proto != 17 "));
        assert!(rules[1].starts_with("ether type ip6 meta l4proto != 17 meta l4proto != 58 "));
        for r in &rules[..2] {
            assert!(r.ends_with("accept"), "{r}");
        }
    }

    #[test]
    fn a_nic_without_an_ipv4_address_sends_no_ipv4() {
        let mut p = policy();
        p.addrs.retain(IpAddr::is_ipv6);
        // Pinned with no address to match: `iifname . ip saddr != @addr4` drops all.
        assert_ne!(class_of(&p) & PIN_IP, 0);
        assert!(texts(&p, ADDR4).is_empty());
    }

    /// What keeps installing from growing with the node: on a node whose tables are
    /// in place, a fresh port's script is `add element`s only: no chain (a chain per
    /// port, or redeclared base chains), no set declaration, no delete.
    #[test]
    fn installing_a_fresh_port_adds_elements_only() {
        let mut p = policy();
        p.firewall = Some(Firewall {
            rules: vec![rule(FirewallProto::Tcp, Some((22, 22)), None)],
        });
        for p in [policy(), p] {
            let s = install_script(&els(&p), &[], true, Form::Elements);
            let other: Vec<&str> = s
                .lines()
                .filter(|l| !l.starts_with("add element "))
                .collect();
            assert!(other.is_empty(), "{other:#?}");
            let full = install_script(&els(&p), &[], true, Form::Full(None));
            assert!(full.ends_with(&s), "the full form adds the same elements");
        }
    }

    #[test]
    fn reinstalling_deletes_only_what_the_new_policy_drops() {
        let old = els(&policy());
        let mut p = policy();
        p.addrs[0] = "10.88.0.11".parse().unwrap();
        let s = install_script(&els(&p), &old, true, Form::Elements);
        let deletes: Vec<&str> = s.lines().filter(|l| l.starts_with("delete")).collect();
        assert_eq!(
            deletes,
            [
                "delete element bridge skerry addr4 { \"sk0123abcdn0\" . 10.88.0.10 }",
                "delete element bridge skerry fast4 { \"sk0123abcdn0\" . 02:5c:01:02:03:04 . 10.88.0.10 }"
            ]
        );
        // The delete comes before the adds, after its own add (valid either way).
        let at = |needle: &str| s.find(needle).unwrap();
        assert!(at("delete element") < at("\"sk0123abcdn0\" . 10.88.0.11"));
        // The same policy again: nothing to delete.
        let same = install_script(&old, &old, true, Form::Elements);
        assert!(!same.contains("delete"), "{same}");
        // Not known to be exact (candidates after a crash): all of `old` goes first.
        let unsure = install_script(&old, &old, false, Form::Elements);
        let deletes = unsure.lines().filter(|l| l.starts_with("delete")).count();
        assert_eq!(deletes, old.len(), "{unsure}");
    }

    #[test]
    fn removal_deletes_the_recorded_elements_by_key() {
        let s = remove_script(&els(&policy()), Form::Elements);
        assert!(s.contains("delete element bridge skerry port_class { \"sk0123abcdn0\" }\n"));
        let mut fw = policy();
        fw.firewall = Some(Firewall::default());
        let marked = remove_script(&els(&fw), Form::Elements);
        assert!(
            marked.contains("delete element bridge skerry out_marks { \"sk0123abcdn0\" }\n"),
            "{marked}"
        );
        assert!(s.contains("delete element bridge skerry macs { \"sk0123abcdn0\" . 02:5c"));
        assert!(!s.contains("flush"), "{s}");
        assert!(!s.contains("add chain"), "{s}");
        let full = remove_script(&els(&policy()), Form::Full(None));
        assert!(full.starts_with("add table bridge skerry\n"), "{full}");
        assert!(full.ends_with(&s), "{full}");
    }

    /// A script declares the firewall's table where its elements were placed,
    /// whatever this kernel offers: a record's elements say where they went.
    #[test]
    fn scripts_declare_the_firewall_table_where_the_elements_are() {
        let mut fw = policy();
        fw.firewall = Some(Firewall::default());
        for ct in [Conntrack::Bridge, Conntrack::BrNetfilter] {
            let table = format!("add table {} {FW_TABLE}\n", ct.family());
            let placed = elements(&fw, ct);
            assert!(remove_script(&placed, Form::Full(None)).contains(&table));
            // The firewall dropped: its old elements still need their table.
            let dropped = install_script(&els(&policy()), &placed, true, Form::Full(None));
            assert!(dropped.contains(&table), "{dropped}");
        }
        let none = remove_script(&els(&policy()), Form::Full(None));
        assert!(!none.contains(FW_TABLE), "{none}");
    }

    /// An elements-only script fails on a missing set, and then the full form runs:
    /// so each set a chain reads is made only with that chain, and a removal's full
    /// form makes the chains as well as the sets.
    #[test]
    fn a_set_a_chain_reads_is_made_with_the_chain() {
        let mut p = policy();
        let forward = "add chain bridge skerry forward { type filter hook forward";
        let out_marks = "add map bridge skerry out_marks {";
        let fw_marks = "add map bridge skerry_fw fw_marks {";
        for ct in [Conntrack::Bridge, Conntrack::BrNetfilter] {
            let s = install_script(&elements(&p, ct), &[], true, Form::Full(None));
            assert!(!s.contains(out_marks) && !s.contains(forward), "{s}");
            assert!(!s.contains(fw_marks), "{s}");
        }
        p.firewall = Some(Firewall::default());
        let brnf = install_script(&els(&p), &[], true, Form::Full(None));
        assert!(brnf.contains(out_marks) && brnf.contains(forward), "{brnf}");
        assert!(!brnf.contains("fw_marks"), "{brnf}");
        let bridge_fw = install_script(
            &elements(&p, Conntrack::Bridge),
            &[],
            true,
            Form::Full(None),
        );
        assert!(bridge_fw.contains(fw_marks), "{bridge_fw}");
        assert!(!bridge_fw.contains(out_marks), "{bridge_fw}");
        for els in [els(&p), elements(&p, Conntrack::Bridge)] {
            let removal = remove_script(&els, Form::Full(None));
            let install = install_script(&els, &[], true, Form::Full(None));
            let skeleton = |s: &str| s.split("add element").next().unwrap().to_owned();
            assert_eq!(skeleton(&removal), skeleton(&install));
            assert!(removal.contains("hook prerouting"), "{removal}");
        }
    }

    #[test]
    fn under_bridge_conntrack_a_port_has_its_zone_and_a_firewall_sets_it() {
        let mut p = policy();
        p.zone = 7;
        let bridge = elements(&p, Conntrack::Bridge);
        let of = |set: Set| -> Vec<&str> {
            bridge
                .iter()
                .filter(|e| e.set == set)
                .map(|e| e.text.as_str())
                .collect()
        };
        assert_eq!(of(PORT_ZONE), ["\"sk0123abcdn0\" : 7"]);
        assert_eq!(of(MAC_ZONE), ["02:5c:01:02:03:04 : 7"]);
        // The fast path's zoned lookup gives it too, beside the plain one's set.
        let fast = "\"sk0123abcdn0\" . 02:5c:01:02:03:04 . 10.88.0.10";
        assert_eq!(of(FAST4Z), [format!("{fast} : 7")]);
        assert_eq!(of(FAST4), [fast]);
        assert_eq!(of(FAST6Z).len(), 2);
        // br_netfilter's conntrack sees the bridge, not the port: no zone there.
        assert!(!zoned(&els(&p)));
        assert!(!zoned(&elements(&policy(), Conntrack::Bridge)));
        let port_zone = "add map bridge skerry port_zone {";
        let prerouting = |s: &str| filled(s, "bridge skerry prerouting");
        // A port without a firewall brings the maps, and prerouting without any `ct`
        // rule (that would turn conntrack on).
        let s = install_script(&bridge, &[], true, Form::Full(None));
        assert!(
            s.contains(port_zone) && s.contains("add map bridge skerry mac_zone {"),
            "{s}"
        );
        assert_eq!(prerouting(&s), PREROUTING);
        assert!(!s.contains("ct zone set"), "{s}");
        // A firewall puts the zones in prerouting, before conntrack: the fast path's
        // lookup sets the port's, then the port's own for the rest of what it sends,
        // then the MAC's for what comes from an uplink. No hook of their own.
        p.firewall = Some(Firewall::default());
        let fw = elements(&p, Conntrack::Bridge);
        for s in [
            install_script(&fw, &[], true, Form::Full(None)),
            remove_script(&fw, Form::Full(None)),
            // So does a port without one on a namespace whose firewall is there.
            install_script(&bridge, &[], true, Form::Full(Some(Conntrack::Bridge))),
            remove_script(&bridge, Form::Full(Some(Conntrack::Bridge))),
        ] {
            let rules = prerouting(&s);
            assert_eq!(rules, ZONED_PREROUTING, "{s}");
            assert!(rules[0]
                .contains(" ct zone set iifname . ether saddr . ip saddr map @fast4z accept"));
            assert!(rules[1]
                .contains(" ct zone set iifname . ether saddr . ip6 saddr map @fast6z accept"));
            assert!(s.contains("add map bridge skerry fast4z {"), "{s}");
            assert_eq!(rules[2], "iifname vmap @port_class");
            assert!(s.contains(
                "add chain bridge skerry prerouting { type filter hook prerouting priority -300;"
            ));
            assert!(!s.contains("add chain bridge skerry zone"), "{s}");
            assert!(s.contains(port_zone), "{s}");
        }
        // Even from a port without a zone (it is the firewall that reads the maps).
        p.zone = 0;
        let s = install_script(
            &elements(&p, Conntrack::Bridge),
            &[],
            true,
            Form::Full(None),
        );
        assert_eq!(prerouting(&s), ZONED_PREROUTING);
        assert!(s.contains(port_zone), "{s}");
        // Nothing of zones where nothing has one.
        let s = install_script(
            &elements(&policy(), Conntrack::Bridge),
            &[],
            true,
            Form::Full(None),
        );
        assert!(!s.contains("_zone") && !s.contains("ct zone set"), "{s}");
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
        for set in [MACS, ADDR4, ADDR6, NA6] {
            assert!(texts(&p, set).is_empty(), "{}", set.name());
        }
        assert_eq!(texts(&p, PORT_CLASS), ["\"sk0123abcdn0\" : jump class_0"]);
        assert!(class_rules(0).is_empty());
        // Each switch alone.
        let one = |f: fn(&mut NicAllow)| {
            let mut p = policy();
            f(&mut p.allow);
            class_of(&p)
        };
        assert_eq!(one(|a| a.mac_spoofing = true), 15 & !PIN_MAC);
        assert_eq!(one(|a| a.restricted_traffic = true), 15 & !ONLY_IP);
        assert_eq!(one(|a| a.dhcp_spoofing = true), 15 & !NO_SERVERS);
        assert_eq!(one(|a| a.ip_spoofing = true), 15 & !PIN_IP);
        // A DHCP nic is pinned like the others: to no IPv4 address before its lease.
        let mut p = policy();
        p.dhcp = true;
        p.addrs.clear();
        assert_eq!(class_of(&p), 15);
        assert_eq!(texts(&p, MACS).len(), 1);
        assert!(texts(&p, ADDR4).is_empty() && texts(&p, FAST4).is_empty());
        // The unspecified source (a DHCP client's discover, an ARP probe) is nobody's.
        assert!(class_rules(15)
            .contains(&"ether type ip ip saddr != 0.0.0.0 iifname . ip saddr != @addr4 drop"));
    }

    #[test]
    fn each_class_chain_holds_the_checks_of_its_bits() {
        let all = class_rules(CLASSES - 1);
        for class in 0..CLASSES {
            let rules = class_rules(class);
            let has = |needle: &str| rules.iter().any(|r| r.contains(needle));
            assert_eq!(has("@macs"), class & PIN_MAC != 0, "{class}");
            assert_eq!(has("ether type != ip"), class & ONLY_IP != 0, "{class}");
            assert_eq!(has("udp sport 67"), class & NO_SERVERS != 0, "{class}");
            assert_eq!(has("@addr4"), class & PIN_IP != 0, "{class}");
            assert!(rules.iter().all(|r| all.contains(r)));
        }
        assert_eq!(all.len(), 10);
    }

    #[test]
    fn firewall_rules_become_elements_of_the_marks_sets() {
        let mut p = policy();
        p.dhcp = true;
        p.firewall = Some(Firewall {
            rules: vec![
                rule(FirewallProto::Tcp, Some((22, 22)), None),
                rule(FirewallProto::Udp, Some((8000, 8080)), Some("10.88.0.7/24")),
                rule(FirewallProto::Tcp, None, Some("fd00::/64")),
                rule(FirewallProto::Icmp, None, None),
            ],
        });
        let m = format!("0x{:08x}", mark_of("sk0123abcdn0"));
        assert_eq!(texts(&p, FW_ON), std::slice::from_ref(&m));
        assert_eq!(texts(&p, FW_DHCP), std::slice::from_ref(&m));
        assert_eq!(
            texts(&p, FW4),
            [
                // The host bits of `from` are cleared; protocols are numbers (17 udp).
                format!("{m} . 17 . 10.88.0.0/24 . 8000-8080"),
                format!("{m} . 6 . 0.0.0.0/0 . 22"),
            ]
        );
        assert_eq!(texts(&p, FW6), [format!("{m} . 6 . ::/0 . 22")]);
        let shard = mark_of("sk0123abcdn0") % SHARDS;
        for e in els(&p).iter().filter(|e| e.set.base.starts_with("fw")) {
            match e.set.base {
                "fw_on" | "fw_dhcp" => assert_eq!(e.set.shard, None),
                _ => assert_eq!(e.set.shard, Some(shard), "{e:?}"),
            }
        }
        assert_eq!(texts(&p, FWP4), [format!("{m} . 1 . 0.0.0.0/0")]);
        assert_eq!(
            texts(&p, FWP6),
            [format!("{m} . 58 . ::/0"), format!("{m} . 6 . fd00::/64")]
        );
        // No firewall: no elements in its sets, though the port keeps its mark.
        let none = els(&policy());
        assert!(none.iter().all(|e| e.set.family == "bridge"), "{none:?}");
    }

    /// The union of allowed traffic is kept while no two elements of a set overlap
    /// (the kernel refuses an element with an end inside another).
    #[test]
    fn overlapping_rules_are_split_into_disjoint_elements() {
        let r = |ports, from| rule(FirewallProto::Tcp, Some(ports), Some(from));
        let rules = vec![
            r((25, 35), "10.1.0.0/16"),
            r((20, 30), "10.0.0.0/8"),
            r((22, 22), "10.0.0.0/8"),
            r((1, 100), "192.168.0.0/16"),
            r((40, 40), "10.1.2.3/32"),
            rule(FirewallProto::Tcp, None, Some("172.16.0.0/12")),
            r((80, 80), "172.16.1.0/24"),
        ];
        let got: Vec<String> = firewall_elements(&rules).into_iter().map(|e| e.1).collect();
        assert_eq!(
            got,
            [
                "6 . 10.0.0.0/8 . 20-30",
                "6 . 172.16.0.0/12",
                "6 . 10.1.0.0/16 . 31-35",
                "6 . 192.168.0.0/16 . 1-100",
                "6 . 10.1.2.3/32 . 40",
            ]
        );
        assert_eq!(minus(1, 10, (1, 10)), []);
        assert_eq!(minus(1, 10, (3, 4)), [(1, 2), (5, 10)]);
        assert_eq!(minus(1, 10, (11, 20)), [(1, 10)]);
        assert_eq!(minus(0, 65535, (0, 0)), [(1, 65535)]);
        assert_eq!(minus(0, 65535, (65535, 65535)), [(0, 65534)]);
    }

    #[test]
    fn every_recorded_set_is_known_by_name() {
        for ct in [Conntrack::Bridge, Conntrack::BrNetfilter] {
            for set in all_sets(ct) {
                assert_eq!(set_named(set.family, &set.name()), Some(set));
            }
            assert_eq!(all_sets(ct).count(), SINGLE.len() + 4 * SHARDS as usize);
        }
        let past = format!("fw4_{SHARDS}");
        for bad in ["fw4", &past, "fw4_01", "fw4_x", "fw4_", "fw_on_1", "macs_1"] {
            assert_eq!(set_named("inet", bad), None, "{bad}");
        }
        assert_eq!(set_named("inet", "macs"), None);
    }
}
