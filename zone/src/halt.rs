//! Asking a zone's init to shut down cleanly, in the way that init understands.
//!
//! A stop is a request followed, after the grace period, by SIGKILL of the whole zone.
//! The request SIGTERM suits a daemon or a script, but the inits of OS images each
//! read a different one, and two of them take SIGTERM as something else entirely:
//!
//! | init | clean shutdown request | what SIGTERM does |
//! |---|---|---|
//! | sysvinit | runlevel 0 on the `/run/initctl` FIFO (`telinit 0`) | nothing |
//! | systemd | the same FIFO (`systemd-initctl`), or SIGRTMIN+4 | re-executes itself |
//! | busybox init | SIGUSR2 (poweroff) | reboot |
//! | anything else | SIGTERM | |
//!
//! So a stop first writes runlevel 0 to the zone's `/run/initctl` when a reader is
//! listening there, and otherwise sends the signal [`signal_for`] picked from the
//! image: both inits end with reboot(2) POWER_OFF, which ends the zone's pid namespace.

use crate::error::{Context, Result};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, SFlag};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// How a stop was asked for, for the zone's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Runlevel 0 written to `/run/initctl`.
    Initctl,
    /// This signal sent to the zone init.
    Signal(i32),
}

impl Request {
    /// `"runlevel 0 on /run/initctl"`, `"SIGUSR2"`, `"SIGRTMIN+4"`.
    pub fn describe(&self) -> String {
        match self {
            Request::Initctl => "runlevel 0 on /run/initctl".into(),
            Request::Signal(s) => signal_name(*s),
        }
    }
}

fn signal_name(sig: i32) -> String {
    let rtmin = libc::SIGRTMIN();
    if sig >= rtmin && sig <= libc::SIGRTMAX() {
        return format!("SIGRTMIN+{}", sig - rtmin);
    }
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// The signal that asks the zone init `command` of the image rootfs `image` to power
/// off when it does not listen on `/run/initctl`: SIGUSR2 for busybox init,
/// SIGRTMIN+4 for systemd, SIGTERM for anything else. The command is resolved in the
/// image as the zone would (its PATH, symlinks followed inside the image).
pub fn signal_for(image: &Path, command: &[String]) -> i32 {
    let Some(argv0) = command.first() else {
        return libc::SIGTERM;
    };
    let called = Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = resolve_in(image, argv0)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    match (called.as_str(), target.as_str()) {
        // busybox picks the applet by argv[0]: only "init" is busybox's init.
        ("init", "busybox") => libc::SIGUSR2,
        (_, "systemd") => libc::SIGRTMIN() + 4,
        _ => libc::SIGTERM,
    }
}

/// The file `argv0` names inside `image`, every symlink resolved inside it (absolute
/// ones against the image's root, as the zone sees them); a bare name is searched on
/// the zone's PATH.
fn resolve_in(image: &Path, argv0: &str) -> Option<PathBuf> {
    let root = open_dir(image).ok()?;
    let root_real = fd_path(&root)?;
    crate::launch::command_candidates(argv0)
        .iter()
        .find_map(|candidate| {
            let fd = open_in_root(&root, candidate, OFlag::O_PATH).ok()?;
            let inside = fd_path(&fd)?.strip_prefix(&root_real).ok()?.to_path_buf();
            Some(Path::new("/").join(inside))
        })
}

/// An `O_PATH` handle on the directory `path`.
fn open_dir<P: ?Sized + nix::NixPath>(path: &P) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// The path the kernel gives for what `fd` refers to.
fn fd_path(fd: &OwnedFd) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// openat2 of `rel` below `root` with `root` as "/" for every symlink on the way and no
/// magic links: however the zone arranged its files, nothing outside it is reached.
fn open_in_root(root: &OwnedFd, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, rel, how)
}

/// sysvinit's `struct init_request` (initreq.h), 384 bytes, asking for runlevel 0.
fn runlevel_0_request() -> [u8; 384] {
    const INIT_MAGIC: i32 = 0x0309_1969;
    const INIT_CMD_RUNLVL: i32 = 1;
    let mut req = [0u8; 384];
    req[0..4].copy_from_slice(&INIT_MAGIC.to_ne_bytes());
    req[4..8].copy_from_slice(&INIT_CMD_RUNLVL.to_ne_bytes());
    req[8..12].copy_from_slice(&i32::from(b'0').to_ne_bytes());
    req
}

