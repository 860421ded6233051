//! The monitor's side of the socket: one [`Server`] for both monitors, whether they
//! serve from a poll loop (the zone monitor: [`Server::accept`] never blocks, and both
//! the server and each [`Connection`] are pollable fds) or from threads (the HVM
//! monitor: [`Server::serve`]).
//!
//! A request is one JSON line of at most [`MAX_REQUEST_LINE`] bytes that must arrive
//! within [`REQUEST_TIMEOUT`]: a client that sends an endless line gets an error answer
//! and is dropped, one that says nothing is dropped when its time is up, and neither
//! holds up the monitor or its other clients.

use crate::{MonitorRequest, MonitorResponse, MonitorStatus};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest request line a monitor reads; requests are a few dozen bytes.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// How long a client has to send a complete request (from its connection, or from
/// the previous answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another process answers on the socket: it serves this instance.
    #[error("a monitor already answers on {path}")]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// A socket operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Why a connection's request could not be read (or its answer sent).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The line went past [`MAX_REQUEST_LINE`] without ending.
    #[error("request line longer than {limit} bytes")]
    TooLong {
        /// The bound.
        limit: usize,
    },
    /// The line is not a [`MonitorRequest`].
    #[error("bad request: {0}")]
    BadRequest(#[source] serde_json::Error),
    /// No complete request in time.
    #[error("no complete request within {0:?}")]
    TimedOut(Duration),
    /// Reading or writing failed.
    #[error("monitor socket: {0}")]
    Io(#[from] io::Error),
}

/// What the connection had to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A complete request.
    Request(MonitorRequest),
    /// Nothing complete yet (only on a non-blocking connection, from
    /// [`Server::accept`]): wait until it is readable again.
    Waiting,
    /// The client closed its end.
    Closed,
}

/// An answer, and the fd it hands over (the console).
#[derive(Debug)]
pub struct Reply {
    /// The answer line.
    pub response: MonitorResponse,
    /// Sent as SCM_RIGHTS with the answer, then closed here.
    pub fd: Option<OwnedFd>,
}

impl Reply {
    /// Done; `message` says how.
    pub fn ok(message: impl Into<String>) -> Reply {
        MonitorResponse::ok(message).into()
    }

    /// Not done; `message` says why.
    pub fn refused(message: impl Into<String>) -> Reply {
        MonitorResponse::refused(message).into()
    }

    /// The answer to `Status`.
    pub fn status(status: MonitorStatus) -> Reply {
        let mut r = MonitorResponse::ok("");
        r.status = Some(status);
        r.into()
    }

    /// Hands `fd` over with the answer.
    pub fn with_fd(mut self, fd: OwnedFd) -> Reply {
        self.fd = Some(fd);
        self
    }
}

impl From<MonitorResponse> for Reply {
    fn from(response: MonitorResponse) -> Reply {
        Reply { response, fd: None }
    }
}

/// The listening socket of one monitor.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    max_line: usize,
    timeout: Duration,
}

