//! Resource limits: one cgroup per instance (a zone, a guest's VMM) at
//! `skerry/<name>`, on cgroup v2 or, on hybrid hosts whose controllers are still bound
//! to v1 hierarchies, on cgroup v1. The version is detected from the mount table, never
//! assumed.

mod devices;
mod usage;
mod v1;
mod v2;

pub use devices::{DeviceKind, DeviceRule, STANDARD_DEVICES};
pub use usage::CgroupUsage;

pub use v1::V1Cgroup;
pub use v2::V2Cgroup;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A cgroup operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {reason}")]
pub struct CgroupError {
    /// The cgroup directory (or the file read to find it).
    pub path: PathBuf,
    /// What failed.
    pub reason: String,
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, CgroupError>;

/// The limits an instance runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Memory cap in bytes (swap is capped to nothing on top of it).
    pub memory: Option<u64>,
    /// Percent of one CPU; 0 = no cap.
    pub cpu_cap: u32,
    /// Maximum number of tasks.
    pub pids: Option<u64>,
}

/// CFS period used for `cpu-cap` (100 ms, the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

impl Limits {
    /// The CFS quota (µs per [`CPU_PERIOD_US`]) for the cap, `None` when uncapped.
    pub fn cpu_quota_us(&self) -> Option<u64> {
        (self.cpu_cap > 0).then(|| u64::from(self.cpu_cap) * CPU_PERIOD_US / 100)
    }
}

/// One instance's cgroup, whatever the cgroup version.
pub trait Cgroup: std::fmt::Debug + Send {
    /// Writes the limits.
    fn set_limits(&self, limits: &Limits) -> Result<()>;
    /// Moves process `pid` (and its threads) into the cgroup.
    fn add_process(&self, pid: i32) -> Result<()>;
    /// The pids currently in the cgroup.
    fn processes(&self) -> Result<Vec<i32>>;
    /// Memory the cgroup charges now, in bytes (what a new limit must not cut under).
    fn memory_usage(&self) -> Result<u64>;
    /// CPU time used by the cgroup so far, in microseconds.
    fn cpu_usage_usec(&self) -> Result<u64>;
    /// Memory, CPU time and tasks used now, with their limits (`vmadm stats`, metrics).
    fn usage(&self) -> Result<CgroupUsage>;
    /// Removes the cgroup, killing whatever is still inside first.
    fn remove(&self) -> Result<()>;
    /// Denies its tasks every device but `rules` (v1: the `devices` controller, which
    /// must be mounted; v2: an attached device program).
    fn restrict_devices(&self, rules: &[DeviceRule]) -> Result<()>;
    /// A short description for status output (`v1:/sys/fs/cgroup/memory/...`).
    fn describe(&self) -> String;
    /// The `cgroup.procs` files a process writes `0` to to join the cgroup (one per v1
    /// hierarchy): a child opens them before `exec`, so it runs no code of its own
    /// outside the cgroup (`add_process` after `spawn` leaves that window open).
    fn procs_files(&self) -> Vec<PathBuf>;
    /// How many tasks the kernel's OOM killer killed in the cgroup at its memory cap
    /// (`oom_kill` of v2 `memory.events`, v1 `memory.oom_control`).
    fn oom_kills(&self) -> Result<u64>;
    /// Delegates the cgroup to the instance's root (`uid`/`gid` on the host), as cgroup v2
    /// delegation is done: the directory and its `cgroup.procs`, `cgroup.threads` and
    /// `cgroup.subtree_control` change owner, the limit files stay host root's. Returns
    /// whether the instance gets a cgroup2 mount of it; v1 hierarchies are never delegated.
    fn delegate(&self, _uid: u32, _gid: u32) -> Result<bool> {
        Ok(false)
    }
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Pure cgroup v2 mounted at `root`.
    V2 {
        /// The cgroup2 mount point (`/sys/fs/cgroup`).
        root: PathBuf,
    },
    /// cgroup v1: controller name -> the cgroup directory of this process in it.
    V1 {
        /// `memory` -> `/sys/fs/cgroup/memory/<own cgroup>`, ...
        controllers: BTreeMap<String, PathBuf>,
    },
}

/// A leftover cgroup [`Hierarchy::remove_stale`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleCgroup {
    /// Its description (`v1:/sys/fs/cgroup/memory/...`).
    pub cgroup: String,
    /// The pids that were still in it and got SIGKILL.
    pub killed: Vec<i32>,
}

/// Controllers an instance needs.
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

