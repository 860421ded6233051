//! The zone console: a pty whose slave is the zone init's stdio and controlling
//! terminal, and a size-bounded log of everything the zone writes to it.

use crate::error::{Context, Result};
use nix::pty::{openpty, OpenptyResult};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A pty pair for one zone boot.
#[derive(Debug)]
pub struct Pty {
    /// The master the monitor keeps; consoles attach through relays, never to it.
    pub master: OwnedFd,
    /// The slave, given to the zone init.
    pub slave: OwnedFd,
    /// The slave's path on the host, bound at the zone's /dev/console.
    pub slave_path: PathBuf,
}

impl Pty {
    /// Opens a pty whose slave belongs to zone root (host id `owner`), so that the zone
    /// can reopen its /dev/console.
    pub fn open(owner: u32) -> Result<Pty> {
        let OpenptyResult { master, slave } = openpty(None, None).ctx(|| "openpty".into())?;
        let slave_path = fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
            .ctx(|| "naming the pty slave".into())?;
        std::os::unix::fs::chown(&slave_path, Some(owner), Some(owner))
            .ctx(|| format!("chown {}", slave_path.display()))?;
        for fd in [&master, &slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .ctx(|| "pty cloexec".into())?;
        }
        Ok(Pty {
            master,
            slave,
            slave_path,
        })
    }
}

/// Default bound of a console log before it is rotated.
pub const LOG_LIMIT: u64 = 1 << 20;

/// An append-only log that rotates to `<path>.0` when it passes its limit, so a chatty
/// zone holds at most two limits' worth of disk.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    file: File,
    size: u64,
    limit: u64,
}

impl ConsoleLog {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, limit: u64) -> Result<ConsoleLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ctx(|| format!("opening {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(ConsoleLog {
            path: path.to_path_buf(),
            file,
            size,
            limit,
        })
    }

    /// Appends console bytes, rotating first if they would pass the limit.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.size + data.len() as u64 > self.limit && self.size > 0 {
            let old = rotated_path(&self.path);
            fs::rename(&self.path, &old).ctx(|| format!("rotating {}", self.path.display()))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ctx(|| format!("opening {}", self.path.display()))?;
            self.size = 0;
        }
        self.file
            .write_all(data)
            .ctx(|| format!("writing {}", self.path.display()))?;
        self.size += data.len() as u64;
        Ok(())
    }
}

/// What an attached client sent, decoded per the relay protocol of `monitor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleInput {
    /// Bytes for the zone's console.
    Data(Vec<u8>),
    /// The client's terminal size.
    WindowSize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
}

/// Decodes one client's side of a console relay: raw bytes, or frames once the client
/// opened with `monitor::CONSOLE_FRAMED`.
#[derive(Debug, Default)]
pub struct RelayDecoder {
    mode: Mode,
    buf: Vec<u8>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Mode {
    /// Nothing (or only a prefix of the header) seen yet.
    #[default]
    Undecided,
    Raw,
    Framed,
}

impl RelayDecoder {
    /// Feeds bytes read from the client; returns what they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<ConsoleInput> {
        use monitor::{CONSOLE_FRAMED, FRAME_DATA, FRAME_WINSIZE};
        if self.mode == Mode::Raw {
            return vec![ConsoleInput::Data(bytes.to_vec())];
        }
        self.buf.extend_from_slice(bytes);
        if self.mode == Mode::Undecided {
            let n = self.buf.len().min(CONSOLE_FRAMED.len());
            if self.buf[..n] != CONSOLE_FRAMED[..n] {
                self.mode = Mode::Raw;
                return vec![ConsoleInput::Data(std::mem::take(&mut self.buf))];
            }
            if n < CONSOLE_FRAMED.len() {
                return vec![];
            }
            self.buf.drain(..n);
            self.mode = Mode::Framed;
        }
        let mut out = vec![];
        while self.buf.len() >= 3 {
            let len = u16::from_be_bytes([self.buf[1], self.buf[2]]) as usize;
            if self.buf.len() < 3 + len {
                break;
            }
            let frame: Vec<u8> = self.buf.drain(..3 + len).collect();
            let payload = &frame[3..];
            match frame[0] {
                FRAME_DATA if !payload.is_empty() => out.push(ConsoleInput::Data(payload.to_vec())),
                FRAME_WINSIZE if payload.len() >= 4 => out.push(ConsoleInput::WindowSize {
                    rows: u16::from_be_bytes([payload[0], payload[1]]),
                    cols: u16::from_be_bytes([payload[2], payload[3]]),
                }),
                _ => {} // unknown or empty: skipped, as the protocol says
            }
        }
        out
    }
}

