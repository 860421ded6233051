//! What changed between two specs of the same instance, and what each change takes
//! to apply: the reconciler's "update" plan and `vmadm update` both say it from here.

use crate::format::format_size;
use crate::model::*;
use std::fmt;

/// What applying a change takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// Applies to the running instance (cgroup limits, autoboot, metadata).
    Live,
    /// Applies at the next start: a running instance must restart.
    Restart,
    /// Cannot apply to the existing instance: it must be deleted and created again,
    /// losing its data (another UUID, another kind, another HVM boot image).
    Recreate,
}

/// One changed property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The manifest property (`memory`, `nic net0`, `disk data` ...).
    pub property: String,
    /// Old value, as a manifest would write it (empty when absent).
    pub from: String,
    /// New value (empty when removed).
    pub to: String,
    /// What applying it takes.
    pub effect: Effect,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = if self.from.is_empty() {
            "(none)"
        } else {
            &self.from
        };
        let to = if self.to.is_empty() {
            "(none)"
        } else {
            &self.to
        };
        write!(f, "{}: {from} -> {to}", self.property)?;
        match self.effect {
            Effect::Live => Ok(()),
            Effect::Restart => f.write_str(" (needs restart)"),
            Effect::Recreate => f.write_str(" (needs delete and create)"),
        }
    }
}

/// The changes from `old` to `new` (the same instance name), in manifest order.
/// `origin` and `ensure` are not properties of the instance and are not compared.
pub fn changes(old: &InstanceSpec, new: &InstanceSpec) -> Vec<Change> {
    let mut out = Vec::new();
    let mut cmp = |property: &str, from: String, to: String, effect: Effect| {
        if from != to {
            out.push(Change {
                property: property.to_owned(),
                from,
                to,
                effect,
            });
        }
    };
    let opt = |v: Option<String>| v.unwrap_or_default();
    cmp(
        "uuid",
        opt(old.uuid.map(|u| u.to_string())),
        opt(new.uuid.map(|u| u.to_string())),
        // Pinning the UUID an instance already has is no change at all; the
        // reconciler compares against the assigned UUID in state.
        if old.uuid.is_none() || new.uuid.is_none() {
            Effect::Live
        } else {
            Effect::Recreate
        },
    );
    cmp(
        "kind",
        old.kind.as_str().into(),
        new.kind.as_str().into(),
        Effect::Recreate,
    );
    let image_effect = if matches!(new.kind, Kind::Hvm(_)) {
        Effect::Recreate
    } else {
        Effect::Restart
    };
    cmp(
        "image",
        old.image.to_string(),
        new.image.to_string(),
        image_effect,
    );
    let memory_effect = if matches!(new.kind, Kind::Zone(_)) {
        Effect::Live
    } else {
        Effect::Restart
    };
    cmp(
        "memory",
        format_size(old.memory),
        format_size(new.memory),
        memory_effect,
    );
    cmp(
        "autoboot",
        old.autoboot.to_string(),
        new.autoboot.to_string(),
        Effect::Live,
    );
    cmp(
        "resolver",
        join(&old.resolvers),
        join(&new.resolvers),
        Effect::Restart,
    );
    cmp(
        "metadata",
        format!("{:?}", old.metadata),
        format!("{:?}", new.metadata),
        Effect::Live,
    );
    // Served by the metadata service, which takes changes live.
    for (property, from, to) in [
        (
            "user-script",
            old.user_script.clone(),
            new.user_script.clone(),
        ),
        ("user-data", old.user_data.clone(), new.user_data.clone()),
        (
            "ssh-key",
            keys_text(&old.ssh_keys),
            keys_text(&new.ssh_keys),
        ),
    ] {
        cmp(
            property,
            opt(from.map(|t| text_summary(&t))),
            opt(to.map(|t| text_summary(&t))),
            Effect::Live,
        );
    }
    for name in union(
        old.nics.iter().map(|n| &n.name),
        new.nics.iter().map(|n| &n.name),
    ) {
        let find = |s: &InstanceSpec| s.nics.iter().find(|n| n.name == name).map(nic_text);
        // A zone's veths are plugged and unplugged in the running zone; an HVM's nics
        // are guest hardware.
        let nic_effect = if matches!(new.kind, Kind::Zone(_)) {
            Effect::Live
        } else {
            Effect::Restart
        };
        cmp(
            &format!("nic {name}"),
            opt(find(old)),
            opt(find(new)),
            nic_effect,
        );
    }
    // The monitor swaps the rules of the running instance's ports, each in one
    // transaction.
    cmp(
        "firewall",
        opt(firewall_text(&old.firewall)),
        opt(firewall_text(&new.firewall)),
        Effect::Live,
    );
    match (&old.kind, &new.kind) {
        (Kind::Zone(a), Kind::Zone(b)) => {
            cmp(
                "cpu-cap",
                a.cpu_cap.to_string(),
                b.cpu_cap.to_string(),
                Effect::Live,
            );
            cmp("pids", a.pids.to_string(), b.pids.to_string(), Effect::Live);
            cmp(
                "quota",
                opt(a.quota.map(format_size)),
                opt(b.quota.map(format_size)),
                Effect::Live,
            );
            cmp(
                "hostname",
                a.hostname.clone(),
                b.hostname.clone(),
                Effect::Restart,
            );
            cmp("init", a.init.join(" "), b.init.join(" "), Effect::Restart);
            cmp(
                "env",
                format!("{:?}", a.env),
                format!("{:?}", b.env),
                Effect::Restart,
            );
            cmp(
                "workdir",
                opt(a.workdir.clone()),
                opt(b.workdir.clone()),
                Effect::Restart,
            );
            cmp(
                "user",
                opt(a.user.clone()),
                opt(b.user.clone()),
                Effect::Restart,
            );
        }
        (Kind::Hvm(a), Kind::Hvm(b)) => {
            // The VMM's cgroup, which its monitor rewrites.
            cmp(
                "cpu-cap",
                a.cpu_cap.to_string(),
                b.cpu_cap.to_string(),
                Effect::Live,
            );
            cmp(
                "vcpus",
                a.vcpus.to_string(),
                b.vcpus.to_string(),
                Effect::Restart,
            );
            cmp(
                "cmdline",
                opt(a.cmdline.clone()),
                opt(b.cmdline.clone()),
                Effect::Restart,
            );
            for name in union(
                a.disks.iter().map(|d| &d.name),
                b.disks.iter().map(|d| &d.name),
            ) {
                let find = |h: &HvmSpec| h.disks.iter().find(|d| d.name == name).cloned();
                let (da, db) = (find(a), find(b));
                // Shrinking a disk or moving the boot flag would lose data.
                let effect = match (&da, &db) {
                    (Some(x), Some(y)) if x.boot != y.boot => Effect::Recreate,
                    (Some(x), Some(y)) if y.size < x.size => Effect::Recreate,
                    _ => Effect::Restart,
                };
                cmp(
                    &format!("disk {name}"),
                    opt(da.as_ref().map(disk_text)),
                    opt(db.as_ref().map(disk_text)),
                    effect,
                );
            }
        }
        _ => {}
    }
    out
}

