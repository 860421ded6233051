//! `zlogin NAME [CMD ARGS...]`: run a command (or a login shell) inside a running zone,
//! as SmartOS's zlogin does from the global zone.
//!
//! zlogin finds the zone by name in the pool (`<pool>/<uuid>/config.json`, written by
//! init for every instance it runs, the way SmartOS's zlogin reads the zone index) and
//! asks its monitor (the socket's `Status`) whether it runs and which pid its init has.
//! It needs neither init nor the system bus: monitors outlive an init restart, and a
//! zone stays reachable while init is down.
//!
//! The entering happens here, in the zlogin process, not in the monitor: the command
//! is then zlogin's child, so its exit status, its stdio and the user's signals need no
//! relaying through the monitor's single-threaded poll loop, and the monitor gains no
//! request that hands out a process in the zone. The child takes exactly what the
//! zone's own processes have (see [`enter`]):
//!
//! ```text
//! zlogin (host root, dumpable 0)                child
//!   pidfd of the zone init, checked to be it
//!   setns(pidfd, PID)  (children only) --fork--> joins the zone init's cgroups
//!   reads the error pipe (EOF = exec'ed)         setns(pidfd, USER MNT NET UTS IPC CGROUP)
//!   relays the pty, waits, exits with            chroot to the init's root, zone root ids,
//!   the command's status                         caps, no_new_privs, seccomp, exec
//! ```
//!
//! The zlogin binary is never the process image of anything the zone can inspect: the
//! process is non-dumpable before it enters anything (the zone's root cannot open its
//! /proc/PID/exe or ptrace it: CVE-2019-5736), and the child execs the zone's command
//! right after entering.

mod enter;
mod relay;

use crate::error::ZoneError;
use monitor::{Client, ClientError, InstanceConfig, State};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where a node keeps its pool (`--pool` elsewhere).
pub const DEFAULT_POOL: &str = "/zones";

/// Why zlogin could not enter a zone. The messages follow SmartOS's zlogin.
#[derive(Debug, thiserror::Error)]
pub enum ZloginError {
    /// No instance by that name or UUID in the pool.
    #[error("zone '{name}' unknown")]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// The instance is an HVM guest: it has no namespaces to enter.
    #[error("'{name}' is an HVM instance, not a zone: use vmadm console {name}")]
    Hvm {
        /// The instance.
        name: String,
    },
    /// The zone exists but does not run.
    #[error("login allowed only to running zones ({name} is '{state}').")]
    NotRunning {
        /// The zone.
        name: String,
        /// Its state (`stopped` when no monitor answers).
        state: String,
    },
    /// The zone's monitor did not answer usably.
    #[error("zone '{name}': {source}")]
    Monitor {
        /// The zone.
        name: String,
        /// What went wrong on its socket.
        source: ClientError,
    },
    /// The pid the monitor reported is not (or no longer) the zone's init.
    #[error("zone '{name}': its init (pid {pid}) went away while entering; try again")]
    Vanished {
        /// The zone.
        name: String,
        /// The pid reported by the monitor.
        pid: i32,
    },
    /// Setting up the command in the zone failed (the zone's side of the error).
    #[error("{0}")]
    Enter(String),
    /// The command does not exist in the zone.
    #[error("{0}: not found in the zone")]
    CommandNotFound(String),
    /// A host-side system call failed.
    #[error(transparent)]
    Zone(#[from] ZoneError),
}

impl ZloginError {
    /// The exit status zlogin ends with: 127 for a command not found and 126 for one
    /// that could not be started (as a shell does), 1 for zlogin's own errors (as
    /// SmartOS's zlogin does).
    pub fn exit_code(&self) -> i32 {
        match self {
            ZloginError::CommandNotFound(_) => 127,
            ZloginError::Enter(_) => 126,
            _ => 1,
        }
    }
}

/// Whether the command gets a pseudo-terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtyMode {
    /// When zlogin's stdin is a terminal (the default).
    Auto,
    /// Always (`-t`), e.g. for a program that insists on a terminal.
    Force,
    /// Never (`-T`): the command gets zlogin's stdio as it is.
    Refuse,
}

/// What `zlogin` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pool holding the zones (`/zones` on a node).
    pub pool: PathBuf,
    /// Zone name or UUID.
    pub zone: String,
    /// The command and its arguments; empty = root's login shell.
    pub command: Vec<String>,
    /// Pseudo-terminal policy.
    pub pty: PtyMode,
}

/// A running zone as zlogin enters it.
#[derive(Debug)]
pub struct Target {
    /// The zone's name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// Its init's pid (host view).
    pub pid: i32,
    /// A pidfd of its init, checked to be the zone's init.
    pub pidfd: OwnedFd,
    /// First host id of the zone's range: zone root.
    pub id_range_start: u32,
}

/// Finds the config of instance `name` (name or UUID) in `pool`.
pub fn find_config(pool: &Path, name: &str) -> Result<InstanceConfig, ZloginError> {
    let unknown = || ZloginError::Unknown { name: name.into() };
    // A UUID names its directory; anything with a slash names nothing in the pool.
    if name.contains('/') || name.starts_with('.') {
        return Err(unknown());
    }
    if let Ok(c) = monitor::read_config(&monitor::config_path(pool, name)) {
        return Ok(c);
    }
    let entries = std::fs::read_dir(pool).map_err(|_| unknown())?;
    entries
        .flatten()
        .filter_map(|e| monitor::read_config(&e.path().join("config.json")).ok())
        .find(|c| c.spec.name == name)
        .ok_or_else(unknown)
}

