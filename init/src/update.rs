//! `Update` payloads: a JSON object of properties, SmartOS `vmadm update` style
//! (`{"max_physical_memory": 512, "cpu_cap": 50}`) or with manifest names and sizes
//! (`{"memory": "512M", "cpu-cap": 50}`). All problems are reported together.

use serde_json::{Map, Value};
use spec::{InstanceSpec, Kind};

/// Applies `payload` to `spec`; returns the manifest names of the properties that
/// actually changed.
pub fn apply(spec: &mut InstanceSpec, payload: &str) -> Result<Vec<&'static str>, Vec<String>> {
    let obj: Map<String, Value> = match serde_json::from_str(payload) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(vec!["the update payload must be a JSON object".into()]),
        Err(e) => return Err(vec![format!("update payload: {e}")]),
    };
    let before = spec.clone();
    let mut errs = Vec::new();
    for (key, v) in &obj {
        if let Err(e) = apply_one(spec, key, v) {
            errs.push(format!("{key}: {e}"));
        }
    }
    if !errs.is_empty() {
        *spec = before;
        return Err(errs);
    }
    let bad = spec::customer::problems(spec);
    if !bad.is_empty() {
        *spec = before;
        return Err(bad);
    }
    if spec.memory < spec::defaults::MIN_MEMORY {
        let m = spec.memory;
        *spec = before;
        return Err(vec![format!("memory: {m} bytes is below the 16M minimum")]);
    }
    Ok(crate::plan::changed_properties(&before, spec))
}

fn apply_one(spec: &mut InstanceSpec, key: &str, v: &Value) -> Result<(), PropertyError> {
    match (key, &mut spec.kind) {
        ("memory", _) => spec.memory = size(v, 1)?,
        ("max_physical_memory" | "ram", _) => spec.memory = size(v, 1 << 20)?,
        ("autoboot", _) => {
            spec.autoboot = v
                .as_bool()
                .ok_or(PropertyError::Expected("true or false"))?
        }
        ("resolvers" | "resolver", _) => {
            spec.resolvers = v
                .as_array()
                .ok_or(PropertyError::Expected("a list of addresses"))?
                .iter()
                .map(|r| {
                    r.as_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| PropertyError::NotAnAddress(r.to_string()))
                })
                .collect::<Result<_, _>>()?
        }
        ("customer_metadata" | "set_customer_metadata" | "metadata", _) => {
            for (k, val) in v
                .as_object()
                .ok_or(PropertyError::Expected("an object of strings"))?
            {
                let s = val
                    .as_str()
                    .ok_or_else(|| PropertyError::NotAString(k.clone()))?;
                // `user-script`, `user-data`, `root_authorized_keys`: their properties.
                spec.set_customer_metadata(k, s);
            }
        }
        ("remove_customer_metadata", _) => {
            for k in v
                .as_array()
                .ok_or(PropertyError::Expected("a list of keys"))?
            {
                spec.remove_customer_metadata(
                    k.as_str()
                        .ok_or(PropertyError::Expected("a list of keys"))?,
                );
            }
        }
        ("cpu_cap" | "cpu-cap", Kind::Zone(z)) => z.cpu_cap = uint(v)? as u32,
        ("max_lwps" | "pids", Kind::Zone(z)) => {
            z.pids = uint(v)?;
            if z.pids == 0 {
                return Err(PropertyError::Zero);
            }
        }
        ("quota", Kind::Zone(z)) => {
            z.quota = match v {
                Value::Null => None,
                Value::Number(n) if n.as_u64() == Some(0) => None,
                _ => Some(size(v, 1 << 30)?),
            }
        }
        ("hostname", Kind::Zone(z)) => {
            z.hostname = v
                .as_str()
                .ok_or(PropertyError::Expected("a string"))?
                .to_string()
        }
        ("vcpus", Kind::Hvm(h)) => {
            h.vcpus = uint(v)? as u32;
            if h.vcpus == 0 {
                return Err(PropertyError::Zero);
            }
        }
        ("cpu_cap" | "cpu-cap", Kind::Hvm(h)) => h.cpu_cap = uint(v)? as u32,
        ("cmdline", Kind::Hvm(h)) => h.cmdline = v.as_str().map(str::to_string),
        // SmartOS's list edits (and its name, which cannot change): spec's SmartOS
        // update, so both readings of a payload are one.
        (
            "add_nics" | "remove_nics" | "update_nics" | "add_disks" | "remove_disks" | "alias",
            _,
        ) => {
            let one = serde_json::json!({ key: v }).to_string();
            let updated = spec::smartos::apply_update(spec, &one, Default::default())
                .map_err(|e| PropertyError::Smartos(e.notes.join("; ")))?;
            *spec = updated.spec;
        }
        ("max_lwps" | "pids" | "quota" | "hostname", Kind::Hvm(_))
        | ("vcpus" | "cmdline", Kind::Zone(_)) => {
            return Err(PropertyError::WrongKind(spec.kind.as_str()))
        }
        _ => return Err(PropertyError::Unknown),
    }
    Ok(())
}

fn uint(v: &Value) -> Result<u64, PropertyError> {
    v.as_u64()
        .ok_or_else(|| PropertyError::NotAnInteger(v.to_string()))
}

