//! The pool as every crate sees it: where things live, and the schema of each
//! instance's `<pool>/<uuid>/state.json`.
//!
//! init writes the records (atomically, on every change); imgadm reads them to know
//! which images are in use. Both go through [`InstanceRecord`], so a renamed field
//! breaks the build, not a running node.

use crate::model::InstanceSpec;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Top-level pool entries that are not instances.
pub const RESERVED: &[&str] = &["manifests", "config", "images", "lost+found"];

/// The name of an instance's state file inside its directory.
pub const STATE_FILE: &str = "state.json";

/// `<pool>/manifests`: the desired state.
pub fn manifests_dir(root: &Path) -> PathBuf {
    root.join("manifests")
}

/// `<pool>/config`: node settings.
pub fn config_dir(root: &Path) -> PathBuf {
    root.join("config")
}

/// `<pool>/images`: the image store (imgadm's).
pub fn images_dir(root: &Path) -> PathBuf {
    root.join("images")
}

/// `<pool>/<uuid>`: one instance's directory.
pub fn instance_dir(root: &Path, uuid: &str) -> PathBuf {
    root.join(uuid)
}

/// `<pool>/<uuid>/state.json`.
pub fn state_path(root: &Path, uuid: &str) -> PathBuf {
    instance_dir(root, uuid).join(STATE_FILE)
}

/// One instance as init records it in `<pool>/<uuid>/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Instance UUID (its directory name).
    pub uuid: String,
    /// Instance name.
    pub name: String,
    /// Last known lifecycle state.
    pub state: crate::State,
    /// Last exit or failure reason.
    #[serde(default)]
    pub reason: String,
    /// Whether the operator (or autoboot) wants it running: a monitor that dies while
    /// this is set is restarted; a stop clears it.
    #[serde(default)]
    pub want_running: bool,
    /// First host id of the zone's range (0 for HVM instances).
    #[serde(default)]
    pub id_range_start: u32,
    /// The image the instance was provisioned from (empty until it is).
    #[serde(default)]
    pub image_uuid: String,
    /// The spec currently applied (what config.json was written from); its kind is
    /// the instance's kind.
    pub spec: InstanceSpec,
    /// Unix time of creation.
    #[serde(default)]
    pub created_at: u64,
    /// The applied spec changed while the instance ran; it takes effect at the next
    /// start.
    #[serde(default)]
    pub needs_restart: bool,
}

impl InstanceRecord {
    /// The record of an instance being provisioned from `spec`: state `provisioning`,
    /// nothing else known yet.
    pub fn provisioning(uuid: String, spec: InstanceSpec) -> InstanceRecord {
        InstanceRecord {
            uuid,
            name: spec.name.clone(),
            state: crate::State::Provisioning,
            reason: "creating".into(),
            want_running: false,
            id_range_start: 0,
            image_uuid: String::new(),
            spec,
            created_at: 0,
            needs_restart: false,
        }
    }
}

/// A state file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A state file exists but does not parse.
    #[error("{path}: corrupt state file: {source}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Every instance record of the pool at `root`, sorted by name. Unreadable records
/// are returned as errors beside the good ones, so one corrupt file hides nothing
/// else; a directory without a state file is not an instance (yet).
pub fn load_records(root: &Path) -> (Vec<InstanceRecord>, Vec<RecordError>) {
    let mut recs = Vec::new();
    let mut errs = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(source) => {
            errs.push(RecordError::Io {
                path: root.to_path_buf(),
                source,
            });
            return (recs, errs);
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if RESERVED.contains(&name.as_ref()) || name.starts_with('.') {
            continue;
        }
        let path = entry.path().join(STATE_FILE);
        match fs::read(&path) {
            Ok(data) => match serde_json::from_slice::<InstanceRecord>(&data) {
                Ok(r) => recs.push(r),
                Err(source) => errs.push(RecordError::Corrupt { path, source }),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {}
            Err(source) => errs.push(RecordError::Io { path, source }),
        }
    }
    recs.sort_by(|a, b| a.name.cmp(&b.name));
    (recs, errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageRef;

    #[test]
    fn records_round_trip_and_corrupt_ones_are_reported_beside_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let spec = InstanceSpec::zone("web01", ImageRef::Uuid(uuid::Uuid::nil()));
        let rec = InstanceRecord::provisioning("1111".into(), spec);
        fs::create_dir_all(instance_dir(dir.path(), "1111")).unwrap();
        crate::atomic::write_json_atomic(&state_path(dir.path(), "1111"), &rec).unwrap();
        fs::create_dir_all(instance_dir(dir.path(), "bad")).unwrap();
        fs::write(state_path(dir.path(), "bad"), b"{not json").unwrap();
        fs::create_dir_all(manifests_dir(dir.path())).unwrap();
        fs::write(dir.path().join("stray-file"), b"").unwrap();
        let (recs, errs) = load_records(dir.path());
        assert_eq!(recs, vec![rec]);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].to_string().contains("bad/state.json"),
            "{}",
            errs[0]
        );
    }
}
