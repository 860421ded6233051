//! `vmadm update`: a SmartOS update payload applied to an instance's spec, saying
//! whether the change needs a restart.

use super::check::{as_bool, as_int};
use super::convert::{hvm_disks, nics_from, scalar_map};
use super::{validate_update_with, Options, SmartosErrors};
use crate::diff::{self, Change, Effect};
use crate::mac::MacAddr;
use crate::model::*;
use serde_json::{Map, Value};

/// The result of applying an update payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    /// The spec with the update applied.
    pub spec: InstanceSpec,
    /// Whether a running instance must restart for the change to take effect (limits
    /// of a zone apply live; devices, vCPUs, guest memory, host name and resolvers
    /// apply at the next start).
    pub needs_restart: bool,
    /// What changed, per property (`memory: 256M -> 1G`), and what each takes.
    pub changes: Vec<Change>,
}

/// Applies the SmartOS update payload `json_text` to `current`. The payload is first
/// validated for the instance's brand family (zones as `joyent`, HVMs as `kvm`).
pub fn apply_update(
    current: &InstanceSpec,
    json_text: &str,
    opts: Options<'_>,
) -> Result<Updated, SmartosErrors> {
    let brand = match current.kind {
        Kind::Zone(_) => "joyent",
        Kind::Hvm(_) => "kvm",
    };
    validate_update_with(brand, json_text, opts)?;
    let p: Map<String, Value> = serde_json::from_str(json_text).map_err(|e| SmartosErrors {
        notes: vec![e.to_string()],
        ..Default::default()
    })?;
    let mut u = Updater {
        spec: current.clone(),
        errs: SmartosErrors::default(),
    };
    u.apply(&p);
    if !u.errs.is_empty() {
        return Err(u.errs);
    }
    super::check_as_manifest(&u.spec, &mut u.errs);
    if !u.errs.is_empty() {
        return Err(u.errs);
    }
    let changes = diff::changes(current, &u.spec);
    if let Some(c) = changes.iter().find(|c| c.effect == Effect::Recreate) {
        u.errs
            .bad_value(&c.property, format!("{c}: an update cannot do this"));
        return Err(u.errs);
    }
    Ok(Updated {
        needs_restart: diff::effect(&changes) == Some(Effect::Restart),
        spec: u.spec,
        changes,
    })
}

struct Updater {
    spec: InstanceSpec,
    errs: SmartosErrors,
}

impl Updater {
    fn apply(&mut self, p: &Map<String, Value>) {
        let int_of = |k: &str| p.get(k).and_then(as_int);
        if let Some(alias) = p.get("alias").and_then(Value::as_str) {
            if alias != self.spec.name {
                self.errs.bad_value(
                    "alias",
                    format!(
                        "the name `{}` is the instance's identity and cannot change; declare a new instance instead",
                        self.spec.name
                    ),
                );
            }
        }
        if let Some(b) = p.get("autoboot").and_then(as_bool) {
            self.spec.autoboot = b;
        }
        if let Some(mib) = int_of("max_physical_memory").or_else(|| int_of("ram")) {
            self.spec.memory = mib as u64 * (1 << 20);
        }
        if let Some(list) = p.get("resolvers").and_then(Value::as_array) {
            self.spec.resolvers = list
                .iter()
                .filter_map(|x| x.as_str()?.parse().ok())
                .collect();
        }
        if let Some(m) = p.get("set_customer_metadata").and_then(Value::as_object) {
            for (k, v) in scalar_map(m) {
                self.spec.set_customer_metadata(&k, &v);
            }
        }
        if let Some(keys) = p.get("remove_customer_metadata").and_then(Value::as_array) {
            for k in keys.iter().filter_map(Value::as_str) {
                self.spec.remove_customer_metadata(k);
            }
        }
        self.apply_nics(p);
        // `true` turns on an empty firewall (deny all inbound) unless one is there;
        // `false` removes the block with its rules (SmartOS keeps them in fwadm).
        match p.get("firewall_enabled").and_then(as_bool) {
            Some(true) if self.spec.firewall.is_none() => {
                self.spec.firewall = Some(Firewall::default())
            }
            Some(false) => self.spec.firewall = None,
            _ => {}
        }
        match &mut self.spec.kind {
            Kind::Zone(z) => {
                if let Some(n) = int_of("cpu_cap") {
                    z.cpu_cap = n as u32;
                }
                if let Some(n) = int_of("max_lwps") {
                    z.pids = n as u64;
                }
                if let Some(n) = int_of("quota") {
                    z.quota = (n > 0).then(|| n as u64 * (1 << 30));
                }
                if let Some(h) = p.get("hostname").and_then(Value::as_str) {
                    z.hostname = h.to_owned();
                }
            }
            Kind::Hvm(h) => {
                if let Some(n) = int_of("vcpus") {
                    h.vcpus = n as u32;
                }
                if let Some(n) = int_of("cpu_cap") {
                    h.cpu_cap = n as u32;
                }
                if let Some(list) = p.get("add_disks").and_then(Value::as_array) {
                    let (image, new) = hvm_disks(list, &mut self.errs);
                    if image.is_some() || new.iter().any(|d| d.boot) {
                        self.errs.bad_value(
                            "add_disks",
                            "an instance keeps its boot disk; added disks are blank".into(),
                        );
                    }
                    for mut d in new {
                        let free = (0..)
                            .map(|i| format!("disk{i}"))
                            .find(|n| !h.disks.iter().any(|x| &x.name == n))
                            .expect("a free name");
                        d.name = free;
                        h.disks.push(d);
                    }
                }
                if let Some(names) = p.get("remove_disks").and_then(Value::as_array) {
                    for name in names.iter().filter_map(Value::as_str) {
                        match h.disks.iter().position(|d| d.name == name) {
                            Some(i) if h.disks[i].boot => self
                                .errs
                                .bad_value("remove_disks", format!("`{name}` is the boot disk")),
                            Some(i) => {
                                h.disks.remove(i);
                            }
                            None => self
                                .errs
                                .bad_value("remove_disks", format!("no disk is named `{name}`")),
                        }
                    }
                }
            }
        }
    }

