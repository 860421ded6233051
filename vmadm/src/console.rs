//! `vmadm console`: attach the operator's terminal to an instance console.
//!
//! init hands over the console as a file descriptor (the zone's pty master or the
//! guest's serial). We put our terminal in raw mode, copy bytes both ways, and detach
//! when the operator types the escape byte (Ctrl-], like telnet and virsh), when our
//! input ends, when the console closes (the instance stopped), or on SIGTERM/SIGHUP/
//! SIGINT/SIGQUIT. The terminal is restored on every one of those paths, including
//! errors: the restore lives in a guard's `Drop`.
//!
//! Signals are blocked and read from a signalfd in the same poll loop, so a signal can
//! never interrupt us between "raw" and "restored", and SIGWINCH resizes the console.

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, BorrowedFd};

/// Ctrl-]: the byte that detaches.
pub const ESCAPE: u8 = 0x1d;

/// Why the attach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// The operator typed the escape byte.
    Escape,
    /// Our input reached end of file.
    InputClosed,
    /// The console hung up: the instance stopped or its monitor went away.
    ConsoleClosed,
    /// A terminating signal arrived.
    Signal(Signal),
}

/// Why the attach failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A system call on the terminal or the console failed.
    #[error("console: {what}: {errno}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error.
        errno: Errno,
    },
}

fn sys(what: &'static str) -> impl FnOnce(Errno) -> ConsoleError {
    move |errno| ConsoleError::Sys { what, errno }
}

