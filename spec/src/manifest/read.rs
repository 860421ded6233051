//! KDL text -> [`InstanceSpec`]s: every property read, every default applied, every
//! problem recorded with its span (reading goes on after a problem so that all of a
//! file's errors are reported at once).

use super::schema::*;
use crate::error::{Collector, ManifestError};
use crate::format::{
    check_device_name, check_hostname, check_name, in_subnet, is_mac, parse_cidr, parse_size,
};
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
    let doc = match KdlDocument::parse_v2(&text) {
        Ok(doc) => doc,
        Err(err) => {
            for d in &err.diagnostics {
                let p = c.push(
                    d.span,
                    d.message.clone().unwrap_or_else(|| "invalid KDL".into()),
                );
                p.label = d.label.clone();
                p.help = d.help.clone();
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
    uuid: Option<Uuid>,
    ensure: Option<Ensure>,
    vcpus: Option<u32>,
    disks: Vec<(Disk, SourceSpan)>,
    cmdline: Option<String>,
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
            init: f.init.unwrap_or_else(|| vec![defaults::INIT.to_owned()]),
            env: f.env,
        })
    } else {
        Kind::Hvm(HvmSpec {
            vcpus: f.vcpus.unwrap_or(defaults::VCPUS),
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
        kind,
        origin: Origin {
            file: file.to_path_buf(),
            line,
            col,
        },
    })
}

/// The disks of an HVM, with the boot disk rule applied: at most one disk says
/// `boot=#true`; when none does, a boot disk `root` (the image, at its own size) comes
/// first.
fn hvm_disks(
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
    if pname != "metadata" {
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

/// Span of the first argument, or of the node name when there is none.
fn arg_span(node: &KdlNode) -> SourceSpan {
    node.entries()
        .iter()
        .find(|e| e.name().is_none())
        .map_or_else(|| node.name().span(), KdlEntry::span)
}

/// The single positional value of a property node; anything else is a problem.
fn single_arg<'n>(c: &mut Collector, node: &'n KdlNode) -> Option<&'n KdlEntry> {
    let pname = node.name().value();
    let mut arg = None;
    let mut ok = true;
    for e in node.entries() {
        if let Some(key) = e.name() {
            c.push(
                e.span(),
                format!("`{pname}` takes no `{}=` property", key.value()),
            );
            ok = false;
        } else if arg.is_none() {
            arg = Some(e);
        } else {
            c.push(
                e.span(),
                format!("`{pname}` takes one value; this one is extra"),
            );
            ok = false;
        }
    }
    if arg.is_none() {
        c.push(node.name().span(), format!("`{pname}` needs a value"));
    }
    arg.filter(|_| ok)
}

fn string_arg(c: &mut Collector, node: &KdlNode) -> Option<String> {
    let e = single_arg(c, node)?;
    match e.value() {
        KdlValue::String(s) => Some(s.clone()),
        other => {
            c.push(
                e.span(),
                format!(
                    "`{}` takes a string, not {}",
                    node.name().value(),
                    describe(other)
                ),
            )
            .help = Some(format!("quote it: \"{}\"", plain(other)));
            None
        }
    }
}

fn bool_arg(c: &mut Collector, node: &KdlNode) -> Option<bool> {
    let e = single_arg(c, node)?;
    match e.value() {
        KdlValue::Bool(b) => Some(*b),
        other => {
            c.push(
                e.span(),
                format!(
                    "`{}` takes #true or #false, not {}",
                    node.name().value(),
                    describe(other)
                ),
            );
            None
        }
    }
}

fn int_arg(c: &mut Collector, node: &KdlNode, min: i128, max: i128) -> Option<i128> {
    let e = single_arg(c, node)?;
    int_value(c, node.name().value(), e, min, max)
}

