//! Checking a payload against the property table, SmartOS style: unknown names go to
//! `bad_properties`, values of the wrong shape to `bad_values`, required ones that are
//! absent to `missing_properties`. Every entry also gets a note in words.

use super::props::{self, Prop, Scope, Sub, Ty, When};
use super::{Action, Family, ImageLookup, SmartosErrors};
use crate::format::{check_hostname, check_name, is_mac, netmask_prefix, parse_cidr};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// Checks every property of `payload` for `brand` (already known good) and `action`.
pub(crate) fn check_payload(
    payload: &Map<String, Value>,
    brand: &str,
    family: Family,
    action: Action,
    images: Option<&dyn ImageLookup>,
    errs: &mut SmartosErrors,
) {
    for (name, value) in payload {
        let Some(prop) = props::find(name) else {
            errs.bad_property(name, format!("`{name}` is not a property skerry knows"));
            continue;
        };
        if !applies(prop, brand, family) {
            errs.bad_property(
                name,
                format!("`{name}` does not apply to {brand} instances"),
            );
            continue;
        }
        let allowed = match action {
            Action::Create => prop.when != When::Update,
            Action::Update => prop.when != When::Create,
        };
        if !allowed {
            let verb = if action == Action::Create {
                "create"
            } else {
                "update"
            };
            errs.bad_property(name, format!("`{name}` cannot be given to {verb}"));
            continue;
        }
        check_value(name, prop.ty, value, images, errs);
    }
}

fn applies(prop: &Prop, brand: &str, family: Family) -> bool {
    match prop.scope {
        Scope::All => true,
        Scope::Zone => family == Family::Zone,
        Scope::Hvm => family == Family::Hvm,
        Scope::Bhyve => brand == "bhyve",
    }
}

/// Reads an integer the way SmartOS does: a JSON integer or a string of digits.
pub(crate) fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s)
            if !s.is_empty()
                && s.trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit()) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// Reads a boolean the way SmartOS does: a JSON boolean or "true" / "false".
pub(crate) fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

fn check_value(
    path: &str,
    ty: Ty,
    v: &Value,
    images: Option<&dyn ImageLookup>,
    errs: &mut SmartosErrors,
) {
    let bad = |errs: &mut SmartosErrors, why: String| errs.bad_value(path, why);
    match ty {
        Ty::Str => {
            if !v.is_string() {
                bad(errs, format!("`{path}` must be a string, not {v}"));
            }
        }
        Ty::Bool => {
            if as_bool(v).is_none() {
                bad(errs, format!("`{path}` must be true or false, not {v}"));
            }
        }
        Ty::Int(min, max) => match as_int(v) {
            Some(n) if (min..=max).contains(&n) => {}
            Some(n) => bad(errs, format!("`{path}` is {n}; it must be {min} to {max}")),
            None => bad(errs, format!("`{path}` must be a whole number, not {v}")),
        },
        Ty::Uuid => {
            if v.as_str().is_none_or(|s| uuid::Uuid::parse_str(s).is_err()) {
                bad(errs, format!("`{path}` must be a UUID, not {v}"));
            }
        }
        Ty::StrList => {
            if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                bad(errs, format!("`{path}` must be an array of strings"));
            }
        }
        Ty::StrOrList => {
            if !v.is_string() && !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                bad(
                    errs,
                    format!("`{path}` must be a string or an array of strings"),
                );
            }
        }
        Ty::IntList => {
            if !v
                .as_array()
                .is_some_and(|a| a.iter().all(|x| as_int(x).is_some()))
            {
                bad(errs, format!("`{path}` must be an array of whole numbers"));
            }
        }
        Ty::ScalarMap => match v.as_object() {
            Some(m) => {
                for (k, x) in m {
                    if x.is_object() || x.is_array() || x.is_null() {
                        bad(
                            errs,
                            format!("`{path}`.`{k}` must be a string, number or boolean"),
                        );
                        break;
                    }
                }
            }
            None => bad(
                errs,
                format!("`{path}` must be an object of key/value pairs"),
            ),
        },
        Ty::Map => {
            if !v.is_object() {
                bad(errs, format!("`{path}` must be an object"));
            }
        }
        Ty::IpList => {
            let ok = v.as_array().is_some_and(|a| {
                a.iter()
                    .all(|x| x.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()))
            });
            if !ok {
                bad(errs, format!("`{path}` must be an array of IP addresses"));
            }
        }
        Ty::FsAllowed => {
            let ok = match v {
                Value::String(_) => true,
                Value::Array(a) => a
                    .iter()
                    .all(|x| x.as_str().is_some_and(|s| !s.contains(','))),
                _ => false,
            };
            if !ok {
                bad(
                    errs,
                    format!("`{path}` must be \"a,b,c\" or [\"a\", \"b\", \"c\"]"),
                );
            }
        }
        Ty::Zpool => {
            if v.as_str() != Some("zones") {
                bad(
                    errs,
                    format!("`{path}` is {v}; a skerry node has one pool, \"zones\""),
                );
            }
        }
        Ty::Alias => match v.as_str() {
            Some(s) => {
                if let Some(why) = check_name(s) {
                    bad(errs, format!("`{path}`: {why}"));
                }
            }
            None => bad(errs, format!("`{path}` must be a string, not {v}")),
        },
        Ty::Hostname => match v.as_str() {
            Some(s) => {
                if let Some(why) = check_hostname(s) {
                    bad(errs, format!("`{path}`: {why}"));
                }
            }
            None => bad(errs, format!("`{path}` must be a string, not {v}")),
        },
        Ty::Objects(sub) => match v.as_array() {
            Some(items) if items.iter().all(Value::is_object) => {
                for (i, item) in items.iter().enumerate() {
                    let obj = item.as_object().expect("checked above");
                    check_object(path, i, sub, obj, images, errs);
                }
            }
            _ => bad(errs, format!("`{path}` must be an array of objects")),
        },
    }
}

