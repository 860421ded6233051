//! cgroup v1 (hybrid hosts): one directory per controller hierarchy, each
//! `<own cgroup>/skerry/<name>`.

use super::usage::{read_counter, read_limit, read_oom_kills};
use super::{kill_and_remove, kill_listed, make_dir, read_procs, write_file, Cgroup, Limits};
use super::{CgroupError, CgroupUsage, Result};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

/// A zone's cgroups on v1 hierarchies (memory, cpu, cpuacct, pids).
#[derive(Debug)]
pub struct V1Cgroup {
    /// Controller -> the zone's directory in that hierarchy.
    dirs: BTreeMap<String, PathBuf>,
}

impl V1Cgroup {
    /// Creates `skerry/<name>` below each controller's base directory. Controllers that
    /// share one hierarchy (`cpu,cpuacct`) share the directory.
    pub fn create(bases: &BTreeMap<String, PathBuf>, name: &str) -> Result<V1Cgroup> {
        let mut dirs = BTreeMap::new();
        for (ctrl, base) in bases {
            let dir = base.join("skerry").join(name);
            if let Err(e) = make_dir(&dir) {
                let made = V1Cgroup { dirs };
                let _ = made.remove();
                return Err(e);
            }
            dirs.insert(ctrl.clone(), dir);
        }
        Ok(V1Cgroup { dirs })
    }

    /// The zone's existing directories `skerry/<name>` (those hierarchies that have
    /// one); `None` when no hierarchy has it.
    pub fn existing(bases: &BTreeMap<String, PathBuf>, name: &str) -> Option<V1Cgroup> {
        let dirs: BTreeMap<String, PathBuf> = bases
            .iter()
            .map(|(ctrl, base)| (ctrl.clone(), base.join("skerry").join(name)))
            .filter(|(_, dir)| dir.is_dir())
            .collect();
        (!dirs.is_empty()).then_some(V1Cgroup { dirs })
    }

    fn dir(&self, ctrl: &str) -> Result<&PathBuf> {
        self.dirs.get(ctrl).ok_or_else(|| CgroupError {
            path: PathBuf::from("/sys/fs/cgroup"),
            reason: format!("no {ctrl} hierarchy"),
        })
    }

    /// The distinct directories (hierarchies may be co-mounted).
    fn unique_dirs(&self) -> Vec<&PathBuf> {
        let mut v: Vec<&PathBuf> = self.dirs.values().collect();
        v.sort();
        v.dedup();
        v
    }
}

