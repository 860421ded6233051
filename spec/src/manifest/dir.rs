//! Loading every manifest of a directory (or a list of files): one bad file is
//! reported and skipped, the others load; a name or pinned UUID declared in two files
//! is an error naming both places.

use crate::error::{Collector, ManifestError};
use crate::model::InstanceSpec;
use miette::SourceSpan;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// What a directory of manifests holds.
#[derive(Debug, Clone, Default)]
pub struct LoadedDir {
    /// Instances of every file that loaded, in file-name order.
    pub instances: Vec<InstanceSpec>,
    /// One error per file that did not load (all of its problems inside), and one per
    /// file whose instances clash with an earlier file's.
    pub errors: Vec<ManifestError>,
}

/// Loads every `*.kdl` file of `dir`, in file-name order (hidden files and editor
/// leftovers such as `web.kdl~` are ignored). A directory that cannot be read yields
/// one error naming it.
pub fn load_dir(dir: &Path) -> LoadedDir {
    match manifest_files(dir) {
        Ok(files) => load_files(&files),
        Err(err) => LoadedDir {
            instances: Vec::new(),
            errors: vec![ManifestError::unreadable(dir, &err)],
        },
    }
}

/// The manifest files of `dir`: its `*.kdl` regular files, hidden ones and editor
/// leftovers (`web.kdl~`) excepted, in file-name order.
pub fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".kdl") && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads the given manifest files as one set: each file is parsed on its own, and a
/// name or pinned UUID declared by two files is reported on the later one (whose
/// clashing instance is dropped; the earlier declaration stays, so a new file cannot
/// take over or stop a running instance).
pub fn load_files(files: &[PathBuf]) -> LoadedDir {
    let mut out = LoadedDir::default();
    let mut names: HashMap<String, (PathBuf, usize, usize)> = HashMap::new();
    let mut uuids: HashMap<Uuid, (PathBuf, usize, usize)> = HashMap::new();
    for file in files {
        let text = match super::read_text(file) {
            Ok(t) => t,
            Err(err) => {
                out.errors.push(ManifestError::unreadable(file, &err));
                continue;
            }
        };
        let specs = match super::parse_str(file, &text) {
            Ok(specs) => specs,
            Err(err) => {
                out.errors.push(err);
                continue;
            }
        };
        let mut clashes = Collector::new(file, Arc::new(text.clone()));
        for spec in specs {
            let at = span_of(&text, spec.origin.line, spec.origin.col);
            let here = (file.clone(), spec.origin.line, spec.origin.col);
            if let Some((f, l, c)) = names.get(&spec.name) {
                clashes
                    .push(at, format!("instance `{}` is already declared in another file", spec.name))
                    .help = Some(format!(
                    "it is declared at {}:{l}:{c}; names are unique across all manifests (this one is skipped)",
                    f.display()
                ));
                continue;
            }
            if let Some(u) = spec.uuid {
                if let Some((f, l, c)) = uuids.get(&u) {
                    clashes
                        .push(
                            at,
                            format!("uuid {u} is already pinned by another instance"),
                        )
                        .help = Some(format!(
                        "see {}:{l}:{c} (this instance is skipped)",
                        f.display()
                    ));
                    continue;
                }
                uuids.insert(u, here.clone());
            }
            names.insert(spec.name.clone(), here);
            out.instances.push(spec);
        }
        if !clashes.is_empty() {
            out.errors.push(clashes.into_error());
        }
    }
    out
}

/// Byte span of the word starting at 1-based `line`:`col` of `text`.
fn span_of(text: &str, line: usize, col: usize) -> SourceSpan {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let start = line_start
        + text[line_start..]
            .chars()
            .take(col.saturating_sub(1))
            .map(char::len_utf8)
            .sum::<usize>();
    let len = text[start..]
        .find(|c: char| c.is_whitespace() || c == '{')
        .unwrap_or(text.len() - start);
    SourceSpan::from(start..start + len)
}