/// The strongest effect among `changes` (`None` when nothing changed).
pub fn effect(changes: &[Change]) -> Option<Effect> {
    changes.iter().map(|c| c.effect).max()
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Names of both lists, old order first, each once.
fn union<'a>(
    a: impl Iterator<Item = &'a String>,
    b: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in a.chain(b) {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

fn nic_text(n: &Nic) -> String {
    let mut s = format!("tag={}", n.tag);
    match n.ip {
        IpConfig::None => {}
        IpConfig::Dhcp => s.push_str(" ip=dhcp"),
        IpConfig::Static { addr, prefix } => s.push_str(&format!(" ip={addr}/{prefix}")),
    }
    if let Some(gw) = n.gateway {
        s.push_str(&format!(" gateway={gw}"));
    }
    if let Some(mtu) = n.mtu {
        s.push_str(&format!(" mtu={mtu}"));
    }
    if let Some(mac) = n.mac {
        s.push_str(&format!(" mac={mac}"));
    }
    if n.vlan != 0 {
        s.push_str(&format!(" vlan={}", n.vlan));
    }
    for (key, on) in [
        ("allow-ip-spoofing", n.allow.ip_spoofing),
        ("allow-mac-spoofing", n.allow.mac_spoofing),
        ("allow-dhcp-spoofing", n.allow.dhcp_spoofing),
        ("allow-restricted-traffic", n.allow.restricted_traffic),
    ] {
        if on {
            s.push_str(&format!(" {key}=true"));
        }
    }
    s
}

/// A firewall as one line: `off`, or its rules.
fn firewall_text(fw: &Option<Firewall>) -> Option<String> {
    let fw = fw.as_ref()?;
    let rules: Vec<String> = fw
        .rules
        .iter()
        .map(|r| {
            let mut s = format!("allow {}", r.proto.as_str());
            if let Some((lo, hi)) = r.ports {
                s.push_str(&format!(" port={lo}-{hi}"));
            }
            if let Some((a, p)) = r.from {
                s.push_str(&format!(" from={a}/{p}"));
            }
            s
        })
        .collect();
    Some(format!("{{ {} }}", rules.join("; ")))
}

fn keys_text(keys: &[String]) -> Option<String> {
    (!keys.is_empty()).then(|| keys.join("\n"))
}

/// A long or multi-line text (a script) as one short line that still differs
/// whenever the text does: its first line, its size and a hash of it.
fn text_summary(text: &str) -> String {
    let first = text.lines().next().unwrap_or("");
    if first.len() == text.len() && text.len() <= 60 {
        return text.to_owned();
    }
    let clipped: String = first.chars().take(40).collect();
    // FNV-1a: stable, and enough to tell two versions of a script apart.
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!(
        "{clipped}... ({} lines, {} bytes, fnv {:08x})",
        text.lines().count(),
        text.len(),
        hash as u32
    )
}

fn disk_text(d: &Disk) -> String {
    let mut s = String::new();
    if d.boot {
        s.push_str("boot ");
    }
    s.push_str(&d.size.map_or_else(
        || "image size".to_owned(),
        |b| format!("size={}", format_size(b)),
    ));
    s
}

#[cfg(all(test, feature = "kdl"))]
mod tests {
    use super::*;

    fn one(text: &str) -> InstanceSpec {
        crate::parse_str("t.kdl", text).unwrap().remove(0)
    }

    #[test]
    fn zone_limits_apply_live_the_rest_at_restart() {
        let a = one("zone w { image \"busybox@1.36\"; }");
        assert!(changes(&a, &a).is_empty());
        let b = one("zone w { image \"busybox@1.36\"; memory \"1G\"; cpu-cap 50; }");
        let c = changes(&a, &b);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].to_string(), "memory: 256M -> 1G");
        assert_eq!(effect(&c), Some(Effect::Live));
        let d = one("zone w { image \"busybox@1.36\"; nic net0 tag=\"admin\" ip=\"dhcp\"; }");
        let c = changes(&a, &d);
        assert_eq!(c[0].to_string(), "nic net0: (none) -> tag=admin ip=dhcp");
        assert_eq!(effect(&c), Some(Effect::Live));
        let e = one("zone w { image \"busybox@1.36\"; hostname \"x\"; }");
        let c = changes(&a, &e);
        assert_eq!(c[0].to_string(), "hostname: w -> x (needs restart)");
        assert_eq!(effect(&c), Some(Effect::Restart));
        // An HVM's nics and memory are its hardware.
        let v = one("hvm v { image \"debian-hvm@12\"; }");
        let w = one("hvm v { image \"debian-hvm@12\"; memory \"1G\"; nic net0 tag=\"admin\"; }");
        assert!(changes(&v, &w).iter().all(|c| c.effect == Effect::Restart));
    }

    #[test]
    fn a_firewall_change_applies_live_to_both_kinds() {
        for kind in [
            "zone w { image \"busybox@1.36\"",
            "hvm v { image \"debian-hvm@12\"",
        ] {
            let off = one(&format!("{kind}; }}"));
            let on = one(&format!(
                "{kind}; firewall {{ allow \"tcp\" port=22; }}; }}"
            ));
            let c = changes(&off, &on);
            assert_eq!(c.len(), 1, "{c:?}");
            assert_eq!(c[0].property, "firewall");
            assert_eq!(effect(&c), Some(Effect::Live), "{kind}");
            assert_eq!(effect(&changes(&on, &off)), Some(Effect::Live), "{kind}");
        }
    }

    #[test]
    fn metadata_service_properties_apply_live() {
        let a = one("zone w { image \"busybox@1.36\"; }");
        let b = one(
            "zone w { image \"busybox@1.36\"; user-script \"#!/bin/sh\\necho hi\\n\"; user-data \"x\"; }",
        );
        let c = changes(&a, &b);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].property, "user-script");
        assert!(
            c[0].to.starts_with("#!/bin/sh... (2 lines, 18 bytes"),
            "{}",
            c[0]
        );
        assert_eq!(c[1].to_string(), "user-data: (none) -> x");
        assert_eq!(effect(&c), Some(Effect::Live));
        // Same first line and size, other text: still a change.
        let d = one(
            "zone w { image \"busybox@1.36\"; user-script \"#!/bin/sh\\necho ho\\n\"; user-data \"x\"; }",
        );
        assert_eq!(changes(&b, &d).len(), 1);
    }

    #[test]
    fn hvm_image_kind_and_disk_shrink_need_recreate() {
        let a = one("hvm v { image \"debian-hvm@12\"; disk data size=\"2G\"; }");
        let b = one("hvm v { image \"debian-hvm@13\"; disk data size=\"2G\"; }");
        assert_eq!(effect(&changes(&a, &b)), Some(Effect::Recreate));
        let grow = one("hvm v { image \"debian-hvm@12\"; disk data size=\"4G\"; vcpus 2; }");
        assert_eq!(effect(&changes(&a, &grow)), Some(Effect::Restart));
        assert_eq!(effect(&changes(&grow, &a)), Some(Effect::Recreate));
        let z = one("zone v { image \"debian-hvm@12\"; }");
        assert!(changes(&a, &z)
            .iter()
            .any(|c| c.property == "kind" && c.effect == Effect::Recreate));
    }
}
