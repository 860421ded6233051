//! Loading the kernel modules a node needs, with their dependencies from
//! `/lib/modules/<release>/modules.dep`, through finit_module(2): planned
//! ([`plan`], pure) and loaded from several threads at once ([`load`]).

pub mod load;
pub mod plan;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{io, BootError, ModuleLoadError};
use load::LoadOutcome;
use plan::LoadPlan;

/// What every node needs: disks and nics of a VM host, zone networking, tenant
/// isolation, overlay roots, and KVM for HVM instances (build-image/modules.txt says
/// why each). The boot image carries exactly the modules its node needs, so init
/// loads every module of the image's modules.dep; these are loaded from a fuller tree.
pub const NODE_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "sd_mod",
    "overlay",
    "quota_v2",
    "bridge",
    "veth",
    "tun",
    "nft_meta_bridge",
    "nft_ct",
    "nf_conntrack_bridge",
    "kvm",
    "kvm_amd",
    "kvm_intel",
];

/// What the boot itself waits for (with their dependencies): the disks the pool may
/// be on and the nic of the node's address. The other modules (bridges, netfilter,
/// overlay, KVM) are first needed by an instance, so they load while the network and
/// the pool come up, and the daemon starts once they are in.
pub const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "virtio_net",
    // An ext4 pool with the quota feature mounts read-write only with it.
    "quota_v2",
];

/// How many modules load at once: the kernel's work per module (relocation, the
/// module's init) is CPU-bound, so one loader per CPU, and at least two so a module
/// whose init sleeps (probing a device) does not hold up the others.
pub fn loaders() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(2, 8)
}

/// `finit_module` flag: the kernel decompresses the file itself.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// The dependency map of one kernel release.
pub struct ModuleIndex {
    base: PathBuf,
    /// Module name (underscores) -> (path relative to base, dependencies' paths).
    by_name: HashMap<String, (String, Vec<String>)>,
}

/// `virtio-net`, `virtio_net.ko.xz`, `kernel/.../virtio_net.ko` -> `virtio_net`.
pub fn module_name(s: &str) -> String {
    let file = s.rsplit('/').next().unwrap_or(s);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// What loading a set of modules came to.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Modules loaded (or already there), with how long each took.
    pub loaded: Vec<(String, Duration)>,
    /// One error per module that could not be planned or loaded.
    pub errors: Vec<BootError>,
}

impl LoadReport {
    /// The `n` slowest loads, slowest first: what an operator looks at first.
    pub fn slowest(&self, n: usize) -> Vec<(String, Duration)> {
        let mut v = self.loaded.clone();
        v.sort_by_key(|l| std::cmp::Reverse(l.1));
        v.truncate(n);
        v
    }
}

impl ModuleIndex {
    /// Reads `<base>/modules.dep`.
    pub fn open(base: &Path) -> Result<ModuleIndex, BootError> {
        let dep = base.join("modules.dep");
        let text = std::fs::read_to_string(&dep).map_err(io(dep.display()))?;
        Ok(ModuleIndex::parse(base, &text))
    }

    /// Parses modules.dep text.
    pub fn parse(base: &Path, text: &str) -> ModuleIndex {
        let mut by_name = HashMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(str::to_string).collect();
            by_name.insert(module_name(path), (path.to_string(), deps));
        }
        ModuleIndex {
            base: base.to_path_buf(),
            by_name,
        }
    }

    /// Every module the index knows, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_name.keys().cloned().collect();
        v.sort();
        v
    }

    /// Loads `names` and their dependencies, `threads` at a time, each after the
    /// modules it depends on; a module that fails costs only its dependents.
    pub fn load_all(&self, names: &[String], threads: usize) -> LoadReport {
        let (plan, errors) = self.plan(names);
        let mut report = self.load(&plan, threads);
        report.errors.splice(0..0, errors);
        report
    }

    /// Loads a plan of this index, `threads` at a time.
    pub fn load(&self, plan: &LoadPlan, threads: usize) -> LoadReport {
        let outcomes = load::load_plan(plan, threads, |l| finit(&self.base.join(&l.rel)));
        let mut report = LoadReport::default();
        for (l, outcome) in plan.loads.iter().zip(outcomes) {
            let source = match outcome {
                LoadOutcome::Loaded(d) => {
                    report.loaded.push((l.name.clone(), d));
                    continue;
                }
                LoadOutcome::Failed(e) => e,
                LoadOutcome::DependencyFailed(dep) => ModuleLoadError::Dependency(dep),
            };
            report.errors.push(BootError::Module {
                module: l.name.clone(),
                source,
            });
        }
        report
    }
}

fn finit(path: &Path) -> Result<(), ModuleLoadError> {
    let f = File::open(path).map_err(|source| ModuleLoadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let params = CString::default();
    let name = path.to_string_lossy();
    let flags = if name.ends_with(".ko") {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    };
    // SAFETY: finit_module reads the module from the fd and the NUL-terminated
    // parameter string we own for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Ok(()),
        // kvm_intel on an AMD machine and the like: the hardware is not there.
        Some(libc::ENODEV) => Err(ModuleLoadError::NoSuchHardware),
        _ => Err(ModuleLoadError::Os(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_load_first_and_once() {
        let idx = ModuleIndex::parse(
            Path::new("/lib/modules/x"),
            "kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz\n\
             kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz\n\
             kernel/net/core/failover.ko.xz:\n",
        );
        let (plan, errs) = idx.plan(&["virtio-net".to_string()]);
        assert!(errs.is_empty());
        let rels: Vec<&str> = plan.loads.iter().map(|l| l.rel.as_str()).collect();
        assert_eq!(
            rels,
            vec![
                "kernel/net/core/failover.ko.xz",
                "kernel/drivers/net/net_failover.ko.xz",
                "kernel/drivers/net/virtio_net.ko.xz"
            ]
        );
        let (_, errs) = idx.plan(&["nope".to_string()]);
        assert!(errs[0].to_string().contains("nope"));
    }

    /// A real load through finit_module: a module file that is not a module is
    /// refused by the kernel with its path named, and what depends on it is not tried.
    #[test]
    fn the_kernel_refuses_a_file_that_is_not_a_module() {
        assert!(nix::unistd::getuid().is_root(), "module tests need root");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bogus.ko"), b"not an ELF file").unwrap();
        let idx = ModuleIndex::parse(dir.path(), "bogus.ko:\nuser.ko: bogus.ko\n");
        let report = idx.load_all(&["user".to_string()], 2);
        assert!(report.loaded.is_empty(), "{:?}", report.loaded);
        let errs: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("bogus: "), "{errs:?}");
        assert_eq!(errs[1], "user: not tried: bogus was not loaded");
    }
}
