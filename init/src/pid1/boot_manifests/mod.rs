//! Boot manifests: `skerry.manifests=URL`, fetched at every boot into
//! `<pool>/manifests/boot-url.kdl`, authenticated before it replaces the copy there.
//!
//! - [`http`]: the bounded download (size, Content-Length, total time);
//! - [`trust`]: the minisign keys and CA bundle of the image and the pool.
//!
//! Policy: with a trusted key configured, a body is installed only with a good
//! minisign signature (`URL.minisig`) by one of those keys, and not older (by its
//! signed timestamp) than the copy it replaces. Without one, the body is installed
//! unsigned with a loud console warning. Anything refused leaves the last good copy
//! in place, and the console says why.

pub mod http;
pub mod trust;

pub use http::Limits;
pub use trust::{KeyId, Trust, Verified, IMAGE_TRUST_ROOT};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file the boot manifests are kept in, under `<pool>/manifests/`.
pub const BOOT_FILE: &str = "boot-url.kdl";
/// The signature of the last good copy, beside it (not a `.kdl`: never loaded).
pub const BOOT_SIGNATURE: &str = "boot-url.kdl.minisig";

/// Why boot manifests were not installed.
#[derive(Debug, thiserror::Error)]
pub enum BootManifestError {
    /// The request failed (DNS, connection, TLS, a timeout before the headers).
    #[error("{url}: {}", causes(source))]
    Http {
        /// The URL.
        url: String,
        /// reqwest's error (its chain names the TLS or socket cause).
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{url}: the server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status line.
        status: String,
    },
    /// The body is not on the server (404 or 410).
    #[error("{url}: not found on the server")]
    Missing {
        /// The URL.
        url: String,
    },
    /// Keys are configured and the server has no `URL.minisig`.
    #[error("{url}: no signature on the server, and this node trusts manifest keys {keys} (unsigned boot manifests are refused)")]
    MissingSignature {
        /// The signature's URL.
        url: String,
        /// The trusted key ids.
        keys: String,
    },
    /// More than the limit was announced or sent.
    #[error("{url}: too large ({size}; the limit is {limit} bytes)")]
    TooLarge {
        /// The URL.
        url: String,
        /// What was announced or seen.
        size: String,
        /// The limit.
        limit: u64,
    },
    /// The body ended before its Content-Length.
    #[error("{url}: truncated ({got} of the {declared} bytes announced)")]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes received.
        got: u64,
        /// The Content-Length.
        declared: u64,
    },
    /// The connection failed in the middle of the body.
    #[error("{url}: connection cut after {got} bytes: {}", causes(source))]
    Cut {
        /// The URL.
        url: String,
        /// Bytes received.
        got: u64,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The server was too slow (a slow drip never ends otherwise).
    #[error("{url}: not complete within {limit:?} ({got} bytes received)")]
    TimedOut {
        /// The URL.
        url: String,
        /// The total time allowed.
        limit: Duration,
        /// Bytes received by then.
        got: u64,
    },
    /// The signature is malformed or does not match the body.
    #[error("{url}: bad signature: {reason}")]
    BadSignature {
        /// The signature's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The signature was made by a key the node does not trust.
    #[error("{url}: signed by key {key}, which this node does not trust (trusted: {})", trusted.join(", "))]
    UnknownKey {
        /// The signature's URL.
        url: String,
        /// The key id in the signature.
        key: KeyId,
        /// The trusted ids.
        trusted: Vec<String>,
    },
    /// A good signature older than the one of the copy it would replace: a replay.
    #[error("{url}: signed at {new} but the last good copy was signed at {old} (an older manifest replayed?)")]
    Rollback {
        /// The signature's URL.
        url: String,
        /// Its signed timestamp.
        new: u64,
        /// The last good copy's.
        old: u64,
    },
    /// A trust file (key, CA bundle) or folder cannot be read.
    #[error("{}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A trust file is larger than any real one.
    #[error("{}: larger than {limit} bytes", file.display())]
    FileTooLarge {
        /// The file.
        file: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A file of `manifest-keys/` is not a minisign public key.
    #[error("{}: not a minisign public key ({reason}); make one with `minisign -G`", file.display())]
    BadKey {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// Too many key files.
    #[error("{}: {count} keys, more than {limit}", dir.display())]
    TooManyKeys {
        /// The folder.
        dir: PathBuf,
        /// How many.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The CA bundle does not parse.
    #[error("{}: not a PEM CA bundle: {source}", file.display())]
    BadCa {
        /// The file.
        file: PathBuf,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The CA bundle holds no certificate.
    #[error("{}: no certificate in the bundle", .0.display())]
    EmptyCa(PathBuf),
    /// The manifest folder or the copy cannot be written.
    #[error("{}: {source}", file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What went wrong under an error from the HTTP stack, innermost last: reqwest's own
/// line repeats the URL, and hyper's says only "error decoding response body".
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        cur = c.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// What a refresh installed.
#[derive(Debug, Clone)]
pub enum Installed {
    /// A body signed by a trusted key.
    Signed(Verified),
    /// A body taken without a signature (no key configured).
    Unsigned,
}

/// Downloads `url` (and `URL.minisig` when `trust` has keys), checks it, and installs
/// it as `dest` atomically (temp file, fsync, rename, fsync of the folder). On any
/// error `dest` is left as it was.
pub fn refresh(
    url: &str,
    dest: &Path,
    trust: &Trust,
    limits: &Limits,
) -> Result<Installed, BootManifestError> {
    let started = Instant::now();
    let client = trust.client(url, limits)?;
    let body = match http::get(&client, url, limits.max_body, started, limits)? {
        http::Download::Body(b) => b,
        http::Download::NotFound => return Err(BootManifestError::Missing { url: url.into() }),
    };
    let sig_file = dest.with_file_name(BOOT_SIGNATURE);
    let write = |file: &Path, data: &[u8]| {
        spec::atomic::write_atomic(file, data).map_err(|source| BootManifestError::Write {
            file: file.to_path_buf(),
            source,
        })
    };
    if trust.keys.is_empty() {
        write(dest, &body)?;
        // An old signature would speak for a body it did not sign.
        let _ = std::fs::remove_file(&sig_file);
        return Ok(Installed::Unsigned);
    }
    let sig_url = format!("{url}.minisig");
    let sig = match http::get(&client, &sig_url, limits.max_signature, started, limits)? {
        http::Download::Body(s) => s,
        http::Download::NotFound => {
            return Err(BootManifestError::MissingSignature {
                url: sig_url,
                keys: trust
                    .keys
                    .iter()
                    .map(|k| k.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    let verified = trust.verify(&body, &sig, &sig_url)?;
    if let (Some(new), Some(old)) = (
        trust::signed_timestamp(&verified.trusted_comment),
        last_good_timestamp(&sig_file, limits.max_signature),
    ) {
        if new < old {
            return Err(BootManifestError::Rollback {
                url: sig_url,
                new,
                old,
            });
        }
    }
    write(dest, &body)?;
    write(&sig_file, &sig)?;
    Ok(Installed::Signed(verified))
}

/// The signed timestamp of the last good copy's signature, if it has one.
fn last_good_timestamp(sig_file: &Path, limit: u64) -> Option<u64> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(sig_file)
        .ok()?
        .take(limit)
        .read_to_string(&mut text)
        .ok()?;
    let sig = minisign_verify::Signature::decode(&text).ok()?;
    trust::signed_timestamp(sig.trusted_comment())
}

/// The boot phase: loads the trust of `image_root` (the image's `/etc/skerry`) and
/// `<pool>/config/`, refreshes `<pool>/manifests/boot-url.kdl` from `url`, and says
/// on the console what was installed, or why nothing was and what the node runs from.
pub fn refresh_at_boot(
    url: &str,
    pool: &Path,
    image_root: &Path,
    limits: &Limits,
) -> Result<Installed, BootManifestError> {
    let dir = spec::pool::manifests_dir(pool);
    let dest = dir.join(BOOT_FILE);
    let result = (|| {
        std::fs::create_dir_all(&dir).map_err(|source| BootManifestError::Write {
            file: dir.clone(),
            source,
        })?;
        let config = spec::pool::config_dir(pool);
        let trust = Trust::load(&[image_root, &config])?;
        if trust.keys.is_empty() {
            let how = if url.starts_with("https://") {
                "authenticated by TLS only"
            } else {
                "NOT authenticated: anyone on the boot network can change this node's instances"
            };
            crate::console::say(&format!(
                "WARNING: no manifest key in {}/{} or {}/{}: boot manifests from {url} are taken unsigned, {how}",
                image_root.display(),
                trust::KEYS_DIR,
                config.display(),
                trust::KEYS_DIR
            ));
        }
        refresh(url, &dest, &trust, limits)
    })();
    match &result {
        Ok(Installed::Signed(v)) => crate::console::say(&format!(
            "boot manifests from {url}: good signature by key {} ({}); installed as {}",
            v.key,
            v.trusted_comment,
            dest.display()
        )),
        Ok(Installed::Unsigned) => crate::console::say(&format!(
            "boot manifests from {url}: installed UNSIGNED as {}",
            dest.display()
        )),
        Err(e) => {
            let fallback = if dest.exists() {
                format!("the node runs from the last good copy, {}", dest.display())
            } else {
                "there is no earlier copy, so the node runs without boot manifests".to_string()
            };
            crate::console::say(&format!("boot manifests refused: {e}; {fallback}"));
        }
    }
    result
}
