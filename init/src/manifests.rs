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

/// The payload format: what the caller said, or JSON when it starts like an object
/// (an unknown word counts as unsaid).
pub fn sniff(payload: &str, format: &str) -> spec::Format {
    spec::Format::from_arg(format, payload).unwrap_or_else(|_| spec::Format::sniff(payload))
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
        let loaded = load_parallel(dir).unwrap_or_else(|| spec::load_dir(dir));
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

/// Below this many files one thread parses them all.
const PARALLEL_FROM: usize = 64;

/// `spec::load_dir`, parsing consecutive slices of the (sorted) files on all CPUs.
/// Each slice is checked for clashes by `spec::load_files` itself; a name or pinned
/// uuid declared in two slices makes this give up (`None`), and the caller loads
/// sequentially, so results are always exactly `load_dir`'s.
fn load_parallel(dir: &Path) -> Option<spec::LoadedDir> {
    let files = spec::manifest::manifest_files(dir).ok()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if files.len() < PARALLEL_FROM || cpus < 2 {
        return None;
    }
    let per = files.len().div_ceil(cpus);
    let parts: Vec<spec::LoadedDir> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|chunk| s.spawn(move || spec::load_files(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join())
            .collect::<Result<_, _>>()
    })
    .ok()?;
    let mut names = std::collections::HashSet::new();
    let mut uuids = std::collections::HashSet::new();
    let mut out = spec::LoadedDir::default();
    for part in parts {
        for i in &part.instances {
            if !names.insert(i.name.clone()) || i.uuid.is_some_and(|u| !uuids.insert(u)) {
                return None;
            }
        }
        out.instances.extend(part.instances);
        out.errors.extend(part.errors);
    }
    Some(out)
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
            spec::Format::Json => spec::smartos::from_payload(payload).map_err(|e| {
                // SmartOS's error object first (what SmartOS tools parse), then one
                // sentence per problem for a person.
                let mut lines = vec![serde_json::to_string(&e).unwrap_or_else(|_| "{}".into())];
                lines.extend(e.notes.iter().cloned());
                lines
            }),
            spec::Format::Kdl => spec::parse_str("<payload>", payload).map_err(|e| {
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
    fn parallel_loading_matches_load_dir_and_falls_back_on_clashes() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..100 {
            std::fs::write(
                dir.path().join(format!("z{i:03}.kdl")),
                format!("zone z{i:03} {{ image \"busybox@1.36\"; }}\n"),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("z050.kdl"), "zone broken {\n").unwrap();
        let names = |l: &spec::LoadedDir| {
            l.instances
                .iter()
                .map(|i| i.name.clone())
                .collect::<Vec<_>>()
        };
        let seq = spec::load_dir(dir.path());
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            let par = load_parallel(dir.path()).expect("parallel path on 2+ cpus");
            assert_eq!(names(&par), names(&seq));
            assert_eq!(par.errors.len(), 1);
        }
        // The last file redeclares the first one's name: only load_dir knows which wins.
        std::fs::write(
            dir.path().join("z099.kdl"),
            "zone z000 { image \"busybox@1.36\"; }\n",
        )
        .unwrap();
        assert!(load_parallel(dir.path()).is_none());
        let l = SpecManifests::new().load_dir(dir.path());
        assert_eq!(l.specs.len(), 98);
        assert!(
            l.problems.iter().any(|p| p.message.contains("z099.kdl")),
            "{:?}",
            l.problems
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
