//! The pool as init sees it: where things live, and each instance's `state.json`.
//!
//! Nothing about an instance lives only in init's memory: the record below is written
//! atomically on every change, so a restarted init (or a rebooted node) finds exactly
//! what was there.

use serde::{Deserialize, Serialize};
use spec::InstanceSpec;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Top-level pool entries that are not instances.
const RESERVED: &[&str] = &["manifests", "config", "images", "lost+found"];

/// First host uid of the zone id ranges; each zone gets 65536 ids from here on. Chosen
/// far above the ranges `useradd` hands out (/etc/subuid starts at 100000) and the
/// throwaway ranges of `zone run`.
pub const ID_RANGE_BASE: u32 = 0x4000_0000;
/// Ids per zone.
pub const ID_RANGE_SIZE: u32 = 65536;

/// Errors of the pool layer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// What was being accessed.
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
    /// Every zone id range is taken.
    #[error("no free 65536-id host range left for a new zone")]
    IdRangesExhausted,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PoolError + '_ {
    move |source| PoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One instance as init records it in `<pool>/<uuid>/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Instance UUID (its directory name).
    pub uuid: String,
    /// Instance name.
    pub name: String,
    /// Last known lifecycle state (see `spec::api::states`).
    pub state: String,
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
    /// The image the instance was provisioned from.
    #[serde(default)]
    pub image_uuid: String,
    /// The spec currently applied (what config.json was written from).
    pub spec: InstanceSpec,
    /// Unix time of creation.
    #[serde(default)]
    pub created_at: u64,
    /// The applied spec changed while the instance ran; it takes effect at the next
    /// start.
    #[serde(default)]
    pub needs_restart: bool,
}

/// Paths of one pool.
#[derive(Debug, Clone)]
pub struct Pool {
    root: PathBuf,
}

impl Pool {
    /// A pool rooted at `root`; creates `manifests/` and `config/` if missing.
    pub fn open(root: &Path) -> Result<Pool, PoolError> {
        let root = fs::canonicalize(root).map_err(io_err(root))?;
        let pool = Pool { root };
        for d in [pool.manifests_dir(), pool.config_dir()] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(pool)
    }

    /// The pool root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<pool>/manifests`: the desired state.
    pub fn manifests_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }

    /// `<pool>/config`: node settings.
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }

    /// `<pool>/<uuid>`.
    pub fn instance_dir(&self, uuid: &str) -> PathBuf {
        self.root.join(uuid)
    }

    /// `<pool>/<uuid>/state.json`.
    pub fn state_path(&self, uuid: &str) -> PathBuf {
        self.instance_dir(uuid).join("state.json")
    }

    /// Writes an instance record atomically (creating its directory).
    pub fn save(&self, rec: &InstanceRecord) -> Result<(), PoolError> {
        let dir = self.instance_dir(&rec.uuid);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = self.state_path(&rec.uuid);
        spec::atomic::write_json_atomic(&path, rec).map_err(io_err(&path))
    }

    /// Every instance record of the pool. Unreadable records are returned as errors
    /// beside the good ones, so one corrupt file hides nothing else.
    pub fn load_all(&self) -> (Vec<InstanceRecord>, Vec<PoolError>) {
        let mut recs = Vec::new();
        let mut errs = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) => {
                errs.push(io_err(&self.root)(e));
                return (recs, errs);
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if RESERVED.contains(&name.as_ref()) || name.starts_with('.') {
                continue;
            }
            let path = entry.path().join("state.json");
            match fs::read(&path) {
                Ok(data) => match serde_json::from_slice::<InstanceRecord>(&data) {
                    Ok(r) => recs.push(r),
                    Err(source) => errs.push(PoolError::Corrupt { path, source }),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => errs.push(io_err(&path)(e)),
            }
        }
        recs.sort_by(|a, b| a.name.cmp(&b.name));
        (recs, errs)
    }

    /// Removes an instance's directory and everything in it.
    pub fn remove_instance(&self, uuid: &str) -> Result<(), PoolError> {
        let dir = self.instance_dir(uuid);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }
}

/// The lowest free zone id range, given the ranges already recorded.
pub fn allocate_id_range<'a>(
    taken: impl IntoIterator<Item = &'a InstanceRecord>,
) -> Result<u32, PoolError> {
    let mut used: Vec<u32> = taken
        .into_iter()
        .filter(|r| r.id_range_start >= ID_RANGE_BASE)
        .map(|r| (r.id_range_start - ID_RANGE_BASE) / ID_RANGE_SIZE)
        .collect();
    used.sort_unstable();
    used.dedup();
    let mut slot = 0u32;
    for u in used {
        if u != slot {
            break;
        }
        slot += 1;
    }
    let max_slots = (u32::MAX - ID_RANGE_BASE) / ID_RANGE_SIZE;
    if slot >= max_slots {
        return Err(PoolError::IdRangesExhausted);
    }
    Ok(ID_RANGE_BASE + slot * ID_RANGE_SIZE)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use spec::{Ensure, ImageRef, InstanceSpec, Kind, Origin, ZoneSpec};

    /// A zone spec with DESIGN.md's defaults, for tests.
    pub fn zone_spec(name: &str) -> InstanceSpec {
        InstanceSpec {
            name: name.to_string(),
            uuid: None,
            ensure: Ensure::Present,
            autoboot: true,
            image: ImageRef::Name {
                name: "busybox".into(),
                version: Some("1.36".into()),
            },
            memory: spec::defaults::MEMORY,
            nics: vec![],
            resolvers: vec![],
            metadata: Default::default(),
            kind: Kind::Zone(ZoneSpec {
                cpu_cap: 0,
                pids: spec::defaults::PIDS,
                quota: None,
                hostname: name.to_string(),
                init: vec![spec::defaults::INIT.to_string()],
                env: vec![],
            }),
            origin: Origin::default(),
        }
    }

    pub fn record(name: &str, uuid: &str, range: u32) -> InstanceRecord {
        InstanceRecord {
            uuid: uuid.into(),
            name: name.into(),
            state: "stopped".into(),
            reason: String::new(),
            want_running: false,
            id_range_start: range,
            image_uuid: String::new(),
            spec: zone_spec(name),
            created_at: 0,
            needs_restart: false,
        }
    }

    #[test]
    fn id_ranges_fill_the_lowest_gap() {
        let a = record("a", "1", ID_RANGE_BASE);
        let c = record("c", "3", ID_RANGE_BASE + 2 * ID_RANGE_SIZE);
        assert_eq!(
            allocate_id_range([&a, &c]).unwrap(),
            ID_RANGE_BASE + ID_RANGE_SIZE
        );
        assert_eq!(allocate_id_range([]).unwrap(), ID_RANGE_BASE);
        let b = record("b", "2", ID_RANGE_BASE + ID_RANGE_SIZE);
        assert_eq!(
            allocate_id_range([&a, &b, &c]).unwrap(),
            ID_RANGE_BASE + 3 * ID_RANGE_SIZE
        );
    }

    #[test]
    fn records_round_trip_and_corrupt_ones_are_reported_beside_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(dir.path()).unwrap();
        let rec = record(
            "web01",
            "11111111-1111-1111-1111-111111111111",
            ID_RANGE_BASE,
        );
        pool.save(&rec).unwrap();
        fs::create_dir_all(pool.instance_dir("bad")).unwrap();
        fs::write(pool.state_path("bad"), b"{not json").unwrap();
        let (recs, errs) = pool.load_all();
        assert_eq!(recs, vec![rec]);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].to_string().contains("bad/state.json"),
            "{}",
            errs[0]
        );
    }
}
