//! The guest side: what `mdata-get`, `mdata-put`, `mdata-list` and `mdata-delete` do,
//! with mdata-client's handshake, retries and answers.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::frame;
use crate::transport::{Connection, Endpoint, TransportError};

/// Answer wait before version 2 is negotiated (mdata-client's).
const TIMEOUT_V1: Duration = Duration::from_secs(6);
/// Answer wait once version 2 is negotiated: a PUT may take a while.
const TIMEOUT_V2: Duration = Duration::from_secs(45);
/// Answer wait for the reset handshake.
const TIMEOUT_RESET: Duration = Duration::from_secs(2);

/// The protocol version the server agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Plain lines; GET and KEYS only.
    V1,
    /// Framed, checksummed, base64; PUT and DELETE too.
    V2,
}

/// A server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// SUCCESS, with the value (empty when none).
    Success(Vec<u8>),
    /// NOTFOUND.
    NotFound,
    /// `V2_OK`, the answer to a v1 `NEGOTIATE V2`.
    V2Ok,
    /// `invalid command` (a v1 server that does not know the command).
    InvalidCommand,
    /// Anything else, FAILURE included, with its text (the FAILURE payload, or the
    /// v1 line).
    Unknown(String),
}

/// Why a request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The transport failed and retrying cannot help.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server did not answer the reset handshake with `invalid command`.
    #[error("Could not do active reset.")]
    Reset,
}

/// A connection that has done the reset handshake and negotiated a version.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    conn: Connection,
    version: Version,
}

impl Client {
    /// Connects, retrying every second while the failure is transient (the server not
    /// yet there), as mdata-client blocks until the metadata service is available.
    pub fn connect(endpoint: Endpoint) -> Result<Self, ClientError> {
        loop {
            match Self::connect_once(endpoint.clone()) {
                Ok(c) => return Ok(c),
                Err(ClientError::Transport(e)) if e.is_permanent() => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
    }

    /// One attempt: open, reset (`\n` answered by `invalid command`), negotiate.
    pub fn connect_once(endpoint: Endpoint) -> Result<Self, ClientError> {
        let mut conn = Connection::open(&endpoint)?;
        conn.send(b"\n")?;
        if conn.recv_line(TIMEOUT_RESET)? != b"invalid command" {
            return Err(ClientError::Reset);
        }
        let mut client = Client {
            endpoint,
            conn,
            version: Version::V1,
        };
        if client.request_once("NEGOTIATE", Some(b"V2"))? == Response::V2Ok {
            client.version = Version::V2;
        }
        Ok(client)
    }

    /// The negotiated version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Sends a request and reads its answer. On a timeout or a broken connection it
    /// reconnects and tries again, as mdata-client does.
    pub fn request(&mut self, cmd: &str, arg: Option<&[u8]>) -> Result<Response, ClientError> {
        loop {
            match self.request_once(cmd, arg) {
                Ok(r) => return Ok(r),
                Err(ClientError::Transport(e)) if e.is_permanent() => return Err(e.into()),
                Err(_) => {
                    eprintln!("receive timeout, resetting protocol...");
                    *self = Self::connect(self.endpoint.clone())?;
                }
            }
        }
    }

    fn request_once(&mut self, cmd: &str, arg: Option<&[u8]>) -> Result<Response, ClientError> {
        match self.version {
            Version::V1 => {
                let mut line = cmd.as_bytes().to_vec();
                if let Some(a) = arg {
                    line.push(b' ');
                    line.extend_from_slice(a);
                }
                line.push(b'\n');
                self.conn.send(&line)?;
                self.recv_v1()
            }
            Version::V2 => {
                let reqid = format!("{:08x}", random_u32());
                // An empty argument is sent as none. (mdata-client sends a trailing
                // space, which SmartOS's agent trims before checking the length, so
                // `mdata-get ""` waits forever there; here it gets "Invalid GET Request".)
                let req = frame::encode(&reqid, cmd, arg.unwrap_or_default());
                self.conn.send(&req)?;
                self.recv_v2(&reqid)
            }
        }
    }

    fn recv_v1(&mut self) -> Result<Response, ClientError> {
        let header = self.conn.recv_line(TIMEOUT_V1)?;
        Ok(match header.as_slice() {
            b"NOTFOUND" => Response::NotFound,
            b"V2_OK" => Response::V2Ok,
            b"invalid command" => Response::InvalidCommand,
            b"SUCCESS" => {
                let mut data: Vec<u8> = Vec::new();
                loop {
                    let line = self.conn.recv_line(TIMEOUT_V1)?;
                    if line == b"." {
                        break;
                    }
                    if !data.is_empty() {
                        data.push(b'\n');
                    }
                    data.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
                }
                Response::Success(data)
            }
            other => Response::Unknown(String::from_utf8_lossy(other).into_owned()),
        })
    }

    /// Reads frames until one answers `reqid`; damaged or stray frames are dropped,
    /// as mdata-client drops them.
    fn recv_v2(&mut self, reqid: &str) -> Result<Response, ClientError> {
        loop {
            let line = self.conn.recv_line(TIMEOUT_V2)?;
            let Ok(f) = frame::parse_response(&line) else {
                continue;
            };
            if f.reqid != reqid {
                continue;
            }
            return Ok(match f.code.as_str() {
                "SUCCESS" => Response::Success(f.payload),
                "NOTFOUND" => Response::NotFound,
                _ => Response::Unknown(String::from_utf8_lossy(&f.payload).into_owned()),
            });
        }
    }

    /// GET `key`.
    pub fn get(&mut self, key: &str) -> Result<Response, ClientError> {
        self.request("GET", Some(key.as_bytes()))
    }

    /// KEYS.
    pub fn keys(&mut self) -> Result<Response, ClientError> {
        self.request("KEYS", None)
    }

    /// PUT `key` = `value` (version 2 only: the caller checks [`Client::version`]).
    pub fn put(&mut self, key: &str, value: &[u8]) -> Result<Response, ClientError> {
        let arg = format!(
            "{} {}",
            crate::base64::encode(key.as_bytes()),
            crate::base64::encode(value)
        );
        self.request("PUT", Some(arg.as_bytes()))
    }

    /// DELETE `key` (version 2 only).
    pub fn delete(&mut self, key: &str) -> Result<Response, ClientError> {
        self.request("DELETE", Some(key.as_bytes()))
    }
}

/// A request id: random enough to tell this request's answer from a stale one.
fn random_u32() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}