    fn apply_nics(&mut self, p: &Map<String, Value>) {
        if let Some(list) = p.get("remove_nics").and_then(Value::as_array) {
            for key in list.iter().filter_map(Value::as_str) {
                let before = self.spec.nics.len();
                // A key that is no MAC can only be a name.
                let mac = key.parse::<MacAddr>().ok();
                self.spec
                    .nics
                    .retain(|n| n.name != key && (mac.is_none() || n.mac != mac));
                if self.spec.nics.len() == before {
                    self.errs
                        .bad_value("remove_nics", format!("no nic has the mac or name `{key}`"));
                }
            }
        }
        if let Some(list) = p.get("update_nics").and_then(Value::as_array) {
            for upd in list.iter().filter_map(Value::as_object) {
                let mac = upd
                    .get("mac")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let wanted = mac.parse::<MacAddr>().ok();
                let Some(nic) = self
                    .spec
                    .nics
                    .iter_mut()
                    .find(|n| wanted.is_some() && n.mac == wanted)
                else {
                    self.errs
                        .bad_value("update_nics.*.mac", format!("no nic has the mac {mac}"));
                    continue;
                };
                if let Some(tag) = upd.get("nic_tag").and_then(Value::as_str) {
                    nic.tag = tag.to_owned();
                }
                if let Some(mtu) = upd.get("mtu").and_then(as_int) {
                    nic.mtu = Some(mtu as u32);
                }
                // check_payload has already held vlan_id to 0-4094.
                if let Some(vlan) = upd.get("vlan_id").and_then(as_int) {
                    nic.vlan = u16::try_from(vlan).unwrap_or(0);
                }
                for (key, switch) in [
                    ("allow_ip_spoofing", &mut nic.allow.ip_spoofing),
                    ("allow_mac_spoofing", &mut nic.allow.mac_spoofing),
                    ("allow_dhcp_spoofing", &mut nic.allow.dhcp_spoofing),
                    (
                        "allow_restricted_traffic",
                        &mut nic.allow.restricted_traffic,
                    ),
                ] {
                    if let Some(on) = upd.get(key).and_then(as_bool) {
                        *switch = on;
                    }
                }
            }
        }
        if let Some(list) = p.get("add_nics").and_then(Value::as_array) {
            let added = nics_from(list, "add_nics", &self.spec.nics, &mut self.errs);
            self.spec.nics.extend(added);
        }
    }
}
