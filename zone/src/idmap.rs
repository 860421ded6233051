//! User-namespace id mapping: zone uid/gid 0..65535 map to host ids
//! `start..start+65536`, so zone root is an unprivileged id on the host.

use crate::error::{Context, Result, ZoneError};
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::Path;

/// Ids per zone.
pub const RANGE_SIZE: u32 = 65536;

/// A zone's id range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First host uid/gid (zone root).
    pub start: u32,
}

impl IdMap {
    /// A range starting at `start`; host root (0) and ranges running past the 32-bit id
    /// space are refused, since zone root must not be root on the host.
    pub fn new(start: u32) -> Result<IdMap> {
        if start == 0 {
            return Err(ZoneError::Invalid(
                "id range starts at 0: zone root would be host root".into(),
            ));
        }
        if start
            .checked_add(RANGE_SIZE)
            .is_none_or(|end| end > u32::MAX - 1)
        {
            return Err(ZoneError::Invalid(format!(
                "id range {start}+{RANGE_SIZE} runs past the largest uid"
            )));
        }
        Ok(IdMap { start })
    }

    /// The `uid_map` / `gid_map` line.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.start, RANGE_SIZE)
    }

    /// Writes uid_map and gid_map of process `pid` (which has just entered its new user
    /// namespace). We are privileged in the parent namespace, so setgroups stays allowed.
    pub fn write_for(&self, pid: i32) -> Result<()> {
        let line = self.map_line();
        for file in ["uid_map", "gid_map"] {
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, &line).ctx(|| format!("writing {path}"))?;
        }
        Ok(())
    }

    /// Host id of zone id `id`.
    pub fn host_id(&self, id: u32) -> u32 {
        self.start + id
    }
}

/// First host id used for `zone run` ranges: far above ids init hands out to zones
/// (which count up from low ranges), and far below `u32::MAX`.
pub const RUN_RANGE_BASE: u32 = 3_000_000_000;
/// How many `zone run` ranges there are (concurrent throwaway zones).
pub const RUN_RANGES: u32 = 4096;

/// A range held for a `zone run`: while this value lives, no other `zone run` on the
/// host picks the same range. The lock is an abstract unix socket bound to a name
/// derived from the range: the kernel frees it when the process dies, however it dies,
/// and it leaves nothing on any filesystem.
#[derive(Debug)]
pub struct RangeLease {
    /// The leased range.
    pub map: IdMap,
    _lock: UnixListener,
}

impl RangeLease {
    /// Leases the first free range, starting the search at a slot derived from our pid
    /// so that concurrent runs rarely probe the same slots.
    pub fn acquire() -> Result<RangeLease> {
        use std::os::linux::net::SocketAddrExt;
        let first = std::process::id() % RUN_RANGES;
        for i in 0..RUN_RANGES {
            let slot = (first + i) % RUN_RANGES;
            let name = format!("skerry-zone-run-idrange-{slot}");
            let addr = SocketAddr::from_abstract_name(name.as_bytes())
                .ctx(|| format!("abstract socket name {name}"))?;
            if let Ok(lock) = UnixListener::bind_addr(&addr) {
                let map = IdMap::new(RUN_RANGE_BASE + slot * RANGE_SIZE)?;
                return Ok(RangeLease { map, _lock: lock });
            }
        }
        Err(ZoneError::Invalid(format!(
            "all {RUN_RANGES} zone run id ranges are in use"
        )))
    }
}

/// Makes `dir` owned by zone root, so the zone sees its upper layer's root as its own.
pub fn chown_to_zone_root(dir: &Path, map: &IdMap) -> Result<()> {
    let id = map.host_id(0);
    std::os::unix::fs::chown(dir, Some(id), Some(id)).ctx(|| format!("chown {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_root_is_never_host_root() {
        assert!(IdMap::new(0).is_err());
        assert!(IdMap::new(u32::MAX - 10).is_err());
        let m = IdMap::new(100_000).unwrap();
        assert_eq!(m.map_line(), "0 100000 65536\n");
        assert_eq!(m.host_id(1000), 101_000);
    }

    #[test]
    fn run_ranges_fit_the_id_space() {
        assert!(IdMap::new(RUN_RANGE_BASE + (RUN_RANGES - 1) * RANGE_SIZE).is_ok());
    }

    #[test]
    fn two_leases_never_share_a_range() {
        let a = RangeLease::acquire().unwrap();
        let b = RangeLease::acquire().unwrap();
        assert_ne!(a.map, b.map);
        let start = a.map.start;
        drop(a);
        // The released slot (ours, searched first) is free again.
        let c = RangeLease::acquire().unwrap();
        assert_eq!(c.map.start, start);
    }
}
