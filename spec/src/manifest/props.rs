//! Instance properties with a shape of their own: `image`, `init`, `env`, `metadata`,
//! and the metadata-service ones: `user-script`, `user-data`, `ssh-key`.

use super::values::{arg_span, describe, string_arg};
use crate::customer::{authorized_keys, check_ssh_key, MAX_VALUE_BYTES, PROPERTY_KEYS};
use crate::error::Collector;
use crate::model::ImageRef;
use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

pub(super) fn image_ref(c: &mut Collector, node: &KdlNode, s: &str) -> Option<ImageRef> {
    if let Ok(u) = Uuid::parse_str(s) {
        return Some(ImageRef::Uuid(u));
    }
    if s.starts_with(crate::oci::PREFIX) {
        return match s.parse() {
            Ok(r) => Some(ImageRef::Oci(r)),
            Err(e) => {
                c.push(arg_span(node), format!("{e}"));
                None
            }
        };
    }
    let (name, version) = match s.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    };
    let good = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-+".contains(ch))
    };
    if !good(name) || version.is_some_and(|v| !good(v)) {
        c.push(arg_span(node), format!("`{s}` is not an image reference"))
            .help = Some(
            "write name@version (\"busybox@1.36\"), a name (newest version), an image UUID, or oci:REGISTRY/REPO:TAG"
                .into(),
        );
        return None;
    }
    Some(ImageRef::Name {
        name: name.to_owned(),
        version: version.map(str::to_owned),
    })
}

pub(super) fn init_args(c: &mut Collector, node: &KdlNode) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut ok = true;
    for e in node.entries() {
        match (e.name(), e.value()) {
            (None, KdlValue::String(s)) => args.push(s.clone()),
            (Some(k), _) => {
                c.push(
                    e.span(),
                    format!("`init` takes no `{}=` property", k.value()),
                );
                ok = false;
            }
            (None, other) => {
                c.push(
                    e.span(),
                    format!("`init` arguments are strings, not {}", describe(other)),
                );
                ok = false;
            }
        }
    }
    if args.is_empty() && ok {
        c.push(node.name().span(), "`init` needs a program path")
            .help = Some("write: init \"/sbin/init\"".into());
        return None;
    }
    if args.first().is_some_and(|p| !p.starts_with('/')) {
        c.push(arg_span(node), "the zone's init must be an absolute path");
        return None;
    }
    ok.then_some(args)
}

pub(super) fn env_pair(c: &mut Collector, node: &KdlNode) -> Option<(String, String)> {
    let strings: Vec<(&KdlEntry, Option<&String>)> = node
        .entries()
        .iter()
        .map(|e| match (e.name(), e.value()) {
            (None, KdlValue::String(s)) => (e, Some(s)),
            _ => (e, None),
        })
        .collect();
    if strings.len() != 2 || strings.iter().any(|(_, s)| s.is_none()) {
        c.push(
            node.name().span(),
            "`env` takes two strings: a name and a value",
        )
        .help = Some("write: env \"TZ\" \"UTC\"".into());
        return None;
    }
    let key = strings[0].1?;
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        c.push(
            strings[0].0.span(),
            format!("`{key}` is not an environment variable name"),
        );
        return None;
    }
    Some((key.clone(), strings[1].1?.clone()))
}

pub(super) fn metadata(c: &mut Collector, node: &KdlNode) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in node.entries() {
        c.push(e.span(), "`metadata` takes a block of key \"value\" lines")
            .help = Some("write: metadata { role \"web\"; }".into());
    }
    let Some(children) = node.children() else {
        if node.entries().is_empty() {
            c.push(node.name().span(), "`metadata` needs a block").help =
                Some("write: metadata { role \"web\"; }".into());
        }
        return out;
    };
    let mut seen: HashMap<String, SourceSpan> = HashMap::new();
    for kv in children.nodes() {
        let key = kv.name().value().to_owned();
        if let Some(first) = seen.get(&key) {
            let first = c.place(*first);
            c.push(
                kv.name().span(),
                format!("metadata key `{key}` is set twice"),
            )
            .help = Some(format!("the other one is at {first}"));
            continue;
        }
        seen.insert(key.clone(), kv.name().span());
        if PROPERTY_KEYS.contains(&key.as_str()) {
            let property = if key == crate::customer::AUTHORIZED_KEYS_KEY {
                "ssh-key"
            } else {
                key.as_str()
            };
            c.push(
                kv.name().span(),
                format!("`{key}` is served from the `{property}` property, not `metadata`"),
            )
            .help = Some(format!(
                "move it out of the block: {property} \"...\"{}",
                if property == "ssh-key" {
                    " (one line per key)"
                } else {
                    ""
                }
            ));
            continue;
        }
        if let Some(children) = kv.children() {
            c.push(
                children.span(),
                "metadata values are plain strings; nesting is not allowed",
            );
            continue;
        }
        if let Some(v) = string_arg(c, kv) {
            out.insert(key, v);
        }
    }
    out
}

/// The string of `user-script` or `user-data`, at most [`MAX_VALUE_BYTES`]: the
/// metadata service serves it as one value, and a guest's put of the same key is
/// bounded the same way.
pub(super) fn metadata_value(c: &mut Collector, node: &KdlNode) -> Option<String> {
    let s = string_arg(c, node)?;
    if s.len() > MAX_VALUE_BYTES {
        c.push(
            arg_span(node),
            format!(
                "`{}` is {} bytes; the metadata service serves at most {MAX_VALUE_BYTES} (1 MiB)",
                node.name().value(),
                s.len()
            ),
        )
        .help = Some("fetch large content from the script instead of embedding it".into());
        return None;
    }
    Some(s)
}

/// One `ssh-key`: an `authorized_keys` line of a known type, not given twice, and all
/// keys together within [`MAX_VALUE_BYTES`] (they are served as one value).
pub(super) fn ssh_key(c: &mut Collector, node: &KdlNode, earlier: &[String]) -> Option<String> {
    let key = string_arg(c, node)?.trim().to_owned();
    if let Some(why) = check_ssh_key(&key) {
        c.push(arg_span(node), why).help =
            Some("paste one line of a .pub file: ssh-key \"ssh-ed25519 AAAA... user@host\"".into());
        return None;
    }
    if earlier.contains(&key) {
        c.push(arg_span(node), "this ssh-key is given twice");
        return None;
    }
    let mut all = earlier.to_vec();
    all.push(key.clone());
    let total = authorized_keys(&all).len();
    if total > MAX_VALUE_BYTES {
        c.push(
            arg_span(node),
            format!("the ssh-keys add up to {total} bytes; the metadata service serves at most {MAX_VALUE_BYTES} (1 MiB)"),
        );
        return None;
    }
    Some(key)
}
