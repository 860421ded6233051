//! The desired state as the spec crate reads it: the front end the node uses to load
//! `<pool>/manifests`, parse API payloads and write API-created instances back as KDL.
//!
//! A trait so the node's logic is unit-tested with hand-built specs; [`SpecManifests`]
//! is the real thing.

use spec::InstanceSpec;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One manifest problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in, when it comes from a file.
    pub file: Option<PathBuf>,
    /// `FILE:LINE:COL: message`.
    pub message: String,
}

/// A loaded manifest directory: the good instances, and every problem.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Valid instances of all good files.
    pub specs: Vec<InstanceSpec>,
    /// Problems; their files' instances are missing from `specs`.
    pub problems: Vec<Problem>,
}

/// Reads and writes manifests.
pub trait Manifests: Send + Sync {
    /// Loads every `*.kdl` of `dir`.
    fn load_dir(&self, dir: &Path) -> Loaded;
    /// Parses an API payload: `kdl`, `json` (SmartOS) or `""` (sniff by content).
    /// Errors are complete lines for the caller.
    fn parse(&self, payload: &str, format: &str) -> Result<Vec<InstanceSpec>, Vec<String>>;
    /// The KDL manifest text of one instance.
    fn to_kdl(&self, spec: &InstanceSpec) -> String;
}

/// The payload format: what the caller said, or JSON when it starts like an object.
pub fn sniff(payload: &str, format: &str) -> &'static str {
    match format {
        "json" => "json",
        "kdl" => "kdl",
        _ if payload.trim_start().starts_with('{') || payload.trim_start().starts_with('[') => {
            "json"
        }
        _ => "kdl",
    }
}

/// The real front end: the `spec` crate.
///
/// Loading remembers the last result with the identity of every manifest file (inode,
/// size, mtime, ctime): when nothing changed, a reconcile reuses it instead of parsing
/// every file again, which is what keeps a no-op reconcile of 1000 instances cheap.
#[derive(Debug, Default)]
pub struct SpecManifests {
    last: Mutex<Option<(Fingerprint, Loaded)>>,
}

/// What identifies the content of a manifest directory without reading it.
type Fingerprint = Vec<(std::ffi::OsString, u64, u64, i64, i64, i64, i64)>;

fn fingerprint(dir: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let name = e.file_name();
        if Path::new(&name).extension().is_none_or(|x| x != "kdl") {
            continue;
        }
        // Follows symlinks, as loading does.
        let m = std::fs::metadata(e.path()).ok()?;
        out.push((
            name,
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ));
    }
    out.sort();
    Some(out)
}

impl SpecManifests {
    /// A front end with an empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn load_uncached(dir: &Path) -> Loaded {
        let loaded = spec::load_dir(dir);
        Loaded {
            specs: loaded.instances,
            problems: loaded
                .errors
                .iter()
                .map(|e| Problem {
                    file: Some(e.file.clone()),
                    message: e.render_plain().trim_end().to_string(),
                })
                .collect(),
        }
    }
}

impl Manifests for SpecManifests {
    fn load_dir(&self, dir: &Path) -> Loaded {
        let before = fingerprint(dir);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(fp), Some((cached_fp, loaded))) = (&before, last.as_ref()) {
            if fp == cached_fp {
                return loaded.clone();
            }
        }
        let loaded = Self::load_uncached(dir);
        // Only cache what was read from a directory that held still meanwhile.
        match (before, fingerprint(dir)) {
            (Some(a), Some(b)) if a == b => *last = Some((a, loaded.clone())),
            _ => *last = None,
        }
        loaded
    }

    fn parse(&self, payload: &str, format: &str) -> Result<Vec<InstanceSpec>, Vec<String>> {
        match sniff(payload, format) {
            "json" => spec::smartos::from_payload(payload).map_err(|e| {
                // SmartOS's error object first (what SmartOS tools parse), then one
                // sentence per problem for a person.
                let mut lines = vec![serde_json::to_string(&e).unwrap_or_else(|_| "{}".into())];
                lines.extend(e.notes.iter().cloned());
                lines
            }),
            _ => spec::parse_str("<payload>", payload).map_err(|e| {
                e.render_plain()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            }),
        }
    }

    fn to_kdl(&self, spec: &InstanceSpec) -> String {
        spec::to_kdl(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_is_reported_beside_the_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("good.kdl"),
            "zone good { image \"busybox@1.36\"; }\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("bad.kdl"), "zone Bad! {\n").unwrap();
        let l = SpecManifests::new().load_dir(dir.path());
        assert_eq!(l.specs.len(), 1);
        assert_eq!(l.specs[0].name, "good");
        assert_eq!(l.problems.len(), 1);
        assert!(
            l.problems[0].message.contains("bad.kdl:"),
            "{:?}",
            l.problems
        );
        assert_eq!(
            l.problems[0].file.as_deref(),
            Some(dir.path().join("bad.kdl").as_path())
        );
    }

    #[test]
    fn the_cache_sees_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let m = SpecManifests::new();
        let f = dir.path().join("a.kdl");
        std::fs::write(&f, "zone a { image \"busybox@1.36\"; memory \"64M\"; }\n").unwrap();
        assert_eq!(m.load_dir(dir.path()).specs[0].memory, 64 << 20);
        assert_eq!(m.load_dir(dir.path()).specs[0].memory, 64 << 20);
        // Same size, rewritten in place: mtime/ctime change.
        std::fs::write(&f, "zone a { image \"busybox@1.36\"; memory \"65M\"; }\n").unwrap();
        assert_eq!(m.load_dir(dir.path()).specs[0].memory, 65 << 20);
        std::fs::write(
            dir.path().join("b.kdl"),
            "zone b { image \"busybox@1.36\"; }\n",
        )
        .unwrap();
        assert_eq!(m.load_dir(dir.path()).specs.len(), 2);
        std::fs::remove_file(&f).unwrap();
        assert_eq!(m.load_dir(dir.path()).specs.len(), 1);
    }

    #[test]
    fn payloads_parse_and_round_trip_through_kdl() {
        let specs = SpecManifests::new()
            .parse("zone web { image \"busybox@1.36\"; memory \"64M\"; }", "")
            .unwrap();
        let text = SpecManifests::new().to_kdl(&specs[0]);
        let again = SpecManifests::new().parse(&text, "kdl").unwrap();
        assert_eq!(again[0].memory, 64 << 20);
        let errs = SpecManifests::new()
            .parse("zone web { memory \"64M\"; }", "kdl")
            .unwrap_err();
        let specs = SpecManifests::new()
            .parse(r#"{"brand": "joyent", "alias": "sm01", "image_uuid": "d34c301e-10c3-11e4-9b79-5f67ca448df0", "max_physical_memory": 128}"#, "")
            .unwrap();
        assert_eq!(
            (specs[0].name.as_str(), specs[0].memory),
            ("sm01", 128 << 20)
        );
        let bad = SpecManifests::new()
            .parse(r#"{"brand": "nope", "alias": "x"}"#, "json")
            .unwrap_err();
        let obj: serde_json::Value = serde_json::from_str(&bad[0]).unwrap();
        assert_eq!(obj["bad_brand"], "nope", "{bad:?}");
        assert!(errs.iter().any(|e| e.contains("image")), "{errs:?}");
    }
}
