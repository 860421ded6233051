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