/// A size: a number in `unit` bytes, or a string: digits alone count in `unit` too,
/// otherwise the size dialect of manifests (`"512M"`, powers of 1024).
fn size(v: &Value, unit: u64) -> Result<u64, PropertyError> {
    let too_large = || PropertyError::TooLarge(v.to_string());
    if let Some(n) = v.as_u64() {
        return n.checked_mul(unit).ok_or_else(too_large);
    }
    let s = v
        .as_str()
        .ok_or_else(|| PropertyError::NotASize(v.to_string()))?;
    if let Ok(n) = s.parse::<u64>() {
        return n.checked_mul(unit).ok_or_else(too_large);
    }
    spec::format::parse_size(s).map_err(|_| PropertyError::NotASize(format!("{s:?}")))
}

/// Why one property of an update cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PropertyError {
    /// The value has the wrong JSON type; says what was expected.
    #[error("expected {0}")]
    Expected(&'static str),
    /// A resolver that is not an address.
    #[error("{0} is not an IP address")]
    NotAnAddress(String),
    /// A metadata value that is not a string.
    #[error("{0}: expected a string")]
    NotAString(String),
    /// A count that must be positive was 0.
    #[error("must be at least 1")]
    Zero,
    /// A zone property on an HVM instance or the reverse.
    #[error("does not apply to a {0}")]
    WrongKind(&'static str),
    /// A property update does not know.
    #[error("unknown or read-only property")]
    Unknown,
    /// Not a non-negative integer.
    #[error("{0} is not a non-negative integer")]
    NotAnInteger(String),
    /// More bytes than fit in 64 bits.
    #[error("{0} is too large")]
    TooLarge(String),
    /// A SmartOS list edit (`add_nics`, ...) spec's SmartOS update refused.
    #[error("{0}")]
    Smartos(String),
    /// Neither a number nor a size string.
    #[error("{0} is not a size like \"512M\"")]
    NotASize(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::zone_spec;

    #[test]
    fn smartos_and_manifest_names_both_apply() {
        let mut s = zone_spec("a");
        let changed = apply(&mut s, r#"{"max_physical_memory": 512, "cpu_cap": 50}"#).unwrap();
        assert_eq!(changed, vec!["memory", "cpu-cap"]);
        assert_eq!(s.memory, 512 << 20);
        apply(&mut s, r#"{"memory": "1G", "autoboot": false}"#).unwrap();
        assert_eq!(s.memory, 1 << 30);
        assert!(!s.autoboot);
        assert!(apply(&mut s, r#"{"memory": "1G"}"#).unwrap().is_empty());
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPTlaXfXGmWO0/kUFKX0YQX/QTGxiNTFhEFN+D8Kgst1 op@desk";

    #[test]
    fn customer_metadata_keys_set_and_remove_like_smartos() {
        let mut s = zone_spec("a");
        let payload = serde_json::json!({"set_customer_metadata": {
            "role": "web",
            "user-script": "#!/bin/sh\necho hi\n",
            "user-data": "{}",
            "root_authorized_keys": format!("{KEY}\n\n{KEY}2\n"),
        }});
        let changed = apply(&mut s, &payload.to_string()).unwrap();
        assert_eq!(
            changed,
            vec!["metadata", "user-script", "user-data", "ssh-key"]
        );
        assert_eq!(s.metadata.len(), 1);
        assert_eq!(s.user_script.as_deref(), Some("#!/bin/sh\necho hi\n"));
        assert_eq!(s.ssh_keys, vec![KEY.to_string(), format!("{KEY}2")]);
        assert!(!changed
            .iter()
            .any(|p| crate::plan::needs_restart(&s.kind, p)));
        let changed = apply(
            &mut s,
            r#"{"remove_customer_metadata": ["role", "user-script", "root_authorized_keys"]}"#,
        )
        .unwrap();
        assert_eq!(changed, vec!["metadata", "user-script", "ssh-key"]);
        assert!(s.metadata.is_empty() && s.user_script.is_none() && s.ssh_keys.is_empty());
        assert_eq!(s.user_data.as_deref(), Some("{}"));
    }

    #[test]
    fn a_bad_ssh_key_or_oversized_script_is_refused() {
        let mut s = zone_spec("a");
        let errs = apply(
            &mut s,
            r#"{"set_customer_metadata": {"root_authorized_keys": "ssh-ed25519 nope"}}"#,
        )
        .unwrap_err();
        assert!(errs[0].starts_with("root_authorized_keys: "), "{errs:?}");
        let big = "x".repeat(spec::customer::MAX_VALUE_BYTES + 1);
        let payload = serde_json::json!({"set_customer_metadata": {"user-script": big}});
        assert!(apply(&mut s, &payload.to_string()).is_err());
        assert_eq!(s, zone_spec("a"));
    }

    #[test]
    fn every_problem_is_reported_and_nothing_is_half_applied() {
        let mut s = zone_spec("a");
        let errs = apply(
            &mut s,
            r#"{"vcpus": 2, "bogus": 1, "memory": "12Q", "cpu_cap": 5}"#,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs
            .iter()
            .any(|e| e.starts_with("vcpus: does not apply to a zone")));
        assert_eq!(s, zone_spec("a"));
    }
}
