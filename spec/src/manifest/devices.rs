//! `nic` and `disk` nodes: a name, `key=value` fields, and the boot disk rule.

use super::schema::{DISK_FIELDS, MTU_RANGE, NIC_FIELDS};
use super::values::{bool_value, describe, int_value, ip_value, size_value};
use crate::error::Collector;
use crate::format::{check_device_name, in_subnet, parse_cidr};
use crate::mac::MacAddr;
use crate::model::{Disk, IpConfig, Nic, NicAllow, MAX_VLAN};
use crate::suggest::closest;
use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;
use std::collections::HashMap;

/// Positional args and key=value fields of a nic/disk node, with unknown keys reported.
pub(super) fn device_entries<'n>(
    c: &mut Collector,
    node: &'n KdlNode,
    fields: &[&str],
) -> (Option<&'n KdlEntry>, HashMap<&'n str, &'n KdlEntry>) {
    let what = node.name().value();
    let mut name = None;
    let mut props: HashMap<&str, &KdlEntry> = HashMap::new();
    for e in node.entries() {
        match e.name() {
            None if name.is_none() => name = Some(e),
            None => {
                c.push(
                    e.span(),
                    format!("`{what}` takes one name; this value is extra"),
                )
                .help = Some(format!(
                    "fields are written key=value: {}",
                    fields.join(", ")
                ));
            }
            Some(k) if fields.contains(&k.value()) => {
                if props.insert(k.value(), e).is_some() {
                    c.push(e.span(), format!("`{}` is given twice", k.value()));
                }
            }
            Some(k) => {
                let p = c.push(e.span(), format!("unknown {what} field `{}`", k.value()));
                p.help = Some(match closest(k.value(), fields) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("{what} fields are: {}", fields.join(", ")),
                });
            }
        }
    }
    (name, props)
}

/// The device name of a nic/disk node, checked and unique among the `(kind, name)`
/// pairs already `taken` (which it joins).
pub(super) fn device_name(
    c: &mut Collector,
    node: &KdlNode,
    arg: Option<&KdlEntry>,
    taken: &mut Vec<(String, String)>,
) -> Option<String> {
    let what = node.name().value();
    let Some(arg) = arg else {
        c.push(node.name().span(), format!("`{what}` needs a name"))
            .help = Some(if what == "nic" {
            "write: nic net0 tag=\"admin\" ip=\"dhcp\"".into()
        } else {
            "write: disk data size=\"20G\"".into()
        });
        return None;
    };
    let KdlValue::String(name) = arg.value() else {
        c.push(
            arg.span(),
            format!(
                "the {what} name must be a string like {}",
                if what == "nic" { "net0" } else { "data" }
            ),
        );
        return None;
    };
    if let Some(why) = check_device_name(name) {
        c.push(arg.span(), why);
        return None;
    }
    let key = (what.to_owned(), name.clone());
    if taken.contains(&key) {
        c.push(
            arg.span(),
            format!("{what} `{name}` is declared twice in this instance"),
        );
        return None;
    }
    taken.push(key);
    Some(name.clone())
}

pub(super) fn string_field(c: &mut Collector, what: &str, e: &KdlEntry) -> Option<String> {
    match e.value() {
        KdlValue::String(s) => Some(s.clone()),
        other => {
            c.push(
                e.span(),
                format!("`{what}` takes a string, not {}", describe(other)),
            );
            None
        }
    }
}

