//! zlogin's side once the command runs: wait for it, relaying a pty between the user's
//! terminal and the zone when it has one, and turn its end into an exit status.

use super::ZloginError;
use crate::console::{set_window_size, Pty};
use crate::error::{Context, ZoneError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, BorrowedFd};

/// Waits for `child` (which has zlogin's own stdio) and returns its exit status. The
/// user's ^C and ^\ reach the command, which shares zlogin's process group; zlogin
/// itself ignores them and reports how the command ended.
pub(super) fn wait_plain(child: Pid) -> Result<i32, ZloginError> {
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: SIG_IGN installs no handler.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
    }
    wait(child)
}

/// Reaps `child`: its exit code, or 128 + the signal that killed it.
fn wait(child: Pid) -> Result<i32, ZloginError> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ZoneError::io(format!("waiting for {child}"), e.into()).into()),
        }
    }
}

/// Puts the user's terminal in raw mode (the zone's pty does the line discipline) and
/// restores it when dropped.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, saved);
        }
    }
}

/// Copies the user's terminal size (if stdin is one) to the zone's pty.
pub(super) fn copy_window_size(master: BorrowedFd<'_>) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which lives across the call.
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
        let _ = set_window_size(master, ws.ws_row, ws.ws_col);
    }
}

/// Writes all of `buf` to `fd`, waiting when it is full; false when it is gone.
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return false,
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(100u8));
            }
            Err(_) => return false,
        }
    }
    true
}

/// Relays between zlogin's stdio and the pty of `child` until the child has exited
/// and its output is drained; returns its exit status.
pub(super) fn run(child: Pid, pty: Pty) -> Result<i32, ZloginError> {
    let Pty { master, slave, .. } = pty;
    // The child has exec'ed: only the zone holds the slave now, so its last close
    // reads as EIO here.
    drop(slave);
    let pidfd = crate::sys::pidfd_open(child.as_raw())
        .map_err(|e| ZoneError::io(format!("pidfd_open({child})"), e))?;
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGWINCH);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigs), None)
        .ctx(|| "sigprocmask".into())?;
    let winch = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .ctx(|| "signalfd".into())?;
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .ctx(|| "pty O_NONBLOCK".into())?;
    let _raw = RawMode::enter();
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = true;
    let mut master_open = true;
    let mut exited = false;
    let mut buf = [0u8; 16384];
    while master_open && !exited {
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(winch.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(ZoneError::io("poll", e.into()).into()),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            master_open = pump(master.as_fd(), stdout.as_fd(), &mut buf);
        }
        exited = ready[1];
        if ready[2] {
            while let Ok(Some(_)) = winch.read_signal() {}
            copy_window_size(master.as_fd());
        }
        if stdin_open && ready.get(3).copied().unwrap_or(false) {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(n) if n > 0 => stdin_open = write_all(master.as_fd(), &buf[..n]),
                // End of a non-terminal input: the zone's line discipline sees ^D.
                _ => {
                    let _ = write_all(master.as_fd(), b"\x04");
                    stdin_open = false;
                }
            }
        }
    }
    // What the command wrote last, without waiting for background processes that
    // still hold the pty.
    while master_open && pump(master.as_fd(), stdout.as_fd(), &mut buf) {}
    wait(child)
}

/// Copies what the pty has to `out`; false once it has nothing more (EIO: every
/// holder of the slave closed it; EAGAIN: nothing right now).
fn pump(master: BorrowedFd<'_>, out: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
    match nix::unistd::read(master, buf) {
        Ok(n) if n > 0 => write_all(out, &buf[..n]),
        Err(nix::errno::Errno::EINTR) => true,
        _ => false,
    }
}