/// Checks one object of a list. Errors name the field as SmartOS does: `nics.*.mtu`
/// for a field's shape, `disks.0.image_uuid` where the position matters.
fn check_object(
    list: &str,
    index: usize,
    sub: Sub,
    obj: &Map<String, Value>,
    images: Option<&dyn ImageLookup>,
    errs: &mut SmartosErrors,
) {
    let fields = match sub {
        Sub::Nic | Sub::NicUpdate => props::NIC_FIELDS,
        Sub::Disk | Sub::DiskUpdate => props::DISK_FIELDS,
        Sub::Filesystem => props::FILESYSTEM_FIELDS,
        Sub::PciDevice => props::PCI_FIELDS,
    };
    // SmartOS names PCI device fields by index, the others by wildcard.
    let at = |field: &str| match sub {
        Sub::PciDevice => format!("{list}.{index}.{field}"),
        _ => format!("{list}.*.{field}"),
    };
    for (name, value) in obj {
        match fields.iter().find(|(f, _)| f == name) {
            Some((_, ty)) => check_value(&at(name), *ty, value, None, errs),
            None => errs.bad_property(
                &at(name),
                format!("`{name}` is not a field of {list} entries"),
            ),
        }
    }
    let s = |k: &str| obj.get(k).and_then(Value::as_str);
    match sub {
        Sub::Nic | Sub::NicUpdate => {
            if sub == Sub::NicUpdate && !obj.contains_key("mac") {
                errs.missing(
                    &at("mac"),
                    format!("each {list} entry names its nic by `mac`"),
                );
            }
            if let Some(mac) = s("mac") {
                if !is_mac(mac) {
                    errs.bad_value(&at("mac"), format!("`{mac}` is not a MAC address"));
                }
            }
            if let Some(ip) = s("ip") {
                let ok = ip == "dhcp"
                    || ip == "addrconf"
                    || ip.parse::<IpAddr>().is_ok()
                    || parse_cidr(ip).is_ok();
                if !ok {
                    errs.bad_value(
                        &at("ip"),
                        format!("`{ip}` is not an IP address or \"dhcp\""),
                    );
                }
            }
            if let Some(mask) = s("netmask") {
                if netmask_prefix(mask).is_none() {
                    errs.bad_value(
                        &at("netmask"),
                        format!("`{mask}` is not a netmask like 255.255.255.0"),
                    );
                }
            }
            if let Some(gw) = s("gateway") {
                if gw.parse::<IpAddr>().is_err() {
                    errs.bad_value(&at("gateway"), format!("`{gw}` is not an IP address"));
                }
            }
        }
        Sub::Disk => {
            let has_image = obj.contains_key("image_uuid");
            if has_image && obj.contains_key("size") {
                errs.bad_value(
                    &at("size"),
                    "a disk made from an image takes its size from the image: give image_size, not size".into(),
                );
            }
            if has_image && obj.contains_key("block_size") {
                errs.bad_value(
                    &at("block_size"),
                    "a disk made from an image has the image's block size".into(),
                );
            }
            if let (Some(images), Some(u)) = (images, s("image_uuid")) {
                if let Ok(u) = uuid::Uuid::parse_str(u) {
                    if !images.has_image(&u) {
                        errs.bad_value(
                            &format!("{list}.{index}.image_uuid"),
                            format!("image {u} is not installed (imgadm import {u})"),
                        );
                    }
                }
            }
        }
        Sub::DiskUpdate => {
            if !obj.contains_key("path") {
                errs.missing(
                    &at("path"),
                    format!("each {list} entry names its disk by `path`"),
                );
            }
        }
        Sub::Filesystem => {}
        Sub::PciDevice => {
            match s("path") {
                Some(p) if p.starts_with("/devices/") => {}
                Some(p) => errs.bad_value(&at("path"), format!("`{p}` is not a /devices/... path")),
                None if obj.contains_key("path") => {}
                None => errs.missing(&at("path"), "a PCI device needs its `path`".into()),
            }
            match s("pci_slot") {
                Some(slot) if pci_slot_ok(slot) => {}
                Some(slot) => errs.bad_value(
                    &at("pci_slot"),
                    format!("`{slot}` is not a slot bus:device:function (0-255:0-31:0-7)"),
                ),
                None if obj.contains_key("pci_slot") => {}
                None => errs.missing(&at("pci_slot"), "a PCI device needs its `pci_slot`".into()),
            }
            if let Some(model) = s("model") {
                if model != "passthru" {
                    errs.bad_value(
                        &at("model"),
                        format!("PCI device model `{model}` is unknown: use \"passthru\""),
                    );
                }
            }
        }
    }
}

/// `bus:device:function` with bus 0-255, device 0-31, function 0-7.
fn pci_slot_ok(slot: &str) -> bool {
    let parts: Vec<&str> = slot.split(':').collect();
    let num = |s: &str, max: u32| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_digit())
            && s.parse::<u32>().is_ok_and(|n| n <= max)
    };
    parts.len() == 3 && num(parts[0], 255) && num(parts[1], 31) && num(parts[2], 7)
}