impl Cgroup for V1Cgroup {
    fn set_limits(&self, limits: &Limits) -> Result<()> {
        if let Some(mem) = limits.memory {
            let dir = self.dir("memory")?;
            let value = mem.to_string();
            // memsw only exists with swap accounting; equal to the limit = no swap. The
            // kernel keeps memsw >= the limit at every write, so a raise (of a running
            // zone's limit) writes memsw first and a cut writes it last.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                let current = fs::read_to_string(&memsw)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .unwrap_or(u64::MAX);
                if mem > current {
                    write_file(dir, "memory.memsw.limit_in_bytes", &value)?;
                    write_file(dir, "memory.limit_in_bytes", &value)?;
                } else {
                    write_file(dir, "memory.limit_in_bytes", &value)?;
                    write_file(dir, "memory.memsw.limit_in_bytes", &value)?;
                }
            } else {
                write_file(dir, "memory.limit_in_bytes", &value)?;
            }
        }
        let cpu = self.dir("cpu")?;
        write_file(cpu, "cpu.cfs_period_us", &super::CPU_PERIOD_US.to_string())?;
        let quota = limits
            .cpu_quota_us()
            .map_or("-1".to_string(), |q| q.to_string());
        write_file(cpu, "cpu.cfs_quota_us", &quota)?;
        if let Some(pids) = limits.pids {
            write_file(self.dir("pids")?, "pids.max", &pids.to_string())?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.unique_dirs() {
            write_file(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn processes(&self) -> Result<Vec<i32>> {
        // A task sits in every hierarchy; a half-created (or half-removed) cgroup may
        // lack one, so ask all of them.
        let mut pids = Vec::new();
        for dir in self.unique_dirs() {
            pids.extend(read_procs(dir)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn memory_usage(&self) -> Result<u64> {
        read_counter(self.dir("memory")?, "memory.usage_in_bytes")
    }

    fn cpu_usage_usec(&self) -> Result<u64> {
        let dir = self.dir("cpuacct")?;
        let text = fs::read_to_string(dir.join("cpuacct.usage")).map_err(|e| CgroupError {
            path: dir.clone(),
            reason: format!("reading cpuacct.usage: {e}"),
        })?;
        let ns: u64 = text.trim().parse().map_err(|_| CgroupError {
            path: dir.clone(),
            reason: format!("cpuacct.usage is not a number: {text:?}"),
        })?;
        Ok(ns / 1000)
    }

    fn usage(&self) -> Result<CgroupUsage> {
        let mem = self.dir("memory")?;
        let pids = self.dir("pids")?;
        Ok(CgroupUsage {
            memory_bytes: read_counter(mem, "memory.usage_in_bytes")?,
            memory_limit: read_limit(mem, "memory.limit_in_bytes")?,
            cpu_usec: self.cpu_usage_usec()?,
            tasks: read_counter(pids, "pids.current")?,
            tasks_limit: read_limit(pids, "pids.max").unwrap_or(None),
        })
    }

    fn remove(&self) -> Result<()> {
        let mut first_err = None;
        for dir in self.unique_dirs() {
            if let Err(e) = kill_and_remove(dir, || kill_listed(dir)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn restrict_devices(&self, rules: &[super::DeviceRule]) -> Result<()> {
        super::devices::restrict_v1(self.dir("devices")?, rules)
    }

    fn describe(&self) -> String {
        match self.dirs.get("memory") {
            Some(d) => format!("v1:{}", d.display()),
            None => "v1".into(),
        }
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.unique_dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    fn oom_kills(&self) -> Result<u64> {
        read_oom_kills(self.dir("memory")?, "memory.oom_control")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_land_in_each_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let bases: BTreeMap<String, PathBuf> = ["memory", "cpu", "cpuacct", "pids"]
            .iter()
            .map(|c| (c.to_string(), root.path().join(c)))
            .collect();
        let cg = V1Cgroup::create(&bases, "z1").unwrap();
        let mem = root.path().join("memory/skerry/z1");
        fs::write(mem.join("memory.memsw.limit_in_bytes"), "").unwrap();
        cg.set_limits(&Limits {
            memory: Some(64 << 20),
            cpu_cap: 0,
            pids: Some(7),
        })
        .unwrap();
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("memory/skerry/z1/memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            read("memory/skerry/z1/memory.memsw.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("cpu/skerry/z1/cpu.cfs_quota_us"), "-1");
        assert_eq!(read("pids/skerry/z1/pids.max"), "7");
        fs::write(
            root.path().join("cpuacct/skerry/z1/cpuacct.usage"),
            "2500000\n",
        )
        .unwrap();
        assert_eq!(cg.cpu_usage_usec().unwrap(), 2500);
        fs::write(mem.join("memory.usage_in_bytes"), "4096\n").unwrap();
        fs::write(root.path().join("pids/skerry/z1/pids.current"), "3\n").unwrap();
        assert_eq!(
            cg.usage().unwrap(),
            CgroupUsage {
                memory_bytes: 4096,
                memory_limit: Some(64 << 20),
                cpu_usec: 2500,
                tasks: 3,
                tasks_limit: Some(7),
            }
        );
        fs::write(
            root.path().join("memory/skerry/z1/memory.usage_in_bytes"),
            "4096\n",
        )
        .unwrap();
        assert_eq!(cg.memory_usage().unwrap(), 4096);
        // A running zone's cap raised, then cut: both files follow (the kernel's
        // memsw >= limit rule is what init/tests/live.rs meets on this host).
        for mem in [128u64 << 20, 32 << 20] {
            cg.set_limits(&Limits {
                memory: Some(mem),
                cpu_cap: 0,
                pids: None,
            })
            .unwrap();
            assert_eq!(
                read("memory/skerry/z1/memory.limit_in_bytes"),
                mem.to_string()
            );
            assert_eq!(
                read("memory/skerry/z1/memory.memsw.limit_in_bytes"),
                mem.to_string()
            );
        }
    }

    #[test]
    fn co_mounted_controllers_share_a_directory() {
        let root = tempfile::tempdir().unwrap();
        let both = root.path().join("cpu,cpuacct");
        let bases: BTreeMap<String, PathBuf> = [
            ("cpu".to_string(), both.clone()),
            ("cpuacct".to_string(), both.clone()),
            ("memory".to_string(), root.path().join("memory")),
            ("pids".to_string(), root.path().join("pids")),
        ]
        .into();
        let cg = V1Cgroup::create(&bases, "z2").unwrap();
        assert_eq!(cg.unique_dirs().len(), 3);
        cg.add_process(42).unwrap();
        assert_eq!(
            fs::read_to_string(both.join("skerry/z2/cgroup.procs")).unwrap(),
            "42"
        );
    }
}
