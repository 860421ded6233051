//! cgroup v2: one directory `<root>/skerry/<name>` with memory, cpu and pids enabled.

use super::usage::{read_counter, read_limit, read_oom_kills};
use super::{kill_and_remove, kill_listed, make_dir, read_procs, write_file, Cgroup, Limits};
use super::{CgroupError, CgroupUsage, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// A zone's cgroup on a cgroup2 hierarchy.
#[derive(Debug)]
pub struct V2Cgroup {
    dir: PathBuf,
}

impl V2Cgroup {
    /// Creates `<root>/skerry/<name>`, enabling the zone controllers on the way down
    /// (a v2 cgroup only gets a controller its parent delegates in subtree_control).
    pub fn create(root: &Path, name: &str) -> Result<V2Cgroup> {
        let parent = root.join("skerry");
        make_dir(&parent)?;
        enable_controllers(root)?;
        enable_controllers(&parent)?;
        let dir = parent.join(name);
        make_dir(&dir)?;
        Ok(V2Cgroup { dir })
    }

    /// `<root>/skerry/<name>` if it exists, created by nothing.
    pub fn existing(root: &Path, name: &str) -> Option<V2Cgroup> {
        let dir = root.join("skerry").join(name);
        dir.is_dir().then_some(V2Cgroup { dir })
    }

    /// The cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Enables in `dir/cgroup.subtree_control` those zone controllers `dir` has.
fn enable_controllers(dir: &Path) -> Result<()> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = super::CONTROLLERS
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    write_file(dir, "cgroup.subtree_control", &wanted.join(" "))
}

impl Cgroup for V2Cgroup {
    fn set_limits(&self, limits: &Limits) -> Result<()> {
        if let Some(mem) = limits.memory {
            write_file(&self.dir, "memory.max", &mem.to_string())?;
            // Without this a capped zone would page out instead of hitting its cap.
            if self.dir.join("memory.swap.max").exists() {
                write_file(&self.dir, "memory.swap.max", "0")?;
            }
        }
        let cpu = match limits.cpu_quota_us() {
            Some(q) => format!("{q} {}", super::CPU_PERIOD_US),
            None => format!("max {}", super::CPU_PERIOD_US),
        };
        // Uncapped and no cpu controller delegated: nothing to write (nor to undo).
        if limits.cpu_quota_us().is_some() || self.dir.join("cpu.max").exists() {
            write_file(&self.dir, "cpu.max", &cpu)?;
        }
        if let Some(pids) = limits.pids {
            write_file(&self.dir, "pids.max", &pids.to_string())?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        write_file(&self.dir, "cgroup.procs", &pid.to_string())
    }

    fn processes(&self) -> Result<Vec<i32>> {
        read_procs(&self.dir)
    }

    fn memory_usage(&self) -> Result<u64> {
        read_counter(&self.dir, "memory.current")
    }

    fn cpu_usage_usec(&self) -> Result<u64> {
        let text = fs::read_to_string(self.dir.join("cpu.stat")).map_err(|e| CgroupError {
            path: self.dir.clone(),
            reason: format!("reading cpu.stat: {e}"),
        })?;
        parse_usage_usec(&text).ok_or_else(|| CgroupError {
            path: self.dir.clone(),
            reason: "cpu.stat has no usage_usec".into(),
        })
    }

    fn usage(&self) -> Result<CgroupUsage> {
        let d = &self.dir;
        Ok(CgroupUsage {
            memory_bytes: read_counter(d, "memory.current")?,
            memory_limit: read_limit(d, "memory.max")?,
            cpu_usec: self.cpu_usage_usec()?,
            // pids.current counts the delegated sub-cgroups too; without the pids
            // controller, the processes listed here are the best there is.
            tasks: read_counter(d, "pids.current")
                .or_else(|_| read_procs(d).map(|p| p.len() as u64))?,
            tasks_limit: read_limit(d, "pids.max").unwrap_or(None),
        })
    }

    fn remove(&self) -> Result<()> {
        kill_and_remove(&self.dir, || {
            // cgroup.kill (5.14+) kills atomically, even tasks forking right now.
            if write_file(&self.dir, "cgroup.kill", "1").is_err() {
                kill_listed(&self.dir)?;
            }
            Ok(())
        })
    }

    fn restrict_devices(&self, rules: &[super::DeviceRule]) -> Result<()> {
        super::devices::restrict_v2(&self.dir, rules)
    }

    fn describe(&self) -> String {
        format!("v2:{}", self.dir.display())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.dir.join("cgroup.procs")]
    }

    fn oom_kills(&self) -> Result<u64> {
        read_oom_kills(&self.dir, "memory.events")
    }

    fn delegate(&self, uid: u32, gid: u32) -> Result<bool> {
        for f in [
            "",
            "cgroup.procs",
            "cgroup.threads",
            "cgroup.subtree_control",
        ] {
            let path = self.dir.join(f);
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| CgroupError {
                path: self.dir.clone(),
                reason: format!("delegating {} to the zone: {e}", path.display()),
            })?;
        }
        Ok(true)
    }
}

