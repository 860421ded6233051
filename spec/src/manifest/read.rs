//! KDL text -> [`InstanceSpec`]s: every property read, every default applied, every
//! problem recorded with its span (reading goes on after a problem so that all of a
//! file's errors are reported at once).

use super::devices::{disk, hvm_disks, nic};
use super::firewall::firewall;
use super::props::{env_pair, image_ref, init_args, metadata, metadata_value, ssh_key};
use super::schema::*;
use super::values::{arg_span, bool_arg, int_arg, ip_value, size_arg, string_arg};
use crate::error::{Collector, ManifestError};
use crate::format::check_hostname;
use crate::format::check_name;
use crate::model::*;
use crate::suggest::closest;
use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

/// Parses and validates one manifest text. `file` names it in errors and origins.
pub fn parse_text(file: &Path, text: &str) -> Result<Vec<InstanceSpec>, ManifestError> {
    let text = Arc::new(text.to_owned());
    let mut c = Collector::new(file, Arc::clone(&text));
    // The parser recurses without a limit: refuse what could overflow the stack.
    if let Err(e) = super::limits::check(&text) {
        c.push(SourceSpan::from(e.offset..e.offset), e.message);
        return Err(c.into_error());
    }
    let doc = match KdlDocument::parse_v2(&text) {
        Ok(doc) => doc,
        Err(err) => {
            for d in &err.diagnostics {
                let p = c.push(
                    d.span,
                    d.message.clone().unwrap_or_else(|| "invalid KDL".into()),
                );
                p.label = d.label.clone();
                p.help = d
                    .help
                    .clone()
                    .or_else(|| v1_keyword_hint(&text, d.span.offset()));
            }
            if c.is_empty() {
                c.push(SourceSpan::from(0..0), "invalid KDL document");
            }
            return Err(c.into_error());
        }
    };
    let mut specs = Vec::new();
    let mut names: HashMap<String, SourceSpan> = HashMap::new();
    let mut uuids: HashMap<Uuid, SourceSpan> = HashMap::new();
    for node in doc.nodes() {
        let Some(spec) = read_instance(&mut c, file, node) else {
            continue;
        };
        let at = node.name().span();
        if let Some(first) = names.get(&spec.name) {
            let first = c.place(*first);
            c.push(at, format!("instance `{}` is declared twice", spec.name))
                .help = Some(format!("the first declaration is at {first}"));
        } else {
            names.insert(spec.name.clone(), at);
        }
        if let Some(u) = spec.uuid {
            if let Some(first) = uuids.get(&u) {
                let first = c.place(*first);
                c.push(at, format!("uuid {u} is pinned by two instances"))
                    .help = Some(format!("the other one is at {first}"));
            } else {
                uuids.insert(u, at);
            }
        }
        specs.push(spec);
    }
    if c.is_empty() {
        Ok(specs)
    } else {
        Err(c.into_error())
    }
}

/// A hint for KDL v1 habits: bare `true`, `false` and `null` are `#true`, `#false`
/// and `#null` in KDL v2.
fn v1_keyword_hint(text: &str, offset: usize) -> Option<String> {
    let rest = text.get(offset..)?;
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    matches!(word.as_str(), "true" | "false" | "null")
        .then(|| format!("KDL v2 writes this keyword with a hash: #{word}"))
}

/// Everything an instance node may say, before defaults.
#[derive(Default)]
struct Fields {
    image: Option<ImageRef>,
    memory: Option<u64>,
    cpu_cap: Option<u32>,
    pids: Option<u64>,
    quota: Option<u64>,
    hostname: Option<String>,
    autoboot: Option<bool>,
    init: Option<Vec<String>>,
    env: Vec<(String, String)>,
    nics: Vec<Nic>,
    resolvers: Vec<IpAddr>,
    metadata: BTreeMap<String, String>,
    user_script: Option<String>,
    user_data: Option<String>,
    ssh_keys: Vec<String>,
    uuid: Option<Uuid>,
    ensure: Option<Ensure>,
    vcpus: Option<u32>,
    disks: Vec<(Disk, SourceSpan)>,
    cmdline: Option<String>,
    firewall: Option<Firewall>,
    /// Every nic and disk name seen, valid or not, to report duplicates.
    device_names: Vec<(String, String)>,
}

