//! Noticing when a monitor exits, whether init spawned it (a child: we collect its
//! exit status) or re-adopted it after a restart (not a child: the monitor's own
//! monitor.json says why it ended).

use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};
use tokio::io::unix::AsyncFd;

/// How a monitor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(Signal),
    /// Not our child (re-adopted): the status is unknown to us.
    Unknown,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "monitor exited with code {c}"),
            Exit::Signal(s) => write!(f, "monitor killed by {s}"),
            Exit::Unknown => write!(f, "monitor exited"),
        }
    }
}

/// Exit statuses collected by the PID 1 orphan reaper for pids it reaped first.
fn reaped() -> &'static Mutex<HashMap<u32, Exit>> {
    static REAPED: OnceLock<Mutex<HashMap<u32, Exit>>> = OnceLock::new();
    REAPED.get_or_init(Default::default)
}

/// Records the status of a child the global reaper collected, so the watcher of that
/// pid can still learn how it ended.
pub fn note_reaped(pid: u32, status: WaitStatus) {
    if let Some(exit) = exit_of(status) {
        if let Ok(mut m) = reaped().lock() {
            m.insert(pid, exit);
        }
    }
}

fn exit_of(status: WaitStatus) -> Option<Exit> {
    match status {
        WaitStatus::Exited(_, code) => Some(Exit::Code(code)),
        WaitStatus::Signaled(_, sig, _) => Some(Exit::Signal(sig)),
        _ => None,
    }
}

/// Whether `pid` names a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// A pidfd for `pid` (readable once it exits).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory
    // is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until `pid` exits and says how. Returns at once with `Unknown` when the
/// process is already gone.
pub async fn wait_exit(pid: u32) -> Exit {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(_) => return take_reaped(pid).unwrap_or(Exit::Unknown),
    };
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open and the same
    // until `into_inner` hands it back.
    let afd = match unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
        Ok(a) => a,
        Err(_) => return poll_exit(pid).await,
    };
    // A pidfd turns readable when the process exits.
    if let Ok(mut guard) = afd.readable().await {
        guard.retain_ready();
    }
    let fd = afd.into_inner();
    match waitid(Id::PIDFd(fd.as_fd()), WaitPidFlag::WEXITED) {
        Ok(status) => exit_of(status).unwrap_or(Exit::Unknown),
        // Not our child, or the PID 1 reaper got there first.
        Err(_) => take_reaped(pid).unwrap_or(Exit::Unknown),
    }
}

async fn poll_exit(pid: u32) -> Exit {
    while alive(pid) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    take_reaped(pid).unwrap_or(Exit::Unknown)
}

/// The status the PID 1 reaper noted for `pid`, taken.
pub(crate) fn take_reaped(pid: u32) -> Option<Exit> {
    reaped().lock().ok()?.remove(&pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    // wait_exit reaps the children itself (waitid on the pidfd), as the supervisor does.
    #[allow(clippy::zombie_processes)]
    #[tokio::test]
    async fn child_exit_code_and_signal_are_reported() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        assert_eq!(wait_exit(child.id()).await, Exit::Code(3));
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(alive(pid));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        assert_eq!(wait_exit(pid).await, Exit::Signal(Signal::SIGKILL));
        assert!(!alive(pid));
    }
}
