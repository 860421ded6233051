//! The desired state as the spec crate reads it: the front end the node uses to load
//! `<pool>/manifests`, parse API payloads and write API-created instances back as KDL.
//!
//! A trait so the node's logic is unit-tested with hand-built specs; [`SpecManifests`]
//! is the real thing.

use spec::InstanceSpec;
use std::path::{Path, PathBuf};

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
#[derive(Debug, Default, Clone, Copy)]
pub struct SpecManifests;

impl Manifests for SpecManifests {
    fn load_dir(&self, dir: &Path) -> Loaded {
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

    fn parse(&self, payload: &str, format: &str) -> Result<Vec<InstanceSpec>, Vec<String>> {
        match sniff(payload, format) {
            "json" => Err(vec![
                "SmartOS JSON payloads are not supported by this init yet; send KDL".into(),
            ]),
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
        let l = SpecManifests.load_dir(dir.path());
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
    fn payloads_parse_and_round_trip_through_kdl() {
        let specs = SpecManifests
            .parse("zone web { image \"busybox@1.36\"; memory \"64M\"; }", "")
            .unwrap();
        let text = SpecManifests.to_kdl(&specs[0]);
        let again = SpecManifests.parse(&text, "kdl").unwrap();
        assert_eq!(again[0].memory, 64 << 20);
        let errs = SpecManifests
            .parse("zone web { memory \"64M\"; }", "kdl")
            .unwrap_err();
        assert!(errs.iter().any(|e| e.contains("image")), "{errs:?}");
    }
}