fn read_instance(c: &mut Collector, file: &Path, node: &KdlNode) -> Option<InstanceSpec> {
    let kind = node.name().value();
    let is_zone = match kind {
        "zone" => true,
        "hvm" => false,
        other => {
            let p = c.push(
                node.name().span(),
                format!("unknown node `{other}`: a manifest holds `zone` and `hvm` nodes"),
            );
            p.label = Some("unknown node".into());
            p.help = closest(other, KINDS).map(|k| format!("did you mean `{k}`?"));
            return None;
        }
    };
    let name = instance_name(c, node, kind);
    let mut f = Fields::default();
    let mut seen: HashMap<String, SourceSpan> = HashMap::new();
    match node.children() {
        Some(children) => {
            let props = if is_zone { ZONE_PROPS } else { HVM_PROPS };
            for prop in children.nodes() {
                let pname = prop.name().value();
                if !props.contains(&pname) {
                    unknown_property(c, prop, kind, props);
                    continue;
                }
                if !REPEATABLE.contains(&pname) {
                    if let Some(first) = seen.get(pname) {
                        let first = c.place(*first);
                        c.push(prop.name().span(), format!("`{pname}` is set twice"))
                            .help = Some(format!("keep one; the other is at {first}"));
                        continue;
                    }
                    seen.insert(pname.to_owned(), prop.name().span());
                }
                read_property(c, prop, &mut f);
            }
        }
        None => {
            c.push(
                node.name().span(),
                format!(
                    "{kind} `{}` has no properties",
                    name.as_deref().unwrap_or("?")
                ),
            )
            .help = Some(format!(
                "give it a block, at least: {kind} NAME {{ image \"{}\" }}",
                if is_zone {
                    "busybox@1.36"
                } else {
                    "debian-hvm@12"
                }
            ));
            return None;
        }
    }
    let name = name?;
    let Some(image) = f.image.take() else {
        if seen.contains_key("image") {
            return None; // present but invalid: already reported
        }
        c.push(
            node.name().span(),
            format!("{kind} `{name}` has no `image`"),
        )
        .help = Some(format!(
            "add a line like: image \"{}\"",
            if is_zone {
                "busybox@1.36"
            } else {
                "debian-hvm@12"
            }
        ));
        return None;
    };
    let (line, col) = c.line_col(node.name().span());
    let kind = if is_zone {
        Kind::Zone(ZoneSpec {
            cpu_cap: f.cpu_cap.unwrap_or(defaults::CPU_CAP),
            pids: f.pids.unwrap_or(defaults::PIDS),
            quota: f.quota,
            hostname: f.hostname.unwrap_or_else(|| name.clone()),
            // An OCI image brings its command (Entrypoint/Cmd, given by init at start).
            init: f.init.unwrap_or_else(|| match image {
                crate::model::ImageRef::Oci(_) => Vec::new(),
                _ => vec![defaults::INIT.to_owned()],
            }),
            env: f.env,
            workdir: None,
            user: None,
        })
    } else {
        Kind::Hvm(HvmSpec {
            vcpus: f.vcpus.unwrap_or(defaults::VCPUS),
            cpu_cap: f.cpu_cap.unwrap_or(defaults::CPU_CAP),
            disks: hvm_disks(c, node, f.disks)?,
            cmdline: f.cmdline,
        })
    };
    Some(InstanceSpec {
        name,
        uuid: f.uuid,
        ensure: f.ensure.unwrap_or_default(),
        autoboot: f.autoboot.unwrap_or(true),
        image,
        memory: f.memory.unwrap_or(defaults::MEMORY),
        nics: f.nics,
        resolvers: f.resolvers,
        metadata: f.metadata,
        user_script: f.user_script,
        user_data: f.user_data,
        ssh_keys: f.ssh_keys,
        firewall: f.firewall,
        kind,
        origin: Origin {
            file: file.to_path_buf(),
            line,
            col,
        },
    })
}

fn instance_name(c: &mut Collector, node: &KdlNode, kind: &str) -> Option<String> {
    let args: Vec<&KdlEntry> = node
        .entries()
        .iter()
        .filter(|e| e.name().is_none())
        .collect();
    for e in node.entries().iter().filter(|e| e.name().is_some()) {
        c.push(
            e.span(),
            format!("{kind} nodes take no key=value properties; put them inside the block"),
        );
    }
    let Some(first) = args.first() else {
        c.push(node.name().span(), format!("{kind} has no name"))
            .help = Some(format!("write: {kind} web01 {{ ... }}"));
        return None;
    };
    for extra in &args[1..] {
        c.push(
            extra.span(),
            format!("{kind} takes one name; this is extra"),
        );
    }
    let KdlValue::String(name) = first.value() else {
        c.push(
            first.span(),
            format!("the {kind} name must be a string like web01"),
        );
        return None;
    };
    if let Some(why) = check_name(name) {
        c.push(first.span(), why).label = Some("bad name".into());
        return None;
    }
    Some(name.clone())
}

