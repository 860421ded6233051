//! Layers point down: every module path the library's sources name (`crate::`,
//! `super::`, `self::`, a child module) must belong to the same layer or a lower one.
//! Devices never name the VM, the device manager, the machine or the runner, and no
//! two layers import each other, so the import graph has no cycle.

use std::path::{Path, PathBuf};

/// Module path prefixes and their rank, lowest first. A module belongs to its longest
/// matching prefix; it may name its own layer or one of a lower rank, never a layer of
/// the same rank (siblings stay independent) or a higher one.
const LAYERS: &[(&str, u32)] = &[
    ("arch", 0),
    ("logger", 0),
    // Buses, interrupt lines, the exit signal.
    ("devices", 1),
    ("devices::legacy", 2),
    ("devices::pci", 2),
    ("devices::virtio", 3),
    ("devices::virtio::transport", 4),
    ("devices::virtio::block", 5),
    ("devices::virtio::net", 5),
    // Host side.
    ("bootdisk", 6),
    ("jail", 6),
    ("virtio", 6),
    ("vstate", 7),
    ("config", 8),
    ("device_manager", 9),
    ("machine", 10),
    ("runner", 11),
    // The monitor's side of the guest's metadata channel (COM2).
    ("metadata", 11),
    ("monitor", 12),
];

fn layer(module: &[String]) -> Option<(&'static str, u32)> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| {
            let p: Vec<&str> = prefix.split("::").collect();
            p.len() <= module.len() && p.iter().zip(module).all(|(a, b)| a == b)
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .copied()
}

/// The module a source file defines: `devices/pci/mod.rs` -> `devices::pci`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Reads identifiers separated by `::` from `s`; stops before a `{` group or anything
/// else. Returns the segments and the rest.
fn path_segments(s: &str) -> (Vec<String>, &str) {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if end == 0 {
            return (segs, rest);
        }
        segs.push(rest[..end].to_owned());
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => return (segs, rest),
        }
    }
}

/// The first segment of each item in a `{a::b, c}` group at the start of `s`.
fn group_heads(s: &str) -> Vec<String> {
    let mut depth = 0;
    let mut heads = Vec::new();
    let mut item_start = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                item_start = depth == 1;
                continue;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => item_start = true,
            c if depth == 1 && item_start && is_ident(c) => {
                let (segs, _) = path_segments(&s[i..]);
                heads.extend(segs.into_iter().take(1));
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

/// Every module path `source` (the text of the file defining `module`) names, as
/// absolute module paths.
fn references(module: &[String], source: &str) -> Vec<Vec<String>> {
    let children: Vec<&str> = source
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub ").unwrap_or(l.trim());
            l.strip_prefix("mod ")?.strip_suffix(';')
        })
        .collect();
    // Comments out; `super` inside an inline `mod tests { .. }` means this file's module.
    let mut code = String::new();
    let mut inline = false;
    for line in source.lines() {
        let line = line.split("//").next().unwrap_or("");
        if line.starts_with("mod ") && line.ends_with('{') {
            inline = true;
        } else if line == "}" {
            inline = false;
        }
        let line = if inline {
            rewrite_first_super(line)
        } else {
            line.to_owned()
        };
        code.push_str(&line);
        code.push('\n');
    }
    let mut refs = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let prev = code[..i].chars().next_back();
        if prev.is_some_and(|c| is_ident(c) || c == ':') {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let (base, after): (Vec<String>, &str) = if let Some(r) = rest.strip_prefix("crate::") {
            (Vec::new(), r)
        } else if let Some(r) = rest.strip_prefix("self::") {
            (module.to_vec(), r)
        } else if rest.starts_with("super::") {
            let mut base = module.to_vec();
            let mut r = rest;
            while let Some(after) = r.strip_prefix("super::") {
                base.pop();
                r = after;
            }
            (base, r)
        } else if let Some(child) = children
            .iter()
            .find(|c| rest.starts_with(&format!("{c}::")))
        {
            let mut base = module.to_vec();
            base.push((*child).to_owned());
            (base, &rest[child.len() + 2..])
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let (segs, tail) = path_segments(after);
        let mut target = base;
        target.extend(segs);
        if tail.starts_with('{') {
            for head in group_heads(tail) {
                let mut t = target.clone();
                t.push(head);
                refs.push(t);
            }
        } else {
            refs.push(target);
        }
        i = code.len() - tail.len();
    }
    refs
}

/// `super::x` -> `self::x` for the first `super` of each path on `line`.
fn rewrite_first_super(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(pos) = rest.find("super::") {
        out.push_str(&rest[..pos]);
        let first = !out.ends_with(|c: char| is_ident(c) || c == ':');
        out.push_str(if first { "self::" } else { "super::" });
        rest = &rest[pos + "super::".len()..];
    }
    out.push_str(rest);
    out
}

/// The arrows from `module` that break the layering, as `from -> to` lines.
fn violations(module: &[String], source: &str) -> Vec<String> {
    let Some((from_layer, from_rank)) = layer(module) else {
        return vec![format!("{}: not in LAYERS", module.join("::"))];
    };
    references(module, source)
        .into_iter()
        .filter_map(|target| {
            let name = target.join("::");
            match layer(&target) {
                None => Some(format!("{} -> {name}: not in LAYERS", module.join("::"))),
                Some((to_layer, _)) if to_layer == from_layer => None,
                Some((_, to_rank)) if to_rank < from_rank => None,
                Some((to_layer, to_rank)) => Some(format!(
                    "{} ({from_layer}, rank {from_rank}) -> {name} ({to_layer}, rank {to_rank})",
                    module.join("::")
                )),
            }
        })
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut bad = Vec::new();
    let mut arrows = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        // The binary and the crate root only declare and wire modules.
        if rel == Path::new("main.rs") || rel == Path::new("lib.rs") {
            continue;
        }
        let module = module_of(rel);
        let text = std::fs::read_to_string(&file).unwrap();
        arrows += references(&module, &text).len();
        bad.extend(violations(&module, &text));
    }
    assert!(
        arrows > 50,
        "only {arrows} module references found: the scanner is broken"
    );
    assert!(
        bad.is_empty(),
        "imports against the layers:\n{}",
        bad.join("\n")
    );
}

fn module(path: &str) -> Vec<String> {
    path.split("::").map(str::to_owned).collect()
}

#[test]
fn the_check_catches_upward_and_sideways_arrows() {
    let serial = module("devices::legacy::serial");
    // The arrows this layering removed: devices -> runner, pci -> virtio.
    assert_eq!(
        violations(&serial, "use crate::runner::RunError;\n").len(),
        1
    );
    assert_eq!(
        violations(
            &module("devices::pci::bus"),
            "fn f() { crate::devices::virtio::block::Block::open(p, false); }\n"
        )
        .len(),
        1
    );
    // Hidden in a group, through super::, or in a test module: still found.
    assert_eq!(
        violations(&serial, "use crate::{arch::layout, vstate::vm::Vm};\n").len(),
        1
    );
    assert_eq!(
        violations(&serial, "use super::super::pci::PciBus;\n").len(),
        1
    );
    assert_eq!(
        violations(
            &module("devices"),
            "pub mod virtio;\n#[cfg(test)]\nmod tests {\n    use super::virtio::X;\n}\n"
        )
        .len(),
        1
    );
    // Down and within a layer is fine; a comment is not an import.
    let ok = "use crate::devices::{BusDevice, ExitSignal};\nuse super::pm::X;\n\
              // see crate::runner\n";
    assert_eq!(violations(&serial, ok), Vec::<String>::new());
}
