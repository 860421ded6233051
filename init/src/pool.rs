//! The pool as init sees it: where things live, and each instance's `state.json`.
//!
//! Nothing about an instance lives only in init's memory: the record below is written
//! atomically on every change, so a restarted init (or a rebooted node) finds exactly
//! what was there.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

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
    /// A state file could not be read or parsed.
    #[error(transparent)]
    Record(#[from] spec::pool::RecordError),
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

pub use spec::pool::InstanceRecord;

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
        spec::pool::manifests_dir(&self.root)
    }

    /// `<pool>/config`: node settings.
    pub fn config_dir(&self) -> PathBuf {
        spec::pool::config_dir(&self.root)
    }

    /// `<pool>/<uuid>`.
    pub fn instance_dir(&self, uuid: &str) -> PathBuf {
        spec::pool::instance_dir(&self.root, uuid)
    }

    /// `<pool>/<uuid>/state.json`.
    pub fn state_path(&self, uuid: &str) -> PathBuf {
        spec::pool::state_path(&self.root, uuid)
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
        let (recs, errs) = spec::pool::load_records(&self.root);
        (recs, errs.into_iter().map(PoolError::from).collect())
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use spec::{ImageRef, InstanceSpec};

    /// A zone spec with the manifest defaults (manifests/README.md), for tests.
    pub fn zone_spec(name: &str) -> InstanceSpec {
        InstanceSpec::zone(
            name,
            ImageRef::Name {
                name: "busybox".into(),
                version: Some("1.36".into()),
            },
        )
    }

    pub fn record(name: &str, uuid: &str, range: u32) -> InstanceRecord {
        InstanceRecord {
            uuid: uuid.into(),
            name: name.into(),
            state: spec::State::Stopped,
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