/// Sets the window size of the pty behind `master`; the kernel sends SIGWINCH to the
/// foreground process group of its terminal.
pub fn set_window_size(master: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ only reads the winsize behind the pointer, which lives on our
    // stack for the call; `master` is an open descriptor.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(crate::error::ZoneError::io(
            format!("setting the console size to {rows}x{cols}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `<log>.0`, where the previous part of a rotated log is kept.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".0");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn data(b: &[u8]) -> ConsoleInput {
        ConsoleInput::Data(b.to_vec())
    }

    #[test]
    fn raw_clients_pass_through_and_framed_ones_are_decoded_across_reads() {
        use monitor::{console_frame, winsize_frame, CONSOLE_FRAMED, FRAME_DATA};
        let mut raw = RelayDecoder::default();
        assert_eq!(raw.feed(b"ls\r"), vec![data(b"ls\r")]);
        assert_eq!(raw.feed(CONSOLE_FRAMED), vec![data(CONSOLE_FRAMED)]);
        // A raw client whose first byte is NUL (Ctrl-@) is held only until it differs.
        let mut nul = RelayDecoder::default();
        assert_eq!(nul.feed(b"\0"), vec![]);
        assert_eq!(nul.feed(b"x"), vec![data(b"\0x")]);

        let mut stream = CONSOLE_FRAMED.to_vec();
        stream.extend(winsize_frame(40, 132));
        stream.extend(console_frame(FRAME_DATA, b"stty size\r"));
        stream.extend(console_frame(b'?', b"future"));
        stream.extend(winsize_frame(50, 100));
        let mut framed = RelayDecoder::default();
        let mut got = vec![];
        for byte in &stream {
            got.extend(framed.feed(std::slice::from_ref(byte)));
        }
        assert_eq!(
            got,
            vec![
                ConsoleInput::WindowSize {
                    rows: 40,
                    cols: 132
                },
                data(b"stty size\r"),
                ConsoleInput::WindowSize {
                    rows: 50,
                    cols: 100
                },
            ]
        );
        let mut whole = RelayDecoder::default();
        assert_eq!(whole.feed(&stream), got);
    }

    #[test]
    fn window_size_reaches_the_pty() {
        let pty = Pty::open(nix::unistd::getuid().as_raw()).unwrap();
        set_window_size(pty.master.as_fd(), 33, 77).unwrap();
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into `ws`, which we own and which
        // outlives the call; the slave fd is open for as long as `pty` lives.
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (33, 77));
    }

    #[test]
    fn log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut log = ConsoleLog::open(&p, 100).unwrap();
        for i in 0..50u8 {
            log.write(&[b'a' + i % 26; 10]).unwrap();
        }
        let cur = fs::read(&p).unwrap();
        let old = fs::read(rotated_path(&p)).unwrap();
        assert_eq!((cur.len(), old.len()), (100, 100));
        // The newest bytes are in the current file, the ones before in `.0`.
        assert_eq!(&cur[90..], &[b'a' + 49 % 26; 10]);
        assert_eq!(&old[90..], &[b'a' + 39 % 26; 10]);
    }
}