fn unknown_property(c: &mut Collector, prop: &KdlNode, kind: &str, props: &[&str]) {
    let pname = prop.name().value();
    let other = if kind == "zone" {
        ("hvm", HVM_PROPS)
    } else {
        ("zone", ZONE_PROPS)
    };
    let p = c.push(
        prop.name().span(),
        format!("unknown {kind} property `{pname}`"),
    );
    p.label = Some("unknown property".into());
    p.help = if let Some(k) = closest(pname, props) {
        Some(format!("did you mean `{k}`?"))
    } else if other.1.contains(&pname) {
        Some(format!(
            "`{pname}` is a property of {} nodes, not {kind} nodes",
            other.0
        ))
    } else {
        Some(format!("{kind} properties are: {}", props.join(", ")))
    };
}

fn read_property(c: &mut Collector, prop: &KdlNode, f: &mut Fields) {
    let pname = prop.name().value();
    if pname != "metadata" && pname != "firewall" {
        if let Some(children) = prop.children() {
            c.push(children.span(), format!("`{pname}` takes no block"));
        }
    }
    match pname {
        "image" => f.image = string_arg(c, prop).and_then(|s| image_ref(c, prop, &s)),
        "memory" => f.memory = size_arg(c, prop, Some(defaults::MIN_MEMORY)),
        "quota" => f.quota = size_arg(c, prop, Some(1 << 20)),
        "cpu-cap" => f.cpu_cap = int_arg(c, prop, 0, u32::MAX.into()).map(|v| v as u32),
        "pids" => f.pids = int_arg(c, prop, 1, u64::MAX.into()).map(|v| v as u64),
        "vcpus" => f.vcpus = int_arg(c, prop, 1, MAX_VCPUS.into()).map(|v| v as u32),
        "autoboot" => f.autoboot = bool_arg(c, prop),
        "hostname" => {
            f.hostname = string_arg(c, prop).filter(|h| match check_hostname(h) {
                Some(why) => {
                    c.push(arg_span(prop), why);
                    false
                }
                None => true,
            })
        }
        "cmdline" => f.cmdline = string_arg(c, prop),
        "init" => f.init = init_args(c, prop),
        "env" => {
            if let Some(kv) = env_pair(c, prop) {
                f.env.push(kv);
            }
        }
        "resolver" => {
            if let Some(ip) = string_arg(c, prop).and_then(|s| ip_value(c, arg_span(prop), &s)) {
                f.resolvers.push(ip);
            }
        }
        "uuid" => {
            f.uuid = string_arg(c, prop).and_then(|s| match Uuid::parse_str(&s) {
                Ok(u) => Some(u),
                Err(_) => {
                    c.push(arg_span(prop), format!("`{s}` is not a UUID"));
                    None
                }
            })
        }
        "ensure" => {
            f.ensure = string_arg(c, prop).and_then(|s| match s.as_str() {
                "present" => Some(Ensure::Present),
                "absent" => Some(Ensure::Absent),
                _ => {
                    c.push(
                        arg_span(prop),
                        format!("ensure is \"present\" or \"absent\", not \"{s}\""),
                    );
                    None
                }
            })
        }
        "metadata" => f.metadata = metadata(c, prop),
        "user-script" => f.user_script = metadata_value(c, prop),
        "user-data" => f.user_data = metadata_value(c, prop),
        "ssh-key" => {
            if let Some(key) = ssh_key(c, prop, &f.ssh_keys) {
                f.ssh_keys.push(key);
            }
        }
        "firewall" => f.firewall = firewall(c, prop),
        "nic" => {
            if let Some(nic) = nic(c, prop, &mut f.device_names) {
                f.nics.push(nic);
            }
        }
        "disk" => {
            if let Some(disk) = disk(c, prop, &mut f.device_names) {
                f.disks.push((disk, prop.name().span()));
            }
        }
        _ => unreachable!("schema lists `{pname}` but read_property does not handle it"),
    }
}