pub(super) fn nic(
    c: &mut Collector,
    node: &KdlNode,
    taken: &mut Vec<(String, String)>,
) -> Option<Nic> {
    let (arg, props) = device_entries(c, node, NIC_FIELDS);
    let name = device_name(c, node, arg, taken);
    let mut ok = name.is_some();
    let tag = match props.get("tag") {
        Some(e) => string_field(c, "tag", e).filter(|t| match check_device_name(t) {
            Some(_) => {
                c.push(
                    e.span(),
                    format!("`{t}` is not a nic tag: 1 to 15 characters of [a-z0-9_-]"),
                );
                false
            }
            None => true,
        }),
        None => {
            c.push(
                node.name().span(),
                "this nic has no `tag`: the tag names the node network it plugs into",
            )
            .help = Some("add tag=\"admin\" (or another tag of the node's config)".into());
            None
        }
    };
    ok &= tag.is_some();
    let mut ip = IpConfig::None;
    if let Some(e) = props.get("ip") {
        match string_field(c, "ip", e).as_deref() {
            Some("dhcp") => ip = IpConfig::Dhcp,
            Some(s) => match parse_cidr(s) {
                Ok((addr, prefix)) => ip = IpConfig::Static { addr, prefix },
                Err(why) => {
                    c.push(e.span(), why.to_string());
                    ok = false;
                }
            },
            None => ok = false,
        }
    }
    let mut gateway = None;
    if let Some(e) = props.get("gateway") {
        if let Some(gw) = string_field(c, "gateway", e).and_then(|s| ip_value(c, e.span(), &s)) {
            match ip {
                IpConfig::Static { addr, prefix } if !in_subnet(addr, prefix, gw) => {
                    c.push(e.span(), format!("gateway {gw} is outside the nic's subnet {addr}/{prefix}"))
                        .help = Some("a gateway must be reachable on the link: fix the address, the prefix, or the gateway".into());
                    ok = false;
                }
                IpConfig::Static { addr, .. } if addr == gw => {
                    c.push(e.span(), format!("gateway {gw} is the nic's own address"));
                    ok = false;
                }
                IpConfig::Static { .. } => gateway = Some(gw),
                IpConfig::Dhcp | IpConfig::None => {
                    c.push(e.span(), "a gateway needs a static ip on the same nic")
                        .help =
                        Some("with ip=\"dhcp\" the gateway comes from DHCP; drop it".into());
                    ok = false;
                }
            }
        } else {
            ok = false;
        }
    }
    let mtu = match props.get("mtu") {
        Some(e) => {
            let v =
                int_value(c, "mtu", e, MTU_RANGE.0.into(), MTU_RANGE.1.into()).map(|v| v as u32);
            ok &= v.is_some();
            v
        }
        None => None,
    };
    let mac = match props.get("mac") {
        Some(e) => {
            let v = string_field(c, "mac", e).and_then(|m| match m.parse::<MacAddr>() {
                Ok(mac) => Some(mac),
                Err(_) => {
                    c.push(
                        e.span(),
                        format!("`{m}` is not a MAC address like \"02:08:20:aa:bb:cc\""),
                    );
                    None
                }
            });
            ok &= v.is_some();
            v
        }
        None => None,
    };
    let vlan = match props.get("vlan") {
        Some(e) => {
            let v = int_value(c, "vlan", e, 0, MAX_VLAN.into()).map(|v| v as u16);
            ok &= v.is_some();
            v.unwrap_or(0)
        }
        None => 0,
    };
    let mut switch = |key: &str| match props.get(key) {
        Some(e) => {
            let v = bool_value(c, key, e);
            ok &= v.is_some();
            v.unwrap_or(false)
        }
        None => false,
    };
    let allow = NicAllow {
        ip_spoofing: switch("allow-ip-spoofing"),
        mac_spoofing: switch("allow-mac-spoofing"),
        dhcp_spoofing: switch("allow-dhcp-spoofing"),
        restricted_traffic: switch("allow-restricted-traffic"),
    };
    if !ok {
        return None;
    }
    Some(Nic {
        name: name?,
        tag: tag?,
        ip,
        gateway,
        mtu,
        mac,
        vlan,
        allow,
    })
}

pub(super) fn disk(
    c: &mut Collector,
    node: &KdlNode,
    taken: &mut Vec<(String, String)>,
) -> Option<Disk> {
    let (arg, props) = device_entries(c, node, DISK_FIELDS);
    let name = device_name(c, node, arg, taken);
    let boot = match props.get("boot") {
        Some(e) => bool_value(c, "boot", e),
        None => Some(false),
    };
    let size = match props.get("size") {
        Some(e) => Some(size_value(c, "size", e, Some(1 << 20))?),
        None => None,
    };
    if boot == Some(false) && size.is_none() {
        c.push(node.name().span(), "a data disk needs a `size`")
            .help =
            Some("add size=\"20G\"; only the boot disk takes its size from the image".into());
        return None;
    }
    Some(Disk {
        name: name?,
        boot: boot?,
        size,
    })
}

/// The disks of an HVM, with the boot disk rule applied: at most one disk says
/// `boot=#true`; when none does, a boot disk `root` (the image, at its own size) comes
/// first.
pub(super) fn hvm_disks(
    c: &mut Collector,
    node: &KdlNode,
    disks: Vec<(Disk, SourceSpan)>,
) -> Option<Vec<Disk>> {
    let boots: Vec<SourceSpan> = disks
        .iter()
        .filter(|(d, _)| d.boot)
        .map(|(_, s)| *s)
        .collect();
    if boots.len() > 1 {
        let first = c.place(boots[0]);
        for span in &boots[1..] {
            c.push(
                *span,
                "a second boot disk: an hvm boots from exactly one disk",
            )
            .help = Some(format!(
                "the boot disk is already declared at {first}; drop boot=#true here"
            ));
        }
        return None;
    }
    let mut out: Vec<Disk> = disks.into_iter().map(|(d, _)| d).collect();
    if boots.is_empty() {
        if out.iter().any(|d| d.name == "root") {
            c.push(
                node.name().span(),
                "no disk is marked boot=#true, and the implicit boot disk name `root` is taken",
            )
            .help = Some("mark the disk cloned from the image with boot=#true".into());
            return None;
        }
        out.insert(
            0,
            Disk {
                name: "root".into(),
                boot: true,
                size: None,
            },
        );
    }
    Some(out)
}
