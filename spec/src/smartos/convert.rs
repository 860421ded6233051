//! A checked SmartOS create payload -> [`InstanceSpec`]: property names and units
//! mapped, skerry's own rules applied (a nic gateway inside its subnet, one boot
//! disk, an HVM that boots from an image).

use super::check::{as_bool, as_int};
use super::{Family, SmartosErrors};
use crate::format::{in_subnet, netmask_prefix, parse_cidr};
use crate::model::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use uuid::Uuid;

/// MiB, SmartOS's unit of memory and disk sizes.
const MIB: u64 = 1 << 20;
/// GiB, SmartOS's unit of quota.
const GIB: u64 = 1 << 30;

/// Builds the spec of a payload that passed the property checks.
pub(crate) fn to_spec(p: &Map<String, Value>, fam: Family) -> Result<InstanceSpec, SmartosErrors> {
    let mut errs = SmartosErrors::default();
    let str_of = |k: &str| p.get(k).and_then(Value::as_str);
    let int_of = |k: &str| p.get(k).and_then(as_int);
    let pinned = str_of("uuid").and_then(|u| Uuid::parse_str(u).ok());
    // Like SmartOS, an instance without an alias is known by its UUID.
    let (name, uuid) = match (str_of("alias"), pinned) {
        (Some(alias), u) => (alias.to_owned(), u),
        (None, Some(u)) => (u.to_string(), Some(u)),
        (None, None) => {
            let u = Uuid::new_v4();
            (u.to_string(), Some(u))
        }
    };
    let memory = int_of("max_physical_memory")
        .or_else(|| int_of("ram"))
        .map_or(defaults::MEMORY, |mib| mib as u64 * MIB);
    let nics = p
        .get("nics")
        .and_then(Value::as_array)
        .map(|list| nics(list, "nics", &mut errs))
        .unwrap_or_default();
    let resolvers: Vec<IpAddr> = p
        .get("resolvers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    let metadata = p
        .get("customer_metadata")
        .and_then(Value::as_object)
        .map(scalar_map)
        .unwrap_or_default();
    if p.get("pci_devices")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        errs.bad_value(
            "pci_devices",
            "skerry does not support PCI pass-through".into(),
        );
    }
    let hostname = str_of("hostname").map(str::to_owned);
    let (image, kind) = match fam {
        Family::Zone => {
            let image = str_of("image_uuid").and_then(|u| Uuid::parse_str(u).ok());
            let kind = Kind::Zone(ZoneSpec {
                cpu_cap: int_of("cpu_cap").map_or(defaults::CPU_CAP, |n| n as u32),
                pids: int_of("max_lwps").map_or(defaults::PIDS, |n| n as u64),
                quota: int_of("quota").filter(|q| *q > 0).map(|q| q as u64 * GIB),
                hostname: hostname.unwrap_or_else(|| name.clone()),
                init: vec![defaults::INIT.to_owned()],
                env: Vec::new(),
                workdir: None,
                user: None,
            });
            (image, kind)
        }
        Family::Hvm => {
            let list = p
                .get("disks")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let (image, disks) = hvm_disks(list, &mut errs);
            if image.is_none() && errs.is_empty() {
                errs.missing(
                    "disks.0.image_uuid",
                    "skerry boots an HVM instance from an image: give its boot disk an image_uuid"
                        .into(),
                );
            }
            let kind = Kind::Hvm(HvmSpec {
                vcpus: int_of("vcpus").map_or(defaults::VCPUS, |n| n as u32),
                cpu_cap: int_of("cpu_cap").map_or(defaults::CPU_CAP, |n| n as u32),
                disks,
                cmdline: None,
            });
            (image, kind)
        }
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    let Some(image) = image else {
        errs.missing("image_uuid", "the payload names no image".into());
        return Err(errs);
    };
    let mut spec = InstanceSpec {
        name,
        uuid,
        ensure: Ensure::Present,
        autoboot: p.get("autoboot").and_then(as_bool).unwrap_or(true),
        image: ImageRef::Uuid(image),
        memory,
        nics,
        resolvers,
        metadata: BTreeMap::new(),
        user_script: None,
        user_data: None,
        ssh_keys: Vec::new(),
        // SmartOS keeps the rules apart (fwadm); with none, it denies all inbound.
        firewall: p
            .get("firewall_enabled")
            .and_then(as_bool)
            .unwrap_or(false)
            .then(Firewall::default),
        kind,
        origin: Origin::default(),
    };
    // `user-script`, `user-data` and `root_authorized_keys` become their properties.
    for (k, v) in &metadata {
        spec.set_customer_metadata(k, v);
    }
    Ok(spec)
}

/// Metadata values as strings (numbers and booleans written out).
pub(crate) fn scalar_map(m: &Map<String, Value>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// The nics of a payload list (`nics` or `add_nics`), named after their `interface`,
/// else the first free `netN`.
pub(crate) fn nics(list: &[Value], path: &str, errs: &mut SmartosErrors) -> Vec<Nic> {
    nics_from(list, path, &[], errs)
}

/// [`nics`] for an instance that already has the nics `existing`.
pub(crate) fn nics_from(
    list: &[Value],
    path: &str,
    existing: &[Nic],
    errs: &mut SmartosErrors,
) -> Vec<Nic> {
    let mut out: Vec<Nic> = Vec::new();
    for n in list.iter().filter_map(Value::as_object) {
        let s = |k: &str| n.get(k).and_then(Value::as_str);
        let flag = |k: &str| n.get(k).and_then(as_bool).unwrap_or(false);
        let Some(tag) = s("nic_tag") else {
            errs.missing(
                &format!("{path}.*.nic_tag"),
                "each nic names its network with nic_tag".into(),
            );
            continue;
        };
        if let Some(why) = crate::format::check_device_name(tag) {
            errs.bad_value(
                &format!("{path}.*.nic_tag"),
                why.replace("device name", "nic tag"),
            );
            continue;
        }
        let taken = |name: &str| existing.iter().chain(out.iter()).any(|x| x.name == name);
        let name = match s("interface") {
            Some(i) => i.to_owned(),
            None => (0..)
                .map(|i| format!("net{i}"))
                .find(|n| !taken(n))
                .expect("a free name"),
        };
        if let Some(why) = crate::format::check_device_name(&name) {
            errs.bad_value(&format!("{path}.*.interface"), why);
            continue;
        }
        if taken(&name) {
            errs.bad_value(
                &format!("{path}.*.interface"),
                format!("two nics are named {name}"),
            );
            continue;
        }
        let ip = match (s("ip"), n.get("ips").and_then(Value::as_array)) {
            (Some("dhcp" | "addrconf"), _) => IpConfig::Dhcp,
            (Some(ip), _) => match static_ip(ip, s("netmask")) {
                Some((addr, prefix)) => IpConfig::Static { addr, prefix },
                None => {
                    errs.bad_value(
                        &format!("{path}.*.ip"),
                        format!("`{ip}` is not an address skerry can configure"),
                    );
                    continue;
                }
            },
            (None, Some(ips)) => match ips.first().and_then(Value::as_str) {
                Some("dhcp" | "addrconf") => IpConfig::Dhcp,
                Some(cidr) => match parse_cidr(cidr) {
                    Ok((addr, prefix)) => IpConfig::Static { addr, prefix },
                    Err(why) => {
                        errs.bad_value(&format!("{path}.*.ips"), why.to_string());
                        continue;
                    }
                },
                None => IpConfig::None,
            },
            (None, None) => IpConfig::None,
        };
        let gateway = s("gateway")
            .or_else(|| n.get("gateways")?.as_array()?.first()?.as_str())
            .and_then(|g| g.parse::<IpAddr>().ok());
        if let (Some(gw), IpConfig::Static { addr, prefix }) = (gateway, &ip) {
            if *addr == gw {
                errs.bad_value(
                    &format!("{path}.*.gateway"),
                    format!("gateway {gw} is the nic's own address"),
                );
                continue;
            }
            if !in_subnet(*addr, *prefix, gw) {
                errs.bad_value(
                    &format!("{path}.*.gateway"),
                    format!("gateway {gw} is outside the nic's subnet {addr}/{prefix}"),
                );
                continue;
            }
        }
        out.push(Nic {
            name,
            tag: tag.to_owned(),
            gateway: gateway.filter(|_| matches!(ip, IpConfig::Static { .. })),
            ip,
            mtu: n.get("mtu").and_then(as_int).map(|m| m as u32),
            // check_payload has already refused a `mac` that does not parse.
            mac: s("mac").and_then(|m| m.parse().ok()),
            // check_payload has already held vlan_id to 0-4094.
            vlan: n
                .get("vlan_id")
                .and_then(as_int)
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(0),
            allow: NicAllow {
                ip_spoofing: flag("allow_ip_spoofing"),
                mac_spoofing: flag("allow_mac_spoofing"),
                dhcp_spoofing: flag("allow_dhcp_spoofing"),
                restricted_traffic: flag("allow_restricted_traffic"),
            },
        });
    }
    out
}

/// `ip` with `netmask` (or in CIDR form). SmartOS lets a payload leave the netmask
/// out; skerry then assumes a /24 for IPv4 (/64 for IPv6), the common case.
fn static_ip(ip: &str, netmask: Option<&str>) -> Option<(IpAddr, u8)> {
    if let Ok(cidr) = parse_cidr(ip) {
        return Some(cidr);
    }
    let addr: IpAddr = ip.parse().ok()?;
    let prefix = match netmask {
        Some(m) => netmask_prefix(m)?,
        None if addr.is_ipv4() => 24,
        None => 64,
    };
    Some((addr, prefix))
}

/// The disks of an HVM payload and the image of its boot disk. The boot disk is the
/// one with `boot: true`, else the first disk made from an image.
pub(crate) fn hvm_disks(list: &[Value], errs: &mut SmartosErrors) -> (Option<Uuid>, Vec<Disk>) {
    let objs: Vec<&Map<String, Value>> = list.iter().filter_map(Value::as_object).collect();
    let image_of = |d: &Map<String, Value>| {
        d.get("image_uuid")
            .and_then(Value::as_str)
            .and_then(|u| Uuid::parse_str(u).ok())
    };
    let boots: Vec<usize> = (0..objs.len())
        .filter(|i| objs[*i].get("boot").and_then(as_bool) == Some(true))
        .collect();
    if boots.len() > 1 {
        errs.bad_value("disks.*.boot", "only one disk can be the boot disk".into());
        return (None, Vec::new());
    }
    let boot = boots
        .first()
        .copied()
        .or_else(|| (0..objs.len()).find(|i| image_of(objs[*i]).is_some()));
    let mut image = None;
    let mut disks = Vec::new();
    for (i, d) in objs.iter().enumerate() {
        let is_boot = Some(i) == boot;
        let size = d.get("size").and_then(as_int).map(|mib| mib as u64 * MIB);
        if is_boot {
            image = image_of(d);
        } else if image_of(d).is_some() {
            errs.bad_value(
                &format!("disks.{i}.image_uuid"),
                "skerry clones an image only onto the boot disk; other disks start blank".into(),
            );
            continue;
        } else if size.is_none() {
            errs.missing(
                &format!("disks.{i}.size"),
                "a blank disk needs a size (MiB)".into(),
            );
            continue;
        }
        let name = if is_boot {
            "root".to_owned()
        } else {
            format!("disk{i}")
        };
        disks.push(Disk {
            name,
            boot: is_boot,
            size: if is_boot && image.is_some() {
                None
            } else {
                size
            },
        });
    }
    // The boot disk goes first, as in manifests.
    disks.sort_by_key(|d| !d.boot);
    (image, disks)
}
