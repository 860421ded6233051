//! How a guest reaches its metadata server: the zone's unix socket, or a serial port,
//! chosen and opened the way mdata-client does it on Linux.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices};

/// Where SmartOS lx zones (and skerry zones) find the metadata socket.
pub const SOCKET_PATH: &str = "/native/.zonecontrol/metadata.sock";
/// The serial port HVM guests (and skerry zones) reach the metadata server on (COM2).
pub const SERIAL_DEVICE: &str = "/dev/ttyS1";
/// Overrides the socket path (tests, unusual images). A skerry extension.
pub const SOCKET_ENV: &str = "MDATA_SOCKET";
/// Overrides the serial device (tests, unusual images). A skerry extension.
pub const SERIAL_ENV: &str = "MDATA_SERIAL_DEVICE";

/// Why the metadata transport failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The device or socket could not be opened.
    #[error("could not open {path}: {source}")]
    Open {
        /// The device or socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The serial device could not be locked or set to raw mode.
    #[error("could not set up serial device {path}: {source}")]
    Setup {
        /// The device.
        path: PathBuf,
        /// The cause.
        source: nix::Error,
    },
    /// Reading or writing failed.
    #[error("metadata transport: {0}")]
    Io(#[from] io::Error),
    /// The server said nothing within the time allowed.
    #[error("receive timeout")]
    Timeout,
    /// The server hung up.
    #[error("the metadata server closed the connection")]
    Closed,
}

impl TransportError {
    /// Whether retrying cannot help (mdata-client's `permfail`): the device cannot be
    /// opened for a reason other than being busy, or cannot be configured.
    pub fn is_permanent(&self) -> bool {
        match self {
            TransportError::Open { source, .. } => {
                !matches!(
                    source.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
                ) && source.kind() != io::ErrorKind::ConnectionRefused
            }
            TransportError::Setup { .. } => true,
            _ => false,
        }
    }
}

/// A metadata endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix stream socket.
    Socket(PathBuf),
    /// A serial device, used in raw mode under an exclusive lock.
    Serial(PathBuf),
}

impl Endpoint {
    /// The endpoint this guest should use: the zone socket when it exists (as SmartOS's
    /// native tools in an lx zone and cloud-init's lx-brand client do), else the serial
    /// port (as mdata-client's Linux build always does). `MDATA_SOCKET` and
    /// `MDATA_SERIAL_DEVICE` override the two paths.
    pub fn discover() -> Endpoint {
        let socket =
            std::env::var_os(SOCKET_ENV).map_or_else(|| PathBuf::from(SOCKET_PATH), PathBuf::from);
        let serial = std::env::var_os(SERIAL_ENV)
            .map_or_else(|| PathBuf::from(SERIAL_DEVICE), PathBuf::from);
        match std::fs::symlink_metadata(&socket) {
            Ok(m) if m.file_type().is_socket() => Endpoint::Socket(socket),
            _ => Endpoint::Serial(serial),
        }
    }
}

/// An open connection to the metadata server, reading whole lines.
#[derive(Debug)]
pub struct Connection {
    file: File,
    pending: Vec<u8>,
}

impl Connection {
    /// Opens `endpoint`. A serial port is locked (fcntl, like mdata-client and
    /// cloud-init, so they exclude each other), put in raw mode, and drained of
    /// whatever a previous user left unread.
    pub fn open(endpoint: &Endpoint) -> Result<Self, TransportError> {
        match endpoint {
            Endpoint::Socket(path) => {
                let stream = UnixStream::connect(path).map_err(|source| TransportError::Open {
                    path: path.clone(),
                    source,
                })?;
                Ok(Connection {
                    file: File::from(std::os::fd::OwnedFd::from(stream)),
                    pending: Vec::new(),
                })
            }
            Endpoint::Serial(path) => open_serial(path),
        }
    }

    /// Writes all of `data`.
    pub fn send(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.file.write_all(data)?;
        Ok(())
    }

    /// The next line, without its newline, waiting at most `timeout`.
    pub fn recv_line(&mut self, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=nl).collect();
                line.pop();
                return Ok(line);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TransportError::Timeout);
            }
            let ms = PollTimeout::try_from(left.max(Duration::from_millis(1)))
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(0) => return Err(TransportError::Timeout),
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(TransportError::Io(e.into())),
            }
            let hangup = fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP));
            let mut buf = [0u8; 4096];
            match self.file.read(&mut buf) {
                // A raw serial line with VMIN=0 reads nothing when the peer is quiet.
                Ok(0) if hangup => return Err(TransportError::Closed),
                Ok(0) => {}
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn open_serial(path: &Path) -> Result<Connection, TransportError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(|source| TransportError::Open {
            path: path.to_owned(),
            source,
        })?;
    let setup = |source| TransportError::Setup {
        path: path.to_owned(),
        source,
    };
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETLKW(&lock)).map_err(setup)?;
    let mut tios = termios::tcgetattr(&file).map_err(setup)?;
    termios::cfmakeraw(&mut tios);
    tios.local_flags.remove(LocalFlags::ECHO);
    // Reads return after 100 ms without data, as mdata-client configures the line.
    tios.control_chars[SpecialCharacterIndices::VMIN as usize] = 0;
    tios.control_chars[SpecialCharacterIndices::VTIME as usize] = 1;
    termios::tcsetattr(&file, SetArg::TCSAFLUSH, &tios).map_err(setup)?;
    let mut conn = Connection {
        file,
        pending: Vec::new(),
    };
    // The line is shared: drop whatever answer a previous, interrupted user left.
    let mut scrap = [0u8; 256];
    while matches!(conn.file.read(&mut scrap), Ok(n) if n > 0) {}
    conn.pending.clear();
    Ok(conn)
}

/// A pseudo-terminal for serving metadata on a zone's `/dev/ttyS1`: the server drives
/// the master; the slave is what the zone opens.
#[derive(Debug)]
pub struct MetadataPty {
    /// The server's end.
    pub master: File,
    /// The guest's end. Keep it open for the zone's life: while no slave is open,
    /// reading the master fails (EIO) and the line would flap between clients.
    pub slave: File,
    /// The slave's device path (`/dev/pts/N`), to bind-mount on the zone's `/dev/ttyS1`.
    pub slave_path: PathBuf,
}

/// Opens a pty whose slave is already in raw mode. That matters before any client
/// opens it: with the default line discipline, the slave echoes every answer the
/// server writes back to the server as a new request, and the two talk forever.
pub fn metadata_pty() -> nix::Result<MetadataPty> {
    let pty = nix::pty::openpty(None, None)?;
    let slave = File::from(pty.slave);
    let mut tios = termios::tcgetattr(&slave)?;
    termios::cfmakeraw(&mut tios);
    termios::tcsetattr(&slave, SetArg::TCSANOW, &tios)?;
    let slave_path = nix::unistd::ttyname(&slave)?;
    Ok(MetadataPty {
        master: File::from(pty.master),
        slave,
        slave_path,
    })
}
