//! Instances as flat records of named fields: what `list`, `lookup` and filters see.
//!
//! A record is built from the JSON of `List` rows or `Get` details. Field names follow
//! SmartOS where one exists (`alias`, `type`, `ram`, `max_physical_memory`, `max_lwps`,
//! `cpu_cap`, ...), and every nested value of the spec is also reachable by a dotted
//! path (`nics.0.tag`, `metadata.role`), the way `vmadm lookup` addresses them.

use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// One instance, flattened: field name -> value.
pub type Record = BTreeMap<String, Value>;

/// Fields every `List` row carries; anything else needs a `Get` per instance.
pub const SUMMARY_FIELDS: &[&str] = &[
    "uuid",
    "alias",
    "name",
    "type",
    "state",
    "image",
    "ram",
    "max_physical_memory",
    "memory",
    "autoboot",
    "pid",
    "reason",
];

/// Top-level fields that come from the instance's spec (`Get`).
pub const SPEC_FIELDS: &[&str] = &[
    "cpu_cap",
    "pids",
    "max_lwps",
    "quota",
    "hostname",
    "init",
    "env",
    "vcpus",
    "disks",
    "cmdline",
    "nics",
    "resolvers",
    "metadata",
    "customer_metadata",
    "ensure",
    "origin",
    "manifest",
];

/// `list`'s columns when `-o` is not given (SmartOS's).
pub const DEFAULT_COLUMNS: &[&str] = &["uuid", "type", "ram", "state", "alias"];
/// `list`'s sort order when `-s` is not given (SmartOS's).
pub const DEFAULT_SORT: &[&str] = &["ram", "uuid"];

const MIB: u64 = 1 << 20;

/// True when `field` names something a record may carry: a known field, or a dotted
/// path below one (`nics.0.ip`).
pub fn is_known_field(field: &str) -> bool {
    let head = field.split('.').next().unwrap_or(field);
    let known = |f: &str| SUMMARY_FIELDS.contains(&f) || SPEC_FIELDS.contains(&f);
    if field.contains('.') {
        known(head) && !SUMMARY_FIELDS.contains(&head)
    } else {
        known(field)
    }
}

/// True when `field` can be answered from a `List` row alone.
pub fn is_summary_field(field: &str) -> bool {
    SUMMARY_FIELDS.contains(&field)
}

/// Every field name, for help and "did you mean" messages.
pub fn all_fields() -> impl Iterator<Item = &'static str> {
    SUMMARY_FIELDS.iter().chain(SPEC_FIELDS).copied()
}

/// Builds a record from a `List` row or a `Get` detail, both as JSON (a detail is the
/// summary's fields plus `spec`).
pub fn from_json(instance: &Value) -> Record {
    let mut record = Record::new();
    let get = |k: &str| instance.get(k).cloned().unwrap_or(Value::Null);
    let name = get("name");
    record.insert("uuid".into(), get("uuid"));
    record.insert("alias".into(), name.clone());
    record.insert("name".into(), name);
    record.insert("type".into(), get("kind"));
    record.insert("state".into(), get("state"));
    record.insert("image".into(), get("image"));
    record.insert("autoboot".into(), get("autoboot"));
    record.insert("pid".into(), get("pid"));
    record.insert("reason".into(), get("reason"));
    let memory = get("memory");
    if let Some(bytes) = memory.as_u64() {
        record.insert("ram".into(), Value::from(bytes / MIB));
        record.insert("max_physical_memory".into(), Value::from(bytes / MIB));
    }
    record.insert("memory".into(), memory);
    if let Some(Value::Object(spec)) = instance.get("spec") {
        add_spec(&mut record, spec);
    }
    if let Some(seen) = instance.get("customer_metadata") {
        insert_flattened(&mut record, "customer_metadata", seen);
    }
    record
}

/// Spec fields the summary already answers (the summary is the observed truth).
const SPEC_SHADOWED: &[&str] = &["name", "uuid", "autoboot", "memory", "image", "kind"];

fn add_spec(record: &mut Record, spec: &Map<String, Value>) {
    for (key, value) in spec {
        if !SPEC_SHADOWED.contains(&key.as_str()) {
            insert_flattened(record, key, value);
        }
    }
    // The kind-specific properties (cpu_cap, vcpus, ...) sit at the top, as in SmartOS.
    if let Some(Value::Object(kind)) = spec.get("kind") {
        for (key, value) in kind {
            if key != "type" {
                insert_flattened(record, key, value);
            }
        }
    }
    if let Some(pids) = record.get("pids").cloned() {
        record.insert("max_lwps".into(), pids);
    }
    if let Some(file) = spec.get("origin").and_then(|o| o.get("file")) {
        record.insert("manifest".into(), file.clone());
    }
}