/// Finds running zone `name` in `pool` and opens its init; errors say why not.
pub fn locate(pool: &Path, name: &str) -> Result<Target, ZloginError> {
    let config = find_config(pool, name)?;
    let zone = config.spec.name.clone();
    if matches!(config.spec.kind, spec::Kind::Hvm(_)) {
        return Err(ZloginError::Hvm { name: zone });
    }
    let status = match Client::for_instance(&config.run_dir, &config.uuid).status() {
        Ok(s) => s,
        // No monitor: the zone does not run (init removes the socket with it).
        Err(ClientError::Connect { .. }) => {
            return Err(ZloginError::NotRunning {
                name: zone,
                state: State::Stopped.to_string(),
            })
        }
        Err(source) => return Err(ZloginError::Monitor { name: zone, source }),
    };
    let pid = match (status.state, status.instance_pid) {
        (State::Running, Some(pid)) => pid as i32,
        (state, _) => {
            return Err(ZloginError::NotRunning {
                name: zone,
                state: state.to_string(),
            })
        }
    };
    let vanished = || ZloginError::Vanished {
        name: zone.clone(),
        pid,
    };
    let pidfd = crate::sys::pidfd_open(pid).map_err(|_| vanished())?;
    // The pid may have been recycled between the monitor's answer and pidfd_open: the
    // process behind the pidfd must be pid 1 of its namespace, mapped to this zone's
    // range. Once the pidfd is open that process cannot change under us.
    if !is_zone_init(pid, config.id_range_start) {
        return Err(vanished());
    }
    Ok(Target {
        name: zone,
        uuid: config.uuid,
        pid,
        pidfd,
        id_range_start: config.id_range_start,
    })
}

/// Whether `pid` is pid 1 of its pid namespace and its user namespace maps zone root
/// to `id_start` (the range of one zone).
fn is_zone_init(pid: i32, id_start: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let nspid_is_1 = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        == Some("1");
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
    let line: Vec<&str> = map.split_whitespace().collect();
    nspid_is_1
        && line
            == [
                "0",
                &id_start.to_string(),
                &crate::idmap::RANGE_SIZE.to_string(),
            ]
}

/// Whether the process behind `pidfd` is still alive (signal 0 through the pidfd).
fn alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal with a pidfd we own, signal 0 (a liveness check) and no
    // siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

/// Starts the image's DHCP client for `nic` in the running zone `target`, in the
/// background, as a nic added to the running zone needs (a zone's own nics get theirs
/// from its start): confined as zlogin's commands are, a child of the zone's init, its
/// stdio the zone's console. Returns once the client runs, or why it could not start.
pub(crate) fn start_dhcp_client(target: &Target, nic: &str) -> Result<(), ZloginError> {
    let plan = enter::Plan::with(target, enter::Run::DhcpClient(nic.into()), None)?;
    let child = enter::spawn(target, &plan)?;
    // The child exits as soon as it has forked the client, which the zone's init
    // inherits.
    let _ = nix::sys::wait::waitpid(child, None);
    Ok(())
}

/// `zlogin`: enters the zone, runs the command, returns its exit status (128 + the
/// signal number when a signal ended it).
pub fn run(opts: &Options) -> Result<i32, ZloginError> {
    // Before anything of the zone is touched: no core dumps, no /proc/PID/exe or
    // ptrace for anybody but host root (inherited by the child until its exec).
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| ZoneError::io("prctl(PR_SET_DUMPABLE, 0)", std::io::Error::from(e)))?;
    let target = locate(&opts.pool, &opts.zone)?;
    let use_pty = match opts.pty {
        PtyMode::Force => true,
        PtyMode::Refuse => false,
        PtyMode::Auto => nix::unistd::isatty(std::io::stdin()).unwrap_or(false),
    };
    let pty = if use_pty {
        let pty = crate::console::Pty::open(target.id_range_start)?;
        // Before the command starts: it may ask for the size at once.
        relay::copy_window_size(std::os::fd::AsFd::as_fd(&pty.master));
        Some(pty)
    } else {
        None
    };
    let plan = enter::Plan::new(&target, &opts.command, pty.as_ref())?;
    if !alive(&target.pidfd) {
        return Err(ZloginError::Vanished {
            name: target.name,
            pid: target.pid,
        });
    }
    let child = enter::spawn(&target, &plan)?;
    drop(plan);
    match pty {
        Some(pty) => relay::run(child, pty),
        None => relay::wait_plain(child),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_and_smartos() {
        assert_eq!(ZloginError::CommandNotFound("x".into()).exit_code(), 127);
        assert_eq!(ZloginError::Enter("x".into()).exit_code(), 126);
        let e = ZloginError::NotRunning {
            name: "web01".into(),
            state: "stopped".into(),
        };
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "login allowed only to running zones (web01 is 'stopped')."
        );
    }

    #[test]
    fn an_unknown_name_in_an_empty_pool_is_unknown() {
        let pool = tempfile::tempdir().unwrap();
        let e = find_config(pool.path(), "nope").unwrap_err();
        assert_eq!(e.to_string(), "zone 'nope' unknown");
    }

    #[test]
    fn our_own_process_is_no_zone_init() {
        assert!(!is_zone_init(std::process::id() as i32, 100_000));
    }
}
