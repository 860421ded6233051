//! What each instance uses now (`Usage` on the API, `vmadm stats`, the metrics
//! server): its cgroup (the zone's or its VMM's, v2 or v1), the host ends of its nics
//! and its disk space, read when asked, never kept.

use super::{Entry, Node, NodeError};
use host::cgroup::Hierarchy;
use spec::api::{InstanceUsage, NicUsage};
use spec::Kind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A zone's writable layer is walked only this far when no quota counts it for us:
/// a layer with millions of files is reported as at least what was counted.
const WALK_LIMIT: usize = 100_000;

impl Node {
    /// The usage of instance `id`, or of every instance when `id` is empty (by name).
    pub fn usage(&self, id: &str) -> Result<Vec<InstanceUsage>, NodeError> {
        let entries: Vec<Entry> = if id.is_empty() {
            self.table().values().cloned().collect()
        } else {
            let entry = self.find(id).and_then(|uuid| self.entry(&uuid));
            vec![entry.ok_or_else(|| NodeError::NotFound(id.into()))?]
        };
        // Detected per call: cheap (two /proc reads), and never stale.
        let hierarchy = Hierarchy::detect();
        let mut out: Vec<InstanceUsage> = entries
            .iter()
            .map(|e| self.usage_of(e, hierarchy.as_ref().ok()))
            .collect();
        if let Err(e) = &hierarchy {
            for u in &mut out {
                u.problems.push(e.to_string());
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn usage_of(&self, e: &Entry, hierarchy: Option<&Hierarchy>) -> InstanceUsage {
        let rec = &e.rec;
        let spec = &rec.spec;
        let mut problems = Vec::new();
        let running = e.pid != 0;
        let cgroup_name = match &spec.kind {
            Kind::Zone(_) => monitor::zone_cgroup_name(&rec.uuid),
            Kind::Hvm(_) => monitor::vmm_cgroup_name(&rec.uuid),
        };
        let cg = match hierarchy.and_then(|h| h.existing(&cgroup_name)) {
            Some(cg) => cg.usage().map_err(|e| problems.push(e.to_string())).ok(),
            None => {
                if running {
                    problems.push(format!("cgroup skerry/{cgroup_name} not found"));
                }
                None
            }
        };
        let cg = cg.unwrap_or_default();
        let (cpu_cap, tasks_limit) = match &spec.kind {
            Kind::Zone(z) => (z.cpu_cap, cg.tasks_limit.or(Some(z.pids))),
            Kind::Hvm(_) => (0, cg.tasks_limit),
        };
        let (disk_used_bytes, disk_quota_bytes) = match &spec.kind {
            Kind::Zone(z) => (self.zone_disk_used(e), z.quota),
            Kind::Hvm(h) => {
                let mut used = 0;
                let mut size = 0;
                for d in &h.disks {
                    let path = monitor::disk_path(self.pool.root(), &rec.uuid, &d.name);
                    match std::fs::metadata(&path) {
                        // Allocated blocks: a sparse disk uses what the guest wrote.
                        Ok(m) => {
                            used += m.blocks() * 512;
                            size += d.size.unwrap_or(m.len());
                        }
                        Err(err) => {
                            size += d.size.unwrap_or(0);
                            if running {
                                problems.push(format!("{}: {err}", path.display()));
                            }
                        }
                    }
                }
                (used, Some(size))
            }
        };
        let nics = spec
            .nics
            .iter()
            .enumerate()
            .map(|(i, nic)| {
                let host_if = monitor::host_ifname(&rec.uuid, i);
                // The host end's receive is what the instance sent.
                let c = if running {
                    host::link::counters(&host_if)
                        .map_err(|e| problems.push(e.to_string()))
                        .unwrap_or_default()
                } else {
                    Default::default()
                };
                NicUsage {
                    name: nic.name.clone(),
                    host_if,
                    rx_bytes: c.tx_bytes,
                    tx_bytes: c.rx_bytes,
                    rx_packets: c.tx_packets,
                    tx_packets: c.rx_packets,
                }
            })
            .collect();
        InstanceUsage {
            name: rec.name.clone(),
            uuid: rec.uuid.clone(),
            kind: spec.kind.as_str().to_string(),
            state: rec.state,
            memory_bytes: cg.memory_bytes,
            memory_limit_bytes: cg.memory_limit.unwrap_or(spec.memory),
            cpu_usec: cg.cpu_usec,
            cpu_cap,
            tasks: cg.tasks,
            tasks_limit,
            disk_used_bytes,
            disk_quota_bytes,
            nics,
            sampled_usec: monotonic_usec(),
            problems,
        }
    }

    /// The zone's writable layer: what its quota counts (the monitor reports it), else
    /// the blocks of its files, walked up to [`WALK_LIMIT`] entries.
    fn zone_disk_used(&self, e: &Entry) -> u64 {
        if e.pid != 0 {
            let counted = self
                .runtime
                .status(&e.rec)
                .ok()
                .and_then(|st| st.details.get("quota_used")?.parse().ok());
            if let Some(bytes) = counted {
                return bytes;
            }
        }
        let upper = self.pool.instance_dir(&e.rec.uuid).join("upper");
        let mut budget = WALK_LIMIT;
        blocks_under(&upper, &mut budget)
    }
}

/// Bytes allocated to `dir` and everything below it, without following symlinks or
/// leaving the filesystem, counting at most `budget` entries.
fn blocks_under(dir: &Path, budget: &mut usize) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = top.dev();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if *budget == 0 {
                return total;
            }
            *budget -= 1;
            let Ok(m) = entry.metadata() else { continue };
            total += m.blocks() * 512;
            if m.is_dir() && m.dev() == dev {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// CLOCK_MONOTONIC in microseconds: rates between two samples need a clock that never
/// jumps.
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_counts_blocks_and_stops_at_its_budget() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), vec![1u8; 64 << 10]).unwrap();
        let mut budget = 100;
        assert!(blocks_under(d.path(), &mut budget) >= 64 << 10);
        let mut budget = 0;
        assert_eq!(blocks_under(d.path(), &mut budget), 0);
        let mut budget = 10;
        assert_eq!(blocks_under(&d.path().join("missing"), &mut budget), 0);
    }
}