/// Puts a terminal in raw mode and restores its previous mode when dropped.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    /// Raw mode on `fd` if it is a terminal; `None` (nothing to restore) if it is not.
    fn enter(fd: BorrowedFd<'a>) -> Result<Option<Self>, ConsoleError> {
        if !nix::unistd::isatty(fd).unwrap_or(false) {
            return Ok(None);
        }
        let saved = termios::tcgetattr(fd).map_err(sys("reading terminal mode"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).map_err(sys("setting raw mode"))?;
        Ok(Some(RawMode { fd, saved }))
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        // TCSAFLUSH would drop typed-ahead input the shell should get; TCSADRAIN lets our
        // last output reach the screen before the mode flips back.
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Blocks the signals we handle and restores the previous mask when dropped.
struct BlockedSignals {
    old: SigSet,
    fd: SignalFd,
}

impl BlockedSignals {
    fn block() -> Result<Self, ConsoleError> {
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGWINCH,
        ] {
            set.add(s);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
            .map_err(sys("blocking signals"))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(sys("creating a signalfd"));
        match fd {
            Ok(fd) => Ok(BlockedSignals { old, fd }),
            Err(e) => {
                let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                Err(e)
            }
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// Gives the console our terminal's size, when both are terminals; best effort (a
/// serial console has no size to set, and that is fine).
fn copy_window_size(from: BorrowedFd, to: BorrowedFd) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid, exclusively borrowed `ws`;
    // `from` is an open descriptor for the duration of the call.
    if unsafe { get_winsize(from.as_raw_fd(), &mut ws) }.is_err() || ws.ws_row == 0 {
        return;
    }
    // SAFETY: TIOCSWINSZ only reads the `winsize` behind the pointer, which lives on our
    // stack for the whole call; `to` is an open descriptor.
    let _ = unsafe { set_winsize(to.as_raw_fd(), &ws) };
}

/// Writes all of `buf` to `fd`, waiting for room when the descriptor is non-blocking
/// (the console's file description is shared with the monitor, which may have set
/// O_NONBLOCK on it; we must not change that under its feet).
fn write_all(fd: BorrowedFd, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                poll(&mut fds, PollTimeout::NONE)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies between `input`/`output` (normally stdin/stdout) and `console` until a
/// [`Detach`] condition. Raw mode is set on `input` when it is a terminal, and restored
/// before returning, whatever happens.
pub fn attach(
    console: BorrowedFd,
    input: BorrowedFd,
    output: BorrowedFd,
) -> Result<Detach, ConsoleError> {
    let signals = BlockedSignals::block()?;
    let _raw = RawMode::enter(input)?;
    copy_window_size(input, console);
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = [
            PollFd::new(input, PollFlags::POLLIN),
            PollFd::new(console, PollFlags::POLLIN),
            PollFd::new(signals.fd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(sys("waiting for input")(e)),
        }
        let ready = |i: usize| {
            fds[i].revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (input_ready, console_ready, signal_ready) = (ready(0), ready(1), ready(2));

        if signal_ready {
            while let Ok(Some(info)) = signals.fd.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGWINCH) => copy_window_size(input, console),
                    Ok(sig) => return Ok(Detach::Signal(sig)),
                    Err(_) => {}
                }
            }
        }
        // Console output first: what the instance printed before we detach is shown.
        if console_ready {
            match nix::unistd::read(console, &mut buf) {
                // EIO: the pty's other side is closed (the instance is gone).
                Ok(0) | Err(Errno::EIO) => return Ok(Detach::ConsoleClosed),
                Ok(n) => write_all(output, &buf[..n]).map_err(sys("writing output"))?,
                // Another reader of the shared console won the race: nothing to do.
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => return Err(sys("reading the console")(e)),
            }
        }
        if input_ready {
            match nix::unistd::read(input, &mut buf) {
                Ok(0) | Err(Errno::EIO) => return Ok(Detach::InputClosed),
                Ok(n) => {
                    let typed = &buf[..n];
                    let (send, escaped) = match typed.iter().position(|&b| b == ESCAPE) {
                        Some(at) => (&typed[..at], true),
                        None => (typed, false),
                    };
                    write_all(console, send).map_err(sys("writing to the console"))?;
                    if escaped {
                        return Ok(Detach::Escape);
                    }
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => return Err(sys("reading input")(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::pty::openpty;
    use std::os::fd::OwnedFd;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe().unwrap()
    }

    fn read_some(fd: &OwnedFd) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let n = nix::unistd::read(fd, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn copies_both_ways_and_detaches_on_ctrl_bracket() {
        // The "console" is a pty: we hold the master like init hands it over, and play
        // the instance on the slave side.
        let console = openpty(None, None).unwrap();
        let mut slave_mode = termios::tcgetattr(&console.slave).unwrap();
        termios::cfmakeraw(&mut slave_mode);
        termios::tcsetattr(&console.slave, SetArg::TCSANOW, &slave_mode).unwrap();
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        write_all(console.slave.as_fd(), b"hello from zone").unwrap();
        write_all(in_w.as_fd(), b"ls\r\x1dnot sent").unwrap();
        let how = attach(console.master.as_fd(), in_r.as_fd(), out_w.as_fd()).unwrap();
        assert_eq!(how, Detach::Escape);
        assert_eq!(read_some(&out_r), b"hello from zone");
        assert_eq!(read_some(&console.slave), b"ls\r");
    }

    #[test]
    fn a_closed_console_ends_the_attach() {
        let console = openpty(None, None).unwrap();
        drop(console.slave);
        let (in_r, _in_w) = pipe();
        let (_out_r, out_w) = pipe();
        let how = attach(console.master.as_fd(), in_r.as_fd(), out_w.as_fd()).unwrap();
        assert_eq!(how, Detach::ConsoleClosed);
    }

    #[test]
    fn end_of_input_detaches() {
        let console = openpty(None, None).unwrap();
        let (in_r, in_w) = pipe();
        drop(in_w);
        let (_out_r, out_w) = pipe();
        let how = attach(console.master.as_fd(), in_r.as_fd(), out_w.as_fd()).unwrap();
        assert_eq!(how, Detach::InputClosed);
    }

    #[test]
    fn the_console_takes_the_operators_window_size() {
        let size = nix::pty::Winsize {
            ws_row: 40,
            ws_col: 132,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let operator = openpty(Some(&size), None).unwrap();
        let console = openpty(None, None).unwrap();
        let (_out_r, out_w) = pipe();
        write_all(operator.master.as_fd(), &[ESCAPE]).unwrap();
        attach(
            console.master.as_fd(),
            operator.slave.as_fd(),
            out_w.as_fd(),
        )
        .unwrap();
        let mut seen = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCGWINSZ fills the `winsize` we own; the slave fd is open.
        unsafe { get_winsize(console.slave.as_raw_fd(), &mut seen) }.unwrap();
        assert_eq!((seen.ws_row, seen.ws_col), (40, 132));
    }

    #[test]
    fn raw_mode_is_restored_on_a_terminal_input() {
        let console = openpty(None, None).unwrap();
        let operator = openpty(None, None).unwrap();
        let before = termios::tcgetattr(&operator.slave).unwrap();
        assert!(before
            .local_flags
            .contains(termios::LocalFlags::ICANON | termios::LocalFlags::ECHO));
        let (_out_r, out_w) = pipe();
        // The operator types Ctrl-] on their (canonical-mode) terminal: in raw mode it
        // arrives at once, without a newline.
        write_all(operator.master.as_fd(), &[ESCAPE]).unwrap();
        let how = attach(
            console.master.as_fd(),
            operator.slave.as_fd(),
            out_w.as_fd(),
        )
        .unwrap();
        assert_eq!(how, Detach::Escape);
        let after = termios::tcgetattr(&operator.slave).unwrap();
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
        assert_eq!(after.output_flags, before.output_flags);
    }
}
