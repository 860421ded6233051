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
//! never interrupt us between "raw" and "restored", and SIGWINCH resizes the console:
//! with TIOCSWINSZ on a pty, with a size frame on a zone's console relay (the framed
//! protocol of `monitor`, which our typed bytes then follow too).

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

/// Our terminal's size, if `fd` is a terminal that has one.
fn window_size(fd: BorrowedFd) -> Option<libc::winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid, exclusively borrowed `ws`;
    // `fd` is an open descriptor for the duration of the call.
    if unsafe { get_winsize(fd.as_raw_fd(), &mut ws) }.is_err() || ws.ws_row == 0 {
        return None;
    }
    Some(ws)
}

/// What init handed over, and so how input and window sizes reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Console {
    /// A terminal (a VMM's serial pty master): bytes as they are, TIOCSWINSZ for sizes.
    Terminal,
    /// A zone monitor's relay socket: frames per `monitor`, sizes included.
    Relay,
    /// Anything else: bytes as they are, no size.
    Plain,
}

impl Console {
    fn of(fd: BorrowedFd) -> Console {
        if nix::unistd::isatty(fd).unwrap_or(false) {
            return Console::Terminal;
        }
        match nix::sys::stat::fstat(fd) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => Console::Relay,
            _ => Console::Plain,
        }
    }

    /// Opens the attach: a relay switches our direction to frames.
    fn start(self, console: BorrowedFd) -> Result<(), Errno> {
        if self == Console::Relay {
            write_all(console, monitor::CONSOLE_FRAMED)?;
        }
        Ok(())
    }

    /// Gives the console our terminal's size; best effort where it has no size (a
    /// serial line, a pipe) or our input is no terminal.
    fn copy_window_size(self, from: BorrowedFd, to: BorrowedFd) -> Result<(), Errno> {
        let Some(ws) = window_size(from) else {
            return Ok(());
        };
        match self {
            Console::Terminal => {
                use std::os::fd::AsRawFd;
                // SAFETY: TIOCSWINSZ only reads the `winsize` behind the pointer, which
                // lives on our stack for the whole call; `to` is an open descriptor.
                let _ = unsafe { set_winsize(to.as_raw_fd(), &ws) };
                Ok(())
            }
            Console::Relay => write_all(to, &monitor::winsize_frame(ws.ws_row, ws.ws_col)),
            Console::Plain => Ok(()),
        }
    }

    /// Sends typed bytes.
    fn send(self, console: BorrowedFd, typed: &[u8]) -> Result<(), Errno> {
        if typed.is_empty() {
            return Ok(());
        }
        match self {
            Console::Relay => {
                write_all(console, &monitor::console_frame(monitor::FRAME_DATA, typed))
            }
            _ => write_all(console, typed),
        }
    }
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
    let kind = Console::of(console);
    kind.start(console).map_err(sys("writing to the console"))?;
    kind.copy_window_size(input, console)
        .map_err(sys("writing to the console"))?;
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
                    Ok(Signal::SIGWINCH) => kind
                        .copy_window_size(input, console)
                        .map_err(sys("writing to the console"))?,
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
                    kind.send(console, send)
                        .map_err(sys("writing to the console"))?;
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

    /// The operator's terminal: a pty of the given size.
    fn operator_terminal(rows: u16, cols: u16) -> nix::pty::OpenptyResult {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        openpty(Some(&size), None).unwrap()
    }

    #[test]
    fn the_console_takes_the_operators_window_size() {
        let operator = operator_terminal(40, 132);
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

    /// A zone's console is a relay socket: the attach opens the framed protocol, sends
    /// the size, then typed bytes as frames, and a new size on SIGWINCH.
    #[test]
    fn a_relay_console_gets_frames_with_the_size_at_attach_and_on_sigwinch() {
        use monitor::{console_frame, winsize_frame, CONSOLE_FRAMED, FRAME_DATA};
        use std::os::fd::AsRawFd;
        let operator = operator_terminal(40, 132);
        let (ours, zone_side) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_out_r, out_w) = pipe();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let master = operator.master.try_clone().unwrap();
        let typist = std::thread::spawn(move || {
            let pause = || std::thread::sleep(std::time::Duration::from_millis(150));
            pause();
            write_all(master.as_fd(), b"ls\r").unwrap();
            pause();
            let bigger = libc::winsize {
                ws_row: 50,
                ws_col: 100,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads the winsize on our stack; the master is open.
            unsafe { set_winsize(master.as_raw_fd(), &bigger) }.unwrap();
            // The operator's terminal would signal its foreground job; we are not it.
            // SAFETY: tgkill to a thread of our own process with a valid signal.
            let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGWINCH) };
            assert_eq!(r, 0);
            pause();
            write_all(master.as_fd(), &[ESCAPE]).unwrap();
        });
        let how = attach(ours.as_fd(), operator.slave.as_fd(), out_w.as_fd()).unwrap();
        typist.join().unwrap();
        assert_eq!(how, Detach::Escape);
        drop(ours);
        let mut sent = Vec::new();
        std::io::Read::read_to_end(&mut &zone_side, &mut sent).unwrap();
        let mut want = CONSOLE_FRAMED.to_vec();
        want.extend(winsize_frame(40, 132));
        want.extend(console_frame(FRAME_DATA, b"ls\r"));
        want.extend(winsize_frame(50, 100));
        assert_eq!(sent, want);
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