impl Hierarchy {
    /// Detects the host's layout from `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn detect() -> Result<Hierarchy> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let own = read("/proc/self/cgroup")?;
        Self::from_tables(&mountinfo, &own)
    }

    /// [`Hierarchy::detect`] on given table contents (testable without a host).
    ///
    /// v2 is used when a cgroup2 mount offers the controllers a zone needs; otherwise
    /// every needed controller must be mounted as v1 (`cpuacct` too, for usage).
    pub fn from_tables(mountinfo: &str, own_cgroups: &str) -> Result<Hierarchy> {
        let mut v1_mounts: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut v2_root: Option<PathBuf> = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split_whitespace().nth(4).map(unescape_mount_path);
            let mut r = right.split_whitespace();
            let fstype = r.next().unwrap_or("");
            let _source = r.next();
            let options = r.next().unwrap_or("");
            let Some(mount_point) = mount_point else {
                continue;
            };
            match fstype {
                "cgroup2" if v2_root.is_none() => v2_root = Some(mount_point),
                "cgroup" => {
                    for opt in options.split(',') {
                        if CONTROLLERS.contains(&opt) || opt == "cpuacct" || opt == "devices" {
                            v1_mounts
                                .entry(opt.to_string())
                                .or_insert(mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(root) = v2_root {
            let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let has_all = CONTROLLERS
                .iter()
                .all(|c| available.split_whitespace().any(|a| a == *c));
            if has_all || v1_mounts.is_empty() {
                return Ok(Hierarchy::V2 { root });
            }
        }
        let mut controllers = BTreeMap::new();
        for name in CONTROLLERS.iter().chain(std::iter::once(&"cpuacct")) {
            let mount = v1_mounts.get(*name).ok_or_else(|| CgroupError {
                path: PathBuf::from("/sys/fs/cgroup"),
                reason: format!("controller {name} is mounted neither as cgroup v2 nor v1"),
            })?;
            let rel = own_cgroup_path(own_cgroups, name).unwrap_or_else(|| "/".into());
            controllers.insert(name.to_string(), mount.join(rel.trim_start_matches('/')));
        }
        // v1 device control, used where mounted; an instance that asks for it on a
        // host without it gets an error naming the missing hierarchy.
        if let Some(mount) = v1_mounts.get("devices") {
            let rel = own_cgroup_path(own_cgroups, "devices").unwrap_or_else(|| "/".into());
            controllers.insert(
                "devices".to_string(),
                mount.join(rel.trim_start_matches('/')),
            );
        }
        Ok(Hierarchy::V1 { controllers })
    }

    /// Creates the cgroup `skerry/<name>` below this process's own cgroup (v1) or the
    /// cgroup2 root (v2).
    pub fn create(&self, name: &str) -> Result<Box<dyn Cgroup>> {
        match self {
            Hierarchy::V2 { root } => Ok(Box::new(V2Cgroup::create(root, name)?)),
            Hierarchy::V1 { controllers } => Ok(Box::new(V1Cgroup::create(controllers, name)?)),
        }
    }

    /// The cgroup `skerry/<name>` if it already exists (in any v1 hierarchy), without
    /// creating anything: what a runtime killed by SIGKILL left behind, since a zone
    /// keeps the same name across starts.
    pub fn existing(&self, name: &str) -> Option<Box<dyn Cgroup>> {
        match self {
            Hierarchy::V2 { root } => {
                V2Cgroup::existing(root, name).map(|c| Box::new(c) as Box<dyn Cgroup>)
            }
            Hierarchy::V1 { controllers } => {
                V1Cgroup::existing(controllers, name).map(|c| Box::new(c) as Box<dyn Cgroup>)
            }
        }
    }

    /// Kills every process left in the existing cgroup `skerry/<name>` and removes it
    /// (every v1 hierarchy). Returns what was removed and the pids that were still in
    /// it, or `None` when there was no such cgroup.
    pub fn remove_stale(&self, name: &str) -> Result<Option<StaleCgroup>> {
        let Some(cg) = self.existing(name) else {
            return Ok(None);
        };
        let pids = cg.processes().unwrap_or_default();
        cg.remove()?;
        Ok(Some(StaleCgroup {
            cgroup: cg.describe(),
            killed: pids,
        }))
    }

    /// `v1` or `v2`.
    pub fn version(&self) -> &'static str {
        match self {
            Hierarchy::V2 { .. } => "v2",
            Hierarchy::V1 { .. } => "v1",
        }
    }
}

/// Finds the path of controller `name` in a `/proc/<pid>/cgroup` table.
fn own_cgroup_path(table: &str, name: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        ctrls
            .split(',')
            .any(|c| c == name)
            .then(|| path.to_string())
    })
}

/// mountinfo escapes spaces and friends as `\040`-style octal.
fn unescape_mount_path(s: &str) -> PathBuf {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

fn read(path: &str) -> Result<String> {
    fs::read_to_string(path).map_err(|e| CgroupError {
        path: PathBuf::from(path),
        reason: format!("reading: {e}"),
    })
}

/// Writes one cgroup control file, naming it on failure.
pub(super) fn write_file(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|e| CgroupError {
        path: dir.to_path_buf(),
        reason: format!("writing {value:?} to {file}: {e}"),
    })
}

/// Reads the pids listed in a `cgroup.procs` file.
pub(super) fn read_procs(dir: &Path) -> Result<Vec<i32>> {
    let path = dir.join("cgroup.procs");
    let text = fs::read_to_string(&path).map_err(|e| CgroupError {
        path: dir.to_path_buf(),
        reason: format!("reading cgroup.procs: {e}"),
    })?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Creates a cgroup directory (and `skerry/` above it).
pub(super) fn make_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| CgroupError {
        path: dir.to_path_buf(),
        reason: format!("creating: {e}"),
    })
}