/// Writes runlevel 0 to `/run/initctl` as the process `pid` (the zone init) sees it.
/// `Ok(false)`: no FIFO there, or nobody reading it. The path is resolved inside the
/// zone's root and must be a FIFO: a zone cannot point host root's write elsewhere.
pub fn request_initctl(pid: i32) -> Result<bool> {
    let root_path = format!("/proc/{pid}/root");
    let root = open_dir(root_path.as_str()).ctx(|| format!("opening {root_path}"))?;
    let Ok(path_fd) = open_in_root(&root, "run/initctl", OFlag::O_PATH) else {
        return Ok(false);
    };
    let is_fifo = fstat(&path_fd)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO)
        .unwrap_or(false);
    if !is_fifo {
        return Ok(false);
    }
    // Reopened for writing through our own fd: no path is resolved again. With
    // O_NONBLOCK, a FIFO nobody reads fails with ENXIO instead of blocking.
    let Ok(fifo) = nix::fcntl::open(
        format!("/proc/self/fd/{}", path_fd.as_raw_fd()).as_str(),
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return Ok(false);
    };
    // At most PIPE_BUF bytes: written whole or not at all.
    Ok(matches!(
        nix::unistd::write(&fifo, &runlevel_0_request()),
        Ok(384)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn image() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for dir in ["usr/bin", "usr/sbin", "usr/lib/systemd", "bin", "sbin"] {
            std::fs::create_dir_all(d.path().join(dir)).unwrap();
        }
        std::fs::write(d.path().join("bin/busybox"), "").unwrap();
        std::fs::write(d.path().join("usr/lib/systemd/systemd"), "").unwrap();
        d
    }

    fn cmd(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn busybox_init_gets_sigusr2_but_a_busybox_shell_sigterm() {
        let img = image();
        symlink("/bin/busybox", img.path().join("sbin/init")).unwrap();
        symlink("busybox", img.path().join("bin/sh")).unwrap();
        assert_eq!(signal_for(img.path(), &cmd(&["/sbin/init"])), libc::SIGUSR2);
        assert_eq!(signal_for(img.path(), &cmd(&["init"])), libc::SIGUSR2);
        assert_eq!(
            signal_for(img.path(), &cmd(&["/bin/sh", "-c", "sleep 1"])),
            libc::SIGTERM
        );
    }

    #[test]
    fn systemd_is_found_through_relative_and_absolute_links() {
        let img = image();
        // Debian's merged /usr: /sbin/init -> ../lib/systemd/systemd in usr/sbin.
        std::fs::remove_dir(img.path().join("sbin")).unwrap();
        symlink("usr/sbin", img.path().join("sbin")).unwrap();
        symlink("../lib/systemd/systemd", img.path().join("usr/sbin/init")).unwrap();
        assert_eq!(
            signal_for(img.path(), &cmd(&["/sbin/init"])),
            libc::SIGRTMIN() + 4
        );
        let img = image();
        symlink("/usr/lib/systemd/systemd", img.path().join("sbin/init")).unwrap();
        assert_eq!(
            signal_for(img.path(), &cmd(&["/sbin/init"])),
            libc::SIGRTMIN() + 4
        );
    }

    #[test]
    fn anything_else_gets_sigterm() {
        let img = image();
        std::fs::write(img.path().join("sbin/init"), "").unwrap();
        assert_eq!(signal_for(img.path(), &cmd(&["/sbin/init"])), libc::SIGTERM);
        assert_eq!(signal_for(img.path(), &cmd(&["/missing"])), libc::SIGTERM);
        assert_eq!(signal_for(img.path(), &[]), libc::SIGTERM);
        // A link that climbs out of the image stays inside it (and finds nothing).
        symlink("../../../../bin/busybox", img.path().join("sbin/escape")).unwrap();
        assert_eq!(
            resolve_in(img.path(), "/sbin/escape"),
            Some(PathBuf::from("/bin/busybox"))
        );
    }

    #[test]
    fn runlevel_request_matches_initreq_h() {
        let r = runlevel_0_request();
        assert_eq!(r.len(), 384);
        assert_eq!(i32::from_ne_bytes(r[0..4].try_into().unwrap()), 0x03091969);
        assert_eq!(i32::from_ne_bytes(r[4..8].try_into().unwrap()), 1);
        assert_eq!(r[8], b'0');
        assert!(r[12..].iter().all(|b| *b == 0));
    }

    #[test]
    fn names_of_requests() {
        assert_eq!(Request::Initctl.describe(), "runlevel 0 on /run/initctl");
        assert_eq!(Request::Signal(libc::SIGUSR2).describe(), "SIGUSR2");
        assert_eq!(
            Request::Signal(libc::SIGRTMIN() + 4).describe(),
            "SIGRTMIN+4"
        );
    }
}
