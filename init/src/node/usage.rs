//! What each instance uses now (`Usage` on the API, `vmadm stats`, the metrics
//! server): its cgroup (the zone's or its VMM's, v2 or v1), the host ends of its nics
//! and its disk space, read when asked, never kept.

use super::{Entry, Node, NodeError};
use crate::pool::InstanceRecord;
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
        let running = e.pid != 0;
        // What the zone's quota counts, as its monitor reports it.
        let quota_used = match (&e.rec.spec.kind, running) {
            (Kind::Zone(_), true) => self
                .runtime
                .status(&e.rec)
                .ok()
                .and_then(|st| st.details.get("quota_used")?.parse().ok()),
            _ => None,
        };
        measure(&e.rec, running, self.pool.root(), hierarchy, quota_used)
    }
}

/// The usage of the instance `rec` in the pool at `pool` (`running`: it has a live
/// monitor, so a missing cgroup or link is a problem worth naming).
pub(crate) fn measure(
    rec: &InstanceRecord,
    running: bool,
    pool: &Path,
    hierarchy: Option<&Hierarchy>,
    quota_used: Option<u64>,
) -> InstanceUsage {
    let spec = &rec.spec;
    let mut problems = Vec::new();
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
        Kind::Hvm(h) => (h.cpu_cap, cg.tasks_limit),
    };
    let (disk_used_bytes, disk_quota_bytes) = match &spec.kind {
        Kind::Zone(z) => {
            let used = quota_used.unwrap_or_else(|| {
                let upper = spec::pool::instance_dir(pool, &rec.uuid).join("upper");
                blocks_under(&upper, &mut WALK_LIMIT.clone())
            });
            (used, z.quota)
        }
        Kind::Hvm(h) => {
            let mut used = 0;
            let mut size = 0;
            for d in &h.disks {
                let path = monitor::disk_path(pool, &rec.uuid, &d.name);
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

    /// Removes what the HVM test made, however it ends.
    struct Cleanup {
        cgroup: Option<Box<dyn host::cgroup::Cgroup>>,
        link: String,
        child: std::process::Child,
    }
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if let Some(cg) = &self.cgroup {
                let _ = cg.remove();
            }
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.link])
                .status();
        }
    }

    /// Needs root: an HVM is measured at its VMM: the cgroup the vmm jail makes
    /// (`skerry/vmm-<uuid>`, on this host's v1 or v2), the host end of its nic, the
    /// allocated blocks of its disk files against their sizes.
    #[test]
    fn an_hvm_is_measured_at_its_vmm_cgroup_tap_and_disk_files() {
        let pid = std::process::id();
        let uuid = format!("{pid:08x}-0000-4000-8000-000000000001");
        let pool = tempfile::tempdir().unwrap();
        let mut spec = crate::pool::tests::zone_spec("db01");
        spec.memory = 96 << 20;
        spec.kind = Kind::Hvm(spec::HvmSpec {
            vcpus: 1,
            disks: vec![spec::Disk {
                name: "root".into(),
                boot: true,
                size: Some(8 << 20),
            }],
            cmdline: None,
            cpu_cap: 30,
        });
        spec.nics = vec![spec::Nic {
            name: "net0".into(),
            tag: "admin".into(),
            ip: spec::IpConfig::Dhcp,
            gateway: None,
            mtu: None,
            mac: None,
            vlan: 0,
            allow: Default::default(),
        }];
        let mut rec = InstanceRecord::provisioning(uuid.clone(), spec);
        rec.state = spec::State::Running;
        // The disk: 8 MiB, of which 1 MiB written.
        let disk = monitor::disk_path(pool.path(), &uuid, "root");
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![7u8; 1 << 20], 0).unwrap();
        f.sync_all().unwrap();
        // The VMM: a process in its cgroup, a link by its tap's name.
        let h = Hierarchy::detect().unwrap();
        let link = monitor::host_ifname(&uuid, 0);
        let mut cleanup = Cleanup {
            cgroup: None,
            link: link.clone(),
            // Moved into the cgroup while it waits, then exec'd: the new image's
            // pages are charged to the cgroup (v1 moves no old charges).
            child: std::process::Command::new("sh")
                .args(["-c", "read go; exec sleep 30"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        };
        let cg = h.create(&monitor::vmm_cgroup_name(&uuid)).unwrap();
        cg.set_limits(&host::cgroup::Limits {
            memory: Some(128 << 20),
            cpu_cap: 0,
            pids: Some(50),
        })
        .unwrap();
        cg.add_process(cleanup.child.id() as i32).unwrap();
        cleanup.cgroup = Some(cg);
        use std::io::Write;
        let mut go = cleanup.child.stdin.take().unwrap();
        go.write_all(b"go\n").unwrap();
        drop(go);
        let exec = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{}/exe", cleanup.child.id()))
            .is_ok_and(|e| !e.ends_with("sleep"))
        {
            assert!(std::time::Instant::now() < exec, "sh did not exec sleep");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let peer = format!("skp{pid:x}");
        let made = std::process::Command::new("ip")
            .args(["link", "add", &link, "type", "veth", "peer", "name", &peer])
            .status()
            .unwrap();
        assert!(made.success(), "ip link add {link}");

        let u = measure(&rec, true, pool.path(), Some(&h), None);
        assert!(u.problems.is_empty(), "{:?}", u.problems);
        assert_eq!(u.kind, "hvm");
        assert_eq!(u.cpu_cap, 30, "the HVM's own cap");
        assert_eq!(u.memory_limit_bytes, 128 << 20, "the VMM cgroup's limit");
        assert_eq!(u.tasks, 1, "the sleep in the cgroup");
        assert_eq!(u.tasks_limit, Some(50));
        assert!(u.memory_bytes > 0);
        assert!(
            u.disk_used_bytes >= 1 << 20 && u.disk_used_bytes < 8 << 20,
            "{}",
            u.disk_used_bytes
        );
        assert_eq!(u.disk_quota_bytes, Some(8 << 20));
        assert_eq!(u.nics[0].host_if, link);

        // Stopped (no monitor, no cgroup, no link): zeros and no complaint.
        drop(cleanup);
        let u = measure(&rec, false, pool.path(), Some(&h), None);
        assert!(u.problems.is_empty(), "{:?}", u.problems);
        assert_eq!(
            (u.memory_bytes, u.tasks, u.memory_limit_bytes),
            (0, 0, 96 << 20)
        );
        // Running but its cgroup is gone: said so.
        let u = measure(&rec, true, pool.path(), Some(&h), None);
        assert!(
            u.problems
                .iter()
                .any(|p| p.contains(&format!("skerry/vmm-{uuid} not found"))),
            "{:?}",
            u.problems
        );
    }

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
