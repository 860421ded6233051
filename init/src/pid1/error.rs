//! What can go wrong while bringing a node up, each error naming the file, device,
//! program, interface or URL it is about.

use std::path::PathBuf;
use std::process::ExitStatus;

/// A failed boot step.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A file or directory operation; `what` names the path (and the operation when
    /// the path alone would not say it).
    #[error("{what}: {source}")]
    Io {
        /// The path, or `verb path`.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A system call (mount, chroot, uname...); `what` says which, on what.
    #[error("{what}: {source}")]
    Sys {
        /// The call and its target.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// The kernel command line asks for something init cannot do.
    #[error("{0}")]
    Cmdline(#[from] super::cmdline::CmdlineError),
    /// Configuring an interface over netlink failed.
    #[error("{0}")]
    Net(#[from] host::net::NetError),
    /// dbus-daemon started but never made its socket.
    #[error("{program} did not create {socket} within 10s")]
    BusTimeout {
        /// The dbus-daemon binary.
        program: String,
        /// The socket path it should have created.
        socket: &'static str,
    },
    /// udhcpc gave up on an interface.
    #[error("udhcpc on {iface}: no lease ({status})")]
    NoLease {
        /// The interface.
        iface: String,
        /// udhcpc's exit status.
        status: ExitStatus,
    },
    /// udhcpc reported a lease without an address.
    #[error("DHCP lease on {0} has no address")]
    LeaseWithoutAddress(String),
    /// The boot manifests were refused (the last good copy stays).
    #[error("{0}")]
    BootManifests(#[from] super::boot_manifests::BootManifestError),
    /// The command line asks for networking and there is no interface.
    #[error("{0} but the node has no network interface")]
    NoInterface(&'static str),
    /// No device carries the pool's label.
    #[error("no filesystem labelled {0} (give skerry.pool=/dev/... or skerry.pool.format=ext4 for a blank disk)")]
    NoPoolLabel(String),
    /// `skerry.pool=/dev/...` names a device that does not exist.
    #[error("the pool device does not exist")]
    NoPoolDevice,
    /// mkfs ran and failed.
    #[error("{tool} {}: {status}", dev.display())]
    Mkfs {
        /// mkfs.ext4 or mke2fs.
        tool: &'static str,
        /// The device.
        dev: PathBuf,
        /// Its exit status.
        status: ExitStatus,
    },
    /// Neither mkfs.ext4 nor mke2fs is installed.
    #[error("no mkfs.ext4 or mke2fs found")]
    NoMkfs,
    /// A module the node wants is not in modules.dep.
    #[error("module {0} is not in modules.dep (built in, or missing)")]
    UnknownModule(String),
    /// modules.dep makes `0` depend on itself, through others.
    #[error("module {0} depends on itself in modules.dep (a cycle): not loaded")]
    ModuleCycle(String),
    /// finit_module refused a module.
    #[error("{module}: {source}")]
    Module {
        /// The module name.
        module: String,
        /// Why (ENODEV reads "no such hardware").
        source: ModuleLoadError,
    },
}

/// Why the kernel refused a module.
#[derive(Debug, thiserror::Error)]
pub enum ModuleLoadError {
    /// The module file cannot be opened.
    #[error("{}: {source}", path.display())]
    Open {
        /// The module file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// ENODEV: kvm_intel on an AMD machine and the like.
    #[error("no such hardware")]
    NoSuchHardware,
    /// A module it depends on was not loaded, so it was not tried.
    #[error("not tried: {0} was not loaded")]
    Dependency(String),
    /// Anything else.
    #[error("{0}")]
    Os(#[from] std::io::Error),
}

/// Maps an I/O error to [`BootError::Io`] about `what`.
pub fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> BootError {
    move |source| BootError::Io {
        what: what.to_string(),
        source,
    }
}

/// Maps an errno to [`BootError::Sys`] about `what`.
pub fn sys(what: impl std::fmt::Display) -> impl FnOnce(nix::Error) -> BootError {
    move |source| BootError::Sys {
        what: what.to_string(),
        source,
    }
}
