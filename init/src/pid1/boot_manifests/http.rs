//! The bounded download of a boot manifest or its signature: HTTPS (or HTTP) through
//! reqwest with rustls, a size cap checked before and while reading, a Content-Length
//! that must be met exactly, and a total deadline a slow-drip server cannot stretch.

use super::BootManifestError;
use std::io::Read;
use std::time::{Duration, Instant};

/// How much a download may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest body accepted (the manifest size limit of `spec`).
    pub max_body: u64,
    /// The largest signature file accepted.
    pub max_signature: u64,
    /// The whole download, headers and body, must end within this.
    pub total: Duration,
    /// The longest wait for any one read (and for the connection): a server that
    /// sends nothing for this long is given up on at once.
    pub stall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: spec::manifest::limits::MAX_BYTES as u64,
            max_signature: 4096,
            total: Duration::from_secs(60),
            stall: Duration::from_secs(15),
        }
    }
}

/// What a GET brought back.
pub enum Download {
    /// A complete body.
    Body(Vec<u8>),
    /// The server answered 404 or 410: there is no such file.
    NotFound,
}

/// GETs `url` with `client`, reading at most `max` bytes until `limits.total` after
/// `started` (one deadline for the body and its signature). A body shorter than its
/// Content-Length (a connection cut) is an error.
pub fn get(
    client: &reqwest::blocking::Client,
    url: &str,
    max: u64,
    started: Instant,
    limits: &Limits,
) -> Result<Download, BootManifestError> {
    let http = |source| BootManifestError::Http {
        url: url.to_string(),
        source,
    };
    let mut resp = client.get(url).send().map_err(http)?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Ok(Download::NotFound);
    }
    if !status.is_success() {
        return Err(BootManifestError::Status {
            url: url.to_string(),
            status: status.to_string(),
        });
    }
    let declared = resp.content_length();
    if let Some(n) = declared.filter(|&n| n > max) {
        return Err(BootManifestError::TooLarge {
            url: url.to_string(),
            size: format!("{n} bytes announced"),
            limit: max,
        });
    }
    let mut body = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        if started.elapsed() > limits.total {
            return Err(BootManifestError::TimedOut {
                url: url.to_string(),
                limit: limits.total,
                got: body.len() as u64,
            });
        }
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(BootManifestError::Cut {
                    url: url.to_string(),
                    got: body.len() as u64,
                    source: e,
                })
            }
        };
        if (body.len() + n) as u64 > max {
            return Err(BootManifestError::TooLarge {
                url: url.to_string(),
                size: format!("more than {max} bytes sent"),
                limit: max,
            });
        }
        body.extend_from_slice(&buf[..n]);
    }
    // hyper already refuses a body that ends before its Content-Length; checked here
    // again so the rule does not depend on the client's version.
    if let Some(n) = declared.filter(|&n| n != body.len() as u64) {
        return Err(BootManifestError::Truncated {
            url: url.to_string(),
            got: body.len() as u64,
            declared: n,
        });
    }
    Ok(Download::Body(body))
}