/// Inserts `value` under `key` and every nested value under its dotted path.
fn insert_flattened(record: &mut Record, key: &str, value: &Value) {
    record.insert(key.to_string(), value.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                insert_flattened(record, &format!("{key}.{k}"), v);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                insert_flattened(record, &format!("{key}.{i}"), v);
            }
        }
        _ => {}
    }
}

/// How a value is shown in a table cell and matched by a filter: strings bare,
/// numbers and booleans as written, absent as empty, compound values as compact JSON.
pub fn display(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Orders two values of one field: numbers numerically, everything else by its display
/// form; an absent value sorts after every present one.
pub fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let absent = |v: Option<&Value>| matches!(v, None | Some(Value::Null));
    match (absent(a), absent(b)) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    if let (Some(x), Some(y)) = (a.and_then(Value::as_f64), b.and_then(Value::as_f64)) {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    display(a).cmp(&display(b))
}

/// A record restricted to `fields`, in that order, as a JSON object (for `-j -o`).
pub fn select(record: &Record, fields: &[String]) -> Value {
    let mut out = Map::new();
    for field in fields {
        out.insert(
            field.clone(),
            record.get(field).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail() -> Value {
        json!({
            "name": "web01", "uuid": "u-1", "kind": "zone", "state": "running",
            "image": "busybox@1.36", "memory": 268435456u64, "autoboot": true,
            "pid": 42, "reason": "",
            "spec": {
                "name": "web01", "uuid": null, "ensure": "present", "autoboot": true,
                "image": {"name": {"name": "busybox", "version": "1.36"}},
                "memory": 268435456u64,
                "nics": [{"name": "net0", "tag": "admin", "ip": "dhcp", "gateway": null,
                          "mtu": null, "mac": null}],
                "resolvers": ["10.0.0.1"], "metadata": {"role": "web"},
                "kind": {"type": "zone", "cpu_cap": 50, "pids": 1024, "quota": null,
                         "hostname": "web01", "init": ["/sbin/init"], "env": []},
                "origin": {"file": "/zones/manifests/web.kdl", "line": 1, "col": 1}
            },
            "customer_metadata": {"role": "db", "color": "blue"}
        })
    }

    #[test]
    fn summary_fields_use_smartos_names_and_units() {
        let r = from_json(&detail());
        assert_eq!(r["alias"], json!("web01"));
        assert_eq!(r["type"], json!("zone"));
        assert_eq!(r["ram"], json!(256));
        assert_eq!(r["max_physical_memory"], json!(256));
        assert_eq!(
            r["image"],
            json!("busybox@1.36"),
            "the summary wins over the spec"
        );
    }

    #[test]
    fn spec_fields_are_flattened_with_dotted_paths() {
        let r = from_json(&detail());
        assert_eq!(r["cpu_cap"], json!(50));
        assert_eq!(r["max_lwps"], json!(1024));
        assert_eq!(r["nics.0.tag"], json!("admin"));
        assert_eq!(r["metadata.role"], json!("web"));
        // What the guest sees, its own writes included, as SmartOS's field.
        assert_eq!(r["customer_metadata.role"], json!("db"));
        assert_eq!(r["customer_metadata.color"], json!("blue"));
        assert_eq!(r["manifest"], json!("/zones/manifests/web.kdl"));
        assert!(!r.contains_key("kind.type"));
    }

    #[test]
    fn display_and_compare() {
        assert_eq!(display(Some(&json!("a"))), "a");
        assert_eq!(display(Some(&json!(true))), "true");
        assert_eq!(display(Some(&json!(["x"]))), "[\"x\"]");
        assert_eq!(display(None), "");
        assert_eq!(compare(Some(&json!(9)), Some(&json!(10))), Ordering::Less);
        assert_eq!(
            compare(Some(&json!("9")), Some(&json!("10"))),
            Ordering::Greater
        );
        assert_eq!(compare(None, Some(&json!(1))), Ordering::Greater);
    }

    #[test]
    fn known_fields() {
        assert!(is_known_field("ram"));
        assert!(is_known_field("nics.0.ip"));
        assert!(is_known_field("metadata.role"));
        assert!(!is_known_field("rma"));
        assert!(!is_known_field("ram.x"));
        assert!(is_summary_field("alias"));
        assert!(!is_summary_field("cpu_cap"));
    }
}
