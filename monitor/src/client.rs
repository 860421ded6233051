//! The one client of the monitor socket: init's runtime and the tests talk to monitors
//! through it. One connection per request; the console fd rides along as SCM_RIGHTS.

use crate::{MonitorRequest, MonitorResponse, MonitorStatus};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::io::{self, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a monitor has to answer one request, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest answer read (a status with its details is a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// Why a request to a monitor got no usable answer. Each names the socket, except a
/// refusal, which is the monitor's own words.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket (no monitor, or a stale file).
    #[error("connecting to {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Sending or receiving failed (including a timeout).
    #[error("talking to the monitor on {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The monitor hung up before answering.
    #[error("{path}: monitor closed the socket without answering")]
    NoAnswer {
        /// The socket.
        path: PathBuf,
    },
    /// The answer is not a [`MonitorResponse`].
    #[error("{path}: bad monitor answer {answer:?}: {reason}")]
    BadAnswer {
        /// The socket.
        path: PathBuf,
        /// What came back (cut short).
        answer: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The monitor answered that it did not do it.
    #[error("{message}")]
    Refused {
        /// The socket.
        path: PathBuf,
        /// The monitor's reason.
        message: String,
    },
    /// A `Status` answer without a status.
    #[error("{path}: status answer without a status")]
    NoStatus {
        /// The socket.
        path: PathBuf,
    },
    /// A `Console` answer without the console.
    #[error("{path}: console answer carried no file descriptor")]
    NoConsole {
        /// The socket.
        path: PathBuf,
    },
}

/// A client of one monitor's socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the monitor listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A client of instance `uuid`'s monitor, whose socket is in `run_dir`.
    pub fn for_instance(run_dir: &Path, uuid: &str) -> Client {
        Client::new(crate::socket_path(run_dir, uuid))
    }

    /// The same client, waiting at most `timeout` for each answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` and returns the answer as it came, refusals included, with the fd
    /// the monitor attached (the console).
    pub fn request(
        &self,
        req: &MonitorRequest,
    ) -> Result<(MonitorResponse, Option<OwnedFd>), ClientError> {
        let io = |source| ClientError::Io {
            path: self.socket.clone(),
            source,
        };
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut line = serde_json::to_vec(req).map_err(|e| io(io::Error::other(e)))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(io)?;
        let (data, fd) = self.receive(&stream)?;
        let text = String::from_utf8_lossy(&data);
        if text.trim().is_empty() {
            return Err(ClientError::NoAnswer {
                path: self.socket.clone(),
            });
        }
        let resp = serde_json::from_str(text.trim()).map_err(|e| ClientError::BadAnswer {
            path: self.socket.clone(),
            answer: text.chars().take(200).collect(),
            reason: e.to_string(),
        })?;
        Ok((resp, fd))
    }

    /// Reads one answer line and the first fd that came with it.
    fn receive(&self, stream: &UnixStream) -> Result<(Vec<u8>, Option<OwnedFd>), ClientError> {
        let mut data = Vec::new();
        let mut fd = None;
        while !data.contains(&b'\n') && data.len() <= MAX_ANSWER {
            let mut buf = [0u8; 16384];
            let mut cmsg = nix::cmsg_space!([RawFd; 2]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = loop {
                match recvmsg::<()>(
                    stream.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => {
                        break other.map_err(|e| ClientError::Io {
                            path: self.socket.clone(),
                            source: e.into(),
                        })?
                    }
                }
            };
            let n = msg.bytes;
            for c in msg.cmsgs().into_iter().flatten() {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for raw in fds {
                        // SAFETY: the kernel just installed `raw` in our fd table for
                        // this message; nothing else owns it, so taking ownership is
                        // sound (extra fds are closed by the drop).
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        fd.get_or_insert(owned);
                    }
                }
            }
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        Ok((data, fd))
    }

    /// Sends `req`; an answer that is not `ok` is an error.
    fn ask(&self, req: &MonitorRequest) -> Result<(MonitorResponse, Option<OwnedFd>), ClientError> {
        let (resp, fd) = self.request(req)?;
        if !resp.ok {
            return Err(ClientError::Refused {
                path: self.socket.clone(),
                message: resp.message,
            });
        }
        Ok((resp, fd))
    }

    /// The monitor's status.
    pub fn status(&self) -> Result<MonitorStatus, ClientError> {
        self.ask(&MonitorRequest::Status)?
            .0
            .status
            .ok_or_else(|| ClientError::NoStatus {
                path: self.socket.clone(),
            })
    }

    /// Asks the monitor to stop its instance (gracefully for `grace`, unless `force`)
    /// and exit; returns its note on how.
    pub fn stop(&self, force: bool, grace: Duration) -> Result<String, ClientError> {
        let timeout_secs = grace.as_secs().min(u32::MAX as u64) as u32;
        let req = MonitorRequest::Stop {
            force,
            timeout_secs,
        };
        Ok(self.ask(&req)?.0.message)
    }

    /// Asks the monitor to reboot its instance in place.
    pub fn reboot(&self, force: bool) -> Result<String, ClientError> {
        Ok(self.ask(&MonitorRequest::Reboot { force })?.0.message)
    }

    /// Asks the monitor to reread its `config.json` (which the caller has just
    /// rewritten) and apply what applies live; returns its note on what changed.
    pub fn reload(&self) -> Result<String, ClientError> {
        Ok(self.ask(&MonitorRequest::Reload)?.0.message)
    }

    /// The instance's console: a pty master or a relay socket.
    pub fn console(&self) -> Result<OwnedFd, ClientError> {
        self.ask(&MonitorRequest::Console)?
            .1
            .ok_or_else(|| ClientError::NoConsole {
                path: self.socket.clone(),
            })
    }
}