impl Server {
    /// Listens on `path`, replacing a stale socket file but never a live monitor's.
    /// Only root (init) may connect: the socket stops instances and hands out consoles.
    pub fn bind(path: &Path) -> Result<Server, ServerError> {
        let io = |what| {
            move |source| ServerError::Io {
                what,
                path: path.to_path_buf(),
                source,
            }
        };
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse {
                path: path.to_path_buf(),
            });
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(io("binding"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("restricting"))?;
        // Never blocks: a poll loop accepts when the fd is readable, and `serve`
        // polls before accepting.
        listener.set_nonblocking(true).map_err(io("configuring"))?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
            max_line: MAX_REQUEST_LINE,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The same server with other bounds (tests use short ones).
    pub fn with_limits(mut self, max_line: usize, timeout: Duration) -> Server {
        self.max_line = max_line;
        self.timeout = timeout;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next pending connection, without waiting: `None` when there is none. The
    /// connection is non-blocking, for a poll loop.
    pub fn accept(&self) -> Result<Option<Connection>, ServerError> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream
                        .set_nonblocking(true)
                        .map_err(|source| ServerError::Io {
                            what: "configuring a connection on",
                            path: self.path.clone(),
                            source,
                        })?;
                    return Ok(Some(Connection {
                        stream,
                        buf: Vec::new(),
                        max_line: self.max_line,
                        timeout: self.timeout,
                        deadline: Instant::now() + self.timeout,
                        blocking: false,
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The client gave up before we got to it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(source) => {
                    return Err(ServerError::Io {
                        what: "accepting on",
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Serves for ever, one thread per connection, answering each request with
    /// `handler`. For a monitor whose other work runs on threads of its own.
    pub fn serve<F>(&self, handler: F) -> !
    where
        F: Fn(MonitorRequest) -> Reply + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        loop {
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            if let Err(e) = poll(&mut fds, PollTimeout::NONE) {
                if e != nix::errno::Errno::EINTR {
                    log::error!("polling {}: {e}", self.path.display());
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            loop {
                match self.accept() {
                    Ok(Some(mut conn)) => {
                        let handler = Arc::clone(&handler);
                        std::thread::spawn(move || {
                            if let Err(e) = conn.set_blocking() {
                                log::warn!("{e}");
                                return;
                            }
                            conn.serve(|req| handler(req));
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // Out of fds, say: let some connections end first.
                        log::error!("{e}");
                        std::thread::sleep(Duration::from_millis(100));
                        break;
                    }
                }
            }
        }
    }
}

impl AsFd for Server {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// One client of the monitor.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    buf: Vec<u8>,
    max_line: usize,
    timeout: Duration,
    deadline: Instant,
    blocking: bool,
}

impl Connection {
    /// Makes reads wait for the client (up to the request deadline), for a thread of
    /// its own.
    pub fn set_blocking(&mut self) -> Result<(), ConnectionError> {
        self.stream.set_nonblocking(false)?;
        self.blocking = true;
        Ok(())
    }

    /// When the client's time to send a complete request runs out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the client's time is up: a poll loop drops such a connection.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// The next request. A non-blocking connection answers [`Incoming::Waiting`]
    /// when the rest has not arrived yet; a blocking one waits for it until the
    /// deadline.
    pub fn next_request(&mut self) -> Result<Incoming, ConnectionError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.len() > self.max_line {
                    return Err(ConnectionError::TooLong {
                        limit: self.max_line,
                    });
                }
                return serde_json::from_slice(&line)
                    .map(Incoming::Request)
                    .map_err(ConnectionError::BadRequest);
            }
            if self.buf.len() > self.max_line {
                return Err(ConnectionError::TooLong {
                    limit: self.max_line,
                });
            }
            let now = Instant::now();
            if self.expired(now) {
                return Err(ConnectionError::TimedOut(self.timeout));
            }
            if self.blocking {
                self.stream.set_read_timeout(Some(self.deadline - now))?;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(Incoming::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if !self.blocking {
                        return Ok(Incoming::Waiting);
                    }
                    // A blocking read timed out: the loop reports the deadline.
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `reply`, its fd (if any) attached as SCM_RIGHTS. A client that does not
    /// read its answer within the request timeout is given up on.
    pub fn reply(&mut self, reply: Reply) -> Result<(), ConnectionError> {
        let mut line = serde_json::to_vec(&reply.response).map_err(io::Error::other)?;
        line.push(b'\n');
        // Answers are small; a blocking write with a timeout sends them whole.
        self.stream.set_nonblocking(false)?;
        self.stream.set_write_timeout(Some(self.timeout))?;
        let sent = self.send(&line, reply.fd.as_ref().map(|f| f.as_fd()));
        if !self.blocking {
            self.stream.set_nonblocking(true)?;
        }
        sent?;
        self.deadline = Instant::now() + self.timeout;
        Ok(())
    }

    fn send(&mut self, line: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<(), ConnectionError> {
        let mut rest = line;
        if let Some(fd) = fd {
            let fds = [fd.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let n = loop {
                match sendmsg::<()>(
                    self.stream.as_raw_fd(),
                    &[IoSlice::new(rest)],
                    &cmsg,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other.map_err(io::Error::from)?,
                }
            };
            rest = &rest[n..];
        }
        self.stream.write_all(rest)?;
        Ok(())
    }

    /// Answers a request that could not be read, when it can be answered; false when
    /// the connection is done for (an overlong line cannot be resynchronised, a
    /// client out of time or a broken socket gets nothing more).
    pub fn refuse(&mut self, error: &ConnectionError) -> bool {
        match error {
            ConnectionError::BadRequest(_) => self.reply(Reply::refused(error.to_string())).is_ok(),
            ConnectionError::TooLong { .. } => {
                let _ = self.reply(Reply::refused(error.to_string()));
                false
            }
            ConnectionError::TimedOut(_) | ConnectionError::Io(_) => false,
        }
    }

    /// Answers every request the client has sent, with `handler`; false when the
    /// connection is done (closed, out of time, broken). A blocking connection is
    /// served until then.
    pub fn serve(&mut self, mut handler: impl FnMut(MonitorRequest) -> Reply) -> bool {
        loop {
            match self.next_request() {
                Ok(Incoming::Request(req)) => {
                    if self.reply(handler(req)).is_err() {
                        return false;
                    }
                }
                Ok(Incoming::Waiting) => return true,
                Ok(Incoming::Closed) => return false,
                Err(e) => {
                    if !self.refuse(&e) {
                        return false;
                    }
                }
            }
        }
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}
