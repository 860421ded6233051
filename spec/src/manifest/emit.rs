//! [`InstanceSpec`] -> KDL text. init stores instances created through the API as
//! manifest files, so what this writes must read back to the same spec.

use crate::format::format_size;
use crate::model::*;
use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};

/// Writes `spec` as a KDL manifest holding one instance node. Every property is
/// written out, defaults included, so the file says exactly what runs.
pub fn to_kdl(spec: &InstanceSpec) -> String {
    let mut doc = KdlDocument::new();
    doc.nodes_mut().push(instance_node(spec));
    doc.autoformat();
    doc.to_string()
}

fn instance_node(spec: &InstanceSpec) -> KdlNode {
    let mut node = KdlNode::new(spec.kind.as_str());
    node.push(KdlEntry::new(spec.name.as_str()));
    let body = node.ensure_children().nodes_mut();
    if let Some(u) = spec.uuid {
        body.push(prop("uuid", u.to_string()));
    }
    if spec.ensure == Ensure::Absent {
        body.push(prop("ensure", "absent"));
    }
    body.push(prop("image", image_text(&spec.image)));
    body.push(prop("memory", format_size(spec.memory)));
    body.push(prop("autoboot", spec.autoboot));
    match &spec.kind {
        Kind::Zone(z) => {
            body.push(prop("cpu-cap", i128::from(z.cpu_cap)));
            body.push(prop("pids", i128::from(z.pids)));
            if let Some(q) = z.quota {
                body.push(prop("quota", format_size(q)));
            }
            body.push(prop("hostname", z.hostname.as_str()));
            if !z.init.is_empty() {
                let mut init = KdlNode::new("init");
                for arg in &z.init {
                    init.push(KdlEntry::new(arg.as_str()));
                }
                body.push(init);
            }
            for (k, v) in &z.env {
                let mut env = KdlNode::new("env");
                env.push(KdlEntry::new(k.as_str()));
                env.push(KdlEntry::new(v.as_str()));
                body.push(env);
            }
        }
        Kind::Hvm(h) => {
            body.push(prop("vcpus", i128::from(h.vcpus)));
            if h.cpu_cap != 0 {
                body.push(prop("cpu-cap", i128::from(h.cpu_cap)));
            }
            for d in &h.disks {
                let mut disk = KdlNode::new("disk");
                disk.push(KdlEntry::new(d.name.as_str()));
                if d.boot {
                    disk.push(KdlEntry::new_prop("boot", true));
                }
                if let Some(size) = d.size {
                    disk.push(KdlEntry::new_prop("size", format_size(size)));
                }
                body.push(disk);
            }
            if let Some(cmdline) = &h.cmdline {
                body.push(prop("cmdline", cmdline.as_str()));
            }
        }
    }
    for nic in &spec.nics {
        body.push(nic_node(nic));
    }
    for r in &spec.resolvers {
        body.push(prop("resolver", r.to_string()));
    }
    if let Some(s) = &spec.user_script {
        body.push(prop("user-script", s.as_str()));
    }
    if let Some(s) = &spec.user_data {
        body.push(prop("user-data", s.as_str()));
    }
    for key in &spec.ssh_keys {
        body.push(prop("ssh-key", key.as_str()));
    }
    if let Some(fw) = &spec.firewall {
        body.push(firewall_node(fw));
    }
    if !spec.metadata.is_empty() {
        let mut md = KdlNode::new("metadata");
        let kv = md.ensure_children().nodes_mut();
        for (k, v) in &spec.metadata {
            kv.push(prop(k, v.as_str()));
        }
        body.push(md);
    }
    node
}

fn nic_node(nic: &Nic) -> KdlNode {
    let mut n = KdlNode::new("nic");
    n.push(KdlEntry::new(nic.name.as_str()));
    n.push(KdlEntry::new_prop("tag", nic.tag.as_str()));
    match nic.ip {
        IpConfig::None => {}
        IpConfig::Dhcp => n.push(KdlEntry::new_prop("ip", "dhcp")),
        IpConfig::Static { addr, prefix } => {
            n.push(KdlEntry::new_prop("ip", format!("{addr}/{prefix}")))
        }
    }
    if let Some(gw) = nic.gateway {
        n.push(KdlEntry::new_prop("gateway", gw.to_string()));
    }
    if let Some(mtu) = nic.mtu {
        n.push(KdlEntry::new_prop("mtu", i128::from(mtu)));
    }
    if let Some(mac) = nic.mac {
        n.push(KdlEntry::new_prop("mac", mac.to_string()));
    }
    if nic.vlan != 0 {
        n.push(KdlEntry::new_prop("vlan", i128::from(nic.vlan)));
    }
    for (key, on) in [
        ("allow-ip-spoofing", nic.allow.ip_spoofing),
        ("allow-mac-spoofing", nic.allow.mac_spoofing),
        ("allow-dhcp-spoofing", nic.allow.dhcp_spoofing),
        ("allow-restricted-traffic", nic.allow.restricted_traffic),
    ] {
        if on {
            n.push(KdlEntry::new_prop(key, true));
        }
    }
    n
}

fn firewall_node(fw: &Firewall) -> KdlNode {
    let mut n = KdlNode::new("firewall");
    let rules = n.ensure_children().nodes_mut();
    for r in &fw.rules {
        let mut rule = KdlNode::new("allow");
        rule.push(KdlEntry::new(r.proto.as_str()));
        match r.ports {
            Some((lo, hi)) if lo == hi => rule.push(KdlEntry::new_prop("port", i128::from(lo))),
            Some((lo, hi)) => rule.push(KdlEntry::new_prop("port", format!("{lo}-{hi}"))),
            None => {}
        }
        if let Some((addr, prefix)) = r.from {
            rule.push(KdlEntry::new_prop("from", format!("{addr}/{prefix}")));
        }
        rules.push(rule);
    }
    n
}

/// The text an [`ImageRef`] is written as in a manifest.
pub fn image_text(image: &ImageRef) -> String {
    image.to_string()
}

fn prop(name: &str, value: impl Into<KdlValue>) -> KdlNode {
    let mut n = KdlNode::new(name);
    n.push(KdlEntry::new(value));
    n
}
