//! The `firewall { allow "tcp" port=22 from="10.88.0.0/24"; ... }` block.

use super::values::describe;
use crate::error::Collector;
use crate::format::parse_cidr;
use crate::model::{Firewall, FirewallProto, FirewallRule};
use crate::suggest::closest;
use kdl::{KdlEntry, KdlNode, KdlValue};
use std::net::IpAddr;

/// Largest number of rules one firewall may hold: each becomes a kernel rule on the
/// instance's port, and a manifest must not be able to make that unbounded.
pub const MAX_RULES: usize = 256;

const RULE_FIELDS: &[&str] = &["port", "from"];

const EXAMPLE: &str = "write: firewall { allow \"tcp\" port=22 from=\"10.88.0.0/24\"; }";

/// Reads a `firewall` node; `None` when it has problems (recorded in `c`).
pub(super) fn firewall(c: &mut Collector, node: &KdlNode) -> Option<Firewall> {
    let mut ok = true;
    for e in node.entries() {
        c.push(e.span(), "`firewall` takes a block of `allow` rules")
            .help = Some(EXAMPLE.into());
        ok = false;
    }
    let mut rules = Vec::new();
    if let Some(children) = node.children() {
        for rule in children.nodes() {
            if rules.len() == MAX_RULES {
                c.push(
                    rule.name().span(),
                    format!("a firewall holds at most {MAX_RULES} rules"),
                );
                return None;
            }
            match allow_rule(c, rule) {
                Some(r) => rules.push(r),
                None => ok = false,
            }
        }
    }
    ok.then_some(Firewall { rules })
}

/// One `allow PROTO [port=..] [from=..]` line.
fn allow_rule(c: &mut Collector, node: &KdlNode) -> Option<FirewallRule> {
    let word = node.name().value();
    if word != "allow" {
        c.push(
            node.name().span(),
            format!("unknown firewall rule `{word}`: rules are `allow` lines (the rest is denied)"),
        )
        .help = Some(EXAMPLE.into());
        return None;
    }
    if let Some(children) = node.children() {
        c.push(children.span(), "`allow` takes no block");
        return None;
    }
    let mut proto = None;
    let mut ports = None;
    let mut from = None;
    let mut ok = true;
    let mut seen: Vec<&str> = Vec::new();
    for e in node.entries() {
        match e.name().map(|k| k.value()) {
            None if proto.is_none() && ok => {
                proto = protocol(c, e);
                ok &= proto.is_some();
            }
            None => {
                c.push(e.span(), "`allow` takes one protocol; this value is extra");
                ok = false;
            }
            Some(k) if seen.contains(&k) => {
                c.push(e.span(), format!("`{k}` is given twice"));
                ok = false;
            }
            Some("port") => {
                seen.push("port");
                ports = port_range(c, e);
                ok &= ports.is_some();
            }
            Some("from") => {
                seen.push("from");
                from = source(c, e);
                ok &= from.is_some();
            }
            Some(k) => {
                c.push(e.span(), format!("unknown rule field `{k}`")).help =
                    Some(match closest(k, RULE_FIELDS) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("rule fields are: {}", RULE_FIELDS.join(", ")),
                    });
                ok = false;
            }
        }
    }
    let Some(proto) = proto else {
        if ok {
            c.push(node.name().span(), "`allow` needs a protocol").help =
                Some(format!("one of: {}", FirewallProto::ALL.join(", ")));
        }
        return None;
    };
    if proto == FirewallProto::Icmp && ports.is_some() {
        let span = node
            .entries()
            .iter()
            .find(|e| e.name().is_some_and(|k| k.value() == "port"))
            .map_or(node.name().span(), KdlEntry::span);
        c.push(span, "icmp has no ports").help = Some("drop port= from this rule".into());
        return None;
    }
    ok.then_some(FirewallRule { proto, ports, from })
}

fn protocol(c: &mut Collector, e: &KdlEntry) -> Option<FirewallProto> {
    let KdlValue::String(word) = e.value() else {
        c.push(
            e.span(),
            format!("the protocol is a string, not {}", describe(e.value())),
        )
        .help = Some(format!("one of: {}", FirewallProto::ALL.join(", ")));
        return None;
    };
    let proto = FirewallProto::from_word(word);
    if proto.is_none() {
        c.push(e.span(), format!("unknown protocol `{word}`")).help =
            Some(match closest(word, FirewallProto::ALL) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("protocols are: {}", FirewallProto::ALL.join(", ")),
            });
    }
    proto
}

/// `port=N` or `port="A-B"`, each in 1-65535, A <= B.
fn port_range(c: &mut Collector, e: &KdlEntry) -> Option<(u16, u16)> {
    let bad = |c: &mut Collector, what: String| {
        c.push(e.span(), what).help =
            Some("a port is 1 to 65535; a range is written port=\"8000-8080\"".into());
        None
    };
    let one = |s: &str| s.trim().parse::<u32>().ok();
    let (lo, hi) = match e.value() {
        KdlValue::Integer(n) => {
            let n = u32::try_from(*n).unwrap_or(0);
            (n, n)
        }
        KdlValue::String(s) => match s.split_once('-') {
            Some((a, b)) => match (one(a), one(b)) {
                (Some(a), Some(b)) => (a, b),
                _ => return bad(c, format!("`{s}` is not a port range")),
            },
            None => match one(s) {
                Some(n) => (n, n),
                None => return bad(c, format!("`{s}` is not a port")),
            },
        },
        other => return bad(c, format!("`port` takes a number, not {}", describe(other))),
    };
    if !(1..=65535).contains(&lo) || !(1..=65535).contains(&hi) {
        return bad(c, "port outside 1-65535".into());
    }
    if lo > hi {
        return bad(c, format!("port range {lo}-{hi} runs backwards"));
    }
    Some((lo as u16, hi as u16))
}

/// `from="ADDR"` (one host) or `from="ADDR/PREFIX"`.
fn source(c: &mut Collector, e: &KdlEntry) -> Option<(IpAddr, u8)> {
    let KdlValue::String(s) = e.value() else {
        c.push(
            e.span(),
            format!("`from` takes a string, not {}", describe(e.value())),
        );
        return None;
    };
    let parsed = if s.contains('/') {
        parse_cidr(s).ok()
    } else {
        s.parse::<IpAddr>()
            .ok()
            .map(|a| (a, if a.is_ipv4() { 32 } else { 128 }))
    };
    if parsed.is_none() {
        c.push(
            e.span(),
            format!("`{s}` is not an address or network like 10.88.0.0/24"),
        );
    }
    parsed
}