fn parse_usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory standing in for a cgroup2 mount: the control files are plain files.
    fn fake_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        root
    }

    #[test]
    fn create_enables_controllers_and_writes_limits() {
        let root = fake_root();
        fs::create_dir_all(root.path().join("skerry")).unwrap();
        fs::write(
            root.path().join("skerry/cgroup.controllers"),
            "cpu memory pids",
        )
        .unwrap();
        let cg = V2Cgroup::create(root.path(), "z1").unwrap();
        assert_eq!(
            fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids"
        );
        fs::write(cg.dir().join("memory.swap.max"), "max").unwrap();
        cg.set_limits(&Limits {
            memory: Some(32 << 20),
            cpu_cap: 20,
            pids: Some(10),
        })
        .unwrap();
        let read = |f: &str| fs::read_to_string(cg.dir().join(f)).unwrap();
        assert_eq!(read("memory.max"), (32u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("cpu.max"), "20000 100000");
        assert_eq!(read("pids.max"), "10");
        fs::write(cg.dir().join("memory.current"), "8192\n").unwrap();
        assert_eq!(cg.memory_usage().unwrap(), 8192);
        fs::write(
            cg.dir().join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills().unwrap(), 1);
        assert_eq!(cg.procs_files(), vec![cg.dir().join("cgroup.procs")]);
        fs::write(cg.dir().join("memory.current"), "lots\n").unwrap();
        let err = cg.memory_usage().unwrap_err().to_string();
        assert!(err.contains("memory.current is not a number"), "{err}");
    }

    #[test]
    fn cpu_cap_zero_means_no_cap() {
        let root = fake_root();
        let cg = V2Cgroup::create(root.path(), "z2").unwrap();
        fs::write(cg.dir().join("cpu.max"), "").unwrap();
        cg.set_limits(&Limits {
            memory: None,
            cpu_cap: 0,
            pids: None,
        })
        .unwrap();
        assert_eq!(
            fs::read_to_string(cg.dir().join("cpu.max")).unwrap(),
            "max 100000"
        );
        assert!(!cg.dir().join("memory.max").exists());
    }

    #[test]
    fn usage_is_parsed_from_cpu_stat() {
        assert_eq!(
            parse_usage_usec("usage_usec 1234\nuser_usec 1000\n"),
            Some(1234)
        );
        assert_eq!(parse_usage_usec("user_usec 1\n"), None);
    }

    #[test]
    fn usage_reads_current_values_and_limits() {
        let root = fake_root();
        let cg = V2Cgroup::create(root.path(), "z3").unwrap();
        for (f, v) in [
            ("memory.current", "8192\n"),
            ("memory.max", "max\n"),
            ("cpu.stat", "usage_usec 77\nuser_usec 70\n"),
            ("pids.current", "5\n"),
            ("pids.max", "100\n"),
        ] {
            fs::write(cg.dir().join(f), v).unwrap();
        }
        assert_eq!(
            cg.usage().unwrap(),
            CgroupUsage {
                memory_bytes: 8192,
                memory_limit: None,
                cpu_usec: 77,
                tasks: 5,
                tasks_limit: Some(100),
            }
        );
    }

    /// Needs root (chown): delegation hands over the directory and the files a
    /// cgroup's owner manages its subtree with, never the limits set from outside.
    #[test]
    fn delegation_changes_owner_of_the_subtree_files_only() {
        use std::os::unix::fs::MetadataExt;
        assert!(nix::unistd::getuid().is_root(), "chown needs root");
        let root = fake_root();
        let cg = V2Cgroup::create(root.path(), "z4").unwrap();
        for f in [
            "cgroup.procs",
            "cgroup.threads",
            "cgroup.subtree_control",
            "memory.max",
        ] {
            fs::write(cg.dir().join(f), "").unwrap();
        }
        assert!(
            cg.delegate(100_000, 100_001).unwrap(),
            "v2 is mounted in the zone"
        );
        let owner = |f: &str| {
            let m = fs::metadata(cg.dir().join(f)).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(owner(""), (100_000, 100_001));
        assert_eq!(owner("cgroup.procs"), (100_000, 100_001));
        assert_eq!(owner("cgroup.subtree_control"), (100_000, 100_001));
        assert_eq!(owner("memory.max"), (0, 0), "limits stay host root's");
    }

    #[test]
    fn processes_and_remove_on_an_empty_cgroup() {
        let root = fake_root();
        let cg = V2Cgroup::create(root.path(), "z3").unwrap();
        fs::write(cg.dir().join("cgroup.procs"), "").unwrap();
        assert!(cg.processes().unwrap().is_empty());
        // A plain directory with files in it cannot be rmdir'ed: the error names it.
        let err = cg.remove().unwrap_err().to_string();
        assert!(err.contains("z3"), "{err}");
    }
}