fn int_value(c: &mut Collector, what: &str, e: &KdlEntry, min: i128, max: i128) -> Option<i128> {
    match e.value() {
        KdlValue::Integer(n) if (min..=max).contains(n) => Some(*n),
        KdlValue::Integer(n) => {
            let range = if max >= i128::from(u32::MAX) {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            c.push(e.span(), format!("`{what}` is {n}; it must be {range}"));
            None
        }
        other => {
            c.push(
                e.span(),
                format!("`{what}` takes a whole number, not {}", describe(other)),
            );
            None
        }
    }
}

fn size_arg(c: &mut Collector, node: &KdlNode, min: Option<u64>) -> Option<u64> {
    let e = single_arg(c, node)?;
    size_value(c, node.name().value(), e, min)
}

fn size_value(c: &mut Collector, what: &str, e: &KdlEntry, min: Option<u64>) -> Option<u64> {
    let KdlValue::String(s) = e.value() else {
        c.push(
            e.span(),
            format!("`{what}` takes a size string, not {}", describe(e.value())),
        )
        .help = Some("write it with a unit, like \"256M\" or \"2G\"".into());
        return None;
    };
    match parse_size(s) {
        Ok(n) if min.is_some_and(|m| n < m) => {
            let m = crate::format::format_size(min.unwrap_or(0));
            c.push(e.span(), format!("`{what}` is {s}; the minimum is {m}"));
            None
        }
        Ok(n) => Some(n),
        Err(why) => {
            c.push(e.span(), why);
            None
        }
    }
}

fn ip_value(c: &mut Collector, span: SourceSpan, s: &str) -> Option<IpAddr> {
    match s.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            c.push(span, format!("`{s}` is not an IP address"));
            None
        }
    }
}

fn image_ref(c: &mut Collector, node: &KdlNode, s: &str) -> Option<ImageRef> {
    if let Ok(u) = Uuid::parse_str(s) {
        return Some(ImageRef::Uuid(u));
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
            "write name@version (\"busybox@1.36\"), a name (newest version), or an image UUID"
                .into(),
        );
        return None;
    }
    Some(ImageRef::Name {
        name: name.to_owned(),
        version: version.map(str::to_owned),
    })
}

fn init_args(c: &mut Collector, node: &KdlNode) -> Option<Vec<String>> {
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

fn env_pair(c: &mut Collector, node: &KdlNode) -> Option<(String, String)> {
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

fn metadata(c: &mut Collector, node: &KdlNode) -> BTreeMap<String, String> {
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

/// Positional args and key=value fields of a nic/disk node, with unknown keys reported.
fn device_entries<'n>(
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
fn device_name(
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

fn string_field(c: &mut Collector, what: &str, e: &KdlEntry) -> Option<String> {
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

fn nic(c: &mut Collector, node: &KdlNode, taken: &mut Vec<(String, String)>) -> Option<Nic> {
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
                    c.push(e.span(), why);
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
            let v = string_field(c, "mac", e).filter(|m| {
                let good = is_mac(m);
                if !good {
                    c.push(
                        e.span(),
                        format!("`{m}` is not a MAC address like \"02:08:20:aa:bb:cc\""),
                    );
                }
                good
            });
            ok &= v.is_some();
            v.map(|m| m.to_ascii_lowercase())
        }
        None => None,
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
    })
}

fn disk(c: &mut Collector, node: &KdlNode, taken: &mut Vec<(String, String)>) -> Option<Disk> {
    let (arg, props) = device_entries(c, node, DISK_FIELDS);
    let name = device_name(c, node, arg, taken);
    let boot = match props.get("boot") {
        Some(e) => match e.value() {
            KdlValue::Bool(b) => Some(*b),
            other => {
                c.push(
                    e.span(),
                    format!("`boot` takes #true or #false, not {}", describe(other)),
                );
                None
            }
        },
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

/// "a number", "a string" ... for messages about a value of the wrong type.
fn describe(v: &KdlValue) -> &'static str {
    match v {
        KdlValue::String(_) => "a string",
        KdlValue::Integer(_) => "a whole number",
        KdlValue::Float(_) => "a decimal number",
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Null => "#null",
    }
}

/// A value's text without KDL syntax, for "quote it" hints.
fn plain(v: &KdlValue) -> String {
    match v {
        KdlValue::String(s) => s.clone(),
        KdlValue::Integer(n) => n.to_string(),
        KdlValue::Float(x) => x.to_string(),
        KdlValue::Bool(b) => b.to_string(),
        KdlValue::Null => String::new(),
    }
}
