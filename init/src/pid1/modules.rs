//! Loading the kernel modules a node needs, with their dependencies from
//! `/lib/modules/<release>/modules.dep`, through finit_module(2).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::{io, BootError, ModuleLoadError};

/// What every node needs: disks and nics of a VM host, the pool filesystem, zone
/// networking and overlay roots, and KVM for HVM instances. The boot image carries
/// exactly the modules its node needs (build-image/modules.txt), so init loads every
/// module of the image's modules.dep; these are loaded even from a fuller tree.
pub const NODE_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "ext4",
    "overlay",
    "bridge",
    "veth",
    "tun",
    "kvm",
    "kvm_amd",
    "kvm_intel",
];

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

    /// Module files to load for `name`, dependencies first.
    pub fn load_order(&self, name: &str) -> Result<Vec<String>, BootError> {
        let name = module_name(name);
        let (path, deps) = self
            .by_name
            .get(&name)
            .ok_or_else(|| BootError::UnknownModule(name.clone()))?;
        let mut out = Vec::new();
        // modules.dep lists a module's dependencies so that the last must load first.
        for d in deps.iter().rev() {
            for p in self.load_order(&module_name(d))? {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out.push(path.clone());
        Ok(out)
    }

    /// Loads `names` and their dependencies; returns one message per module that
    /// could not be loaded (the others are loaded regardless).
    pub fn load_all(&self, names: &[String]) -> Vec<BootError> {
        let mut done = HashSet::new();
        let mut errs = Vec::new();
        for n in names {
            let order = match self.load_order(n) {
                Ok(o) => o,
                Err(e) => {
                    errs.push(e);
                    continue;
                }
            };
            for rel in order {
                if !done.insert(rel.clone()) {
                    continue;
                }
                if let Err(source) = finit(&self.base.join(&rel)) {
                    errs.push(BootError::Module {
                        module: module_name(&rel),
                        source,
                    });
                }
            }
        }
        errs
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
        assert_eq!(
            idx.load_order("virtio-net").unwrap(),
            vec![
                "kernel/net/core/failover.ko.xz",
                "kernel/drivers/net/net_failover.ko.xz",
                "kernel/drivers/net/virtio_net.ko.xz"
            ]
        );
        assert!(idx
            .load_order("nope")
            .unwrap_err()
            .to_string()
            .contains("nope"));
    }
}