/// `dir` and every cgroup below it (a delegated zone makes its own), deepest first:
/// the order they can be removed in.
pub(super) fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree(&e.path()));
            }
        }
    }
    out.push(dir.to_path_buf());
    out
}

/// Kills what is left in `dir` and below and removes the whole subtree, retrying while
/// the kernel finishes tearing the dead tasks down (rmdir answers EBUSY until then).
pub(super) fn kill_and_remove(dir: &Path, kill: impl Fn() -> Result<()>) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tree = subtree(dir);
        if tree
            .iter()
            .any(|d| !read_procs(d).unwrap_or_default().is_empty())
        {
            kill()?;
        }
        let mut busy = None;
        for d in &tree {
            match fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // EBUSY: tasks still exiting; anything else will not get better.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    busy = Some((d.clone(), e));
                    break;
                }
                Err(e) => {
                    return Err(CgroupError {
                        path: d.clone(),
                        reason: format!("removing: {e}"),
                    })
                }
            }
        }
        match busy {
            None => return Ok(()),
            Some(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Some((path, e)) => {
                return Err(CgroupError {
                    path,
                    reason: format!("removing: {e}"),
                })
            }
        }
    }
}

/// SIGKILLs every pid listed in the `cgroup.procs` of `dir` and the cgroups below it.
pub(super) fn kill_listed(dir: &Path) -> Result<()> {
    for d in subtree(dir) {
        for pid in read_procs(&d)? {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_uses_v1_under_own_cgroup() {
        let own = "4:memory:/sandbox/a\n8:pids:/\n1:cpu:/\n2:cpuacct:/\n0::/\n";
        let h = Hierarchy::from_tables(HYBRID, own).unwrap();
        let Hierarchy::V1 { controllers } = h else {
            panic!("expected v1, got {h:?}")
        };
        assert_eq!(
            controllers["memory"],
            PathBuf::from("/sys/fs/cgroup/memory/sandbox/a")
        );
        assert_eq!(controllers["pids"], PathBuf::from("/sys/fs/cgroup/pids"));
        assert_eq!(
            controllers["cpuacct"],
            PathBuf::from("/sys/fs/cgroup/cpuacct")
        );
    }

    /// A hybrid table whose cgroup2 mount is a directory with the given
    /// `cgroup.controllers`: v2 wins only when it offers every needed controller.
    #[test]
    fn hybrid_host_prefers_v2_when_it_has_the_controllers() {
        let unified = tempfile::tempdir().unwrap();
        let table = HYBRID.replace("/sys/fs/cgroup/unified", unified.path().to_str().unwrap());
        std::fs::write(unified.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let h = Hierarchy::from_tables(&table, "0::/\n").unwrap();
        assert_eq!(h.version(), "v1", "pids is still bound to v1: {h:?}");
        std::fs::write(
            unified.path().join("cgroup.controllers"),
            "cpu io memory pids\n",
        )
        .unwrap();
        let h = Hierarchy::from_tables(&table, "0::/\n").unwrap();
        assert_eq!(
            h,
            Hierarchy::V2 {
                root: unified.path().to_path_buf()
            }
        );
    }

    #[test]
    fn pure_v2_host_uses_v2() {
        let info = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let h = Hierarchy::from_tables(info, "0::/\n").unwrap();
        assert_eq!(
            h,
            Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
    }

    #[test]
    fn missing_controller_is_a_clear_error() {
        let info = "31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let err = Hierarchy::from_tables(info, "").unwrap_err().to_string();
        assert!(err.contains("controller memory"), "{err}");
    }

    #[test]
    fn cpu_quota_follows_cap() {
        let l = Limits {
            cpu_cap: 20,
            ..Default::default()
        };
        assert_eq!(l.cpu_quota_us(), Some(20_000));
        let l = Limits {
            cpu_cap: 250,
            ..Default::default()
        };
        assert_eq!(l.cpu_quota_us(), Some(250_000));
        assert_eq!(Limits::default().cpu_quota_us(), None);
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }
}
