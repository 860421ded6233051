//! The one error type of the image store: each variant names the image, file or URL
//! it is about, so a message is actionable without a backtrace.

use std::path::PathBuf;
use uuid::Uuid;

/// Everything that can go wrong in the store, its sources, import and unpacking.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A manifest could not be parsed or is not usable.
    #[error("bad image manifest {origin}: {reason}")]
    BadManifest {
        /// Path or URL of the manifest.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// No image matched.
    #[error("image not found: {0}")]
    NotFound(String),
    /// No source is configured, so nothing can be imported.
    #[error("no image sources configured (add one with `imgadm sources -a URL`)")]
    NoSources,
    /// The downloaded or given file has the wrong size.
    #[error("image {uuid}: size mismatch: manifest says {expected} bytes, got {actual} bytes ({origin}); nothing installed")]
    SizeMismatch {
        /// The image.
        uuid: Uuid,
        /// Size the manifest promises.
        expected: u64,
        /// Size received.
        actual: u64,
        /// Where the bytes came from.
        origin: String,
    },
    /// The downloaded or given file does not hash to the manifest's checksum.
    #[error("image {uuid}: {algorithm} mismatch: manifest says {expected}, file has {actual} ({origin}); nothing installed")]
    ChecksumMismatch {
        /// The image.
        uuid: Uuid,
        /// `sha256` or `sha1`.
        algorithm: &'static str,
        /// Checksum in the manifest.
        expected: String,
        /// Checksum computed.
        actual: String,
        /// Where the bytes came from.
        origin: String,
    },
    /// The image is used by instances and cannot be deleted.
    #[error("image {uuid} is in use by {}: delete those instances first", .by.join(", "))]
    InUse {
        /// The image.
        uuid: Uuid,
        /// Instances using it.
        by: Vec<String>,
    },
    /// An HTTP request failed at the transport level (refused, reset, timeout, TLS).
    #[error("{url}: {reason}")]
    Network {
        /// The URL requested.
        url: String,
        /// What happened.
        reason: String,
    },
    /// An HTTP server answered with an error status.
    #[error("{url}: HTTP {status}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A source answered something that is not IMGAPI.
    #[error("{url}: not an IMGAPI answer: {reason}")]
    BadResponse {
        /// The URL requested.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tarball entry would write outside the image directory or is otherwise unsafe.
    #[error("image {uuid}: refusing tarball entry {entry:?}: {reason}; nothing installed")]
    UnsafeEntry {
        /// The image.
        uuid: Uuid,
        /// The entry path as written in the tarball.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// The image file could not be decompressed or unpacked.
    #[error("image {uuid}: cannot unpack: {reason}; nothing installed")]
    Unpack {
        /// The image.
        uuid: Uuid,
        /// What went wrong.
        reason: String,
    },
    /// The image is already installed.
    #[error("image {0} is already installed")]
    AlreadyInstalled(Uuid),
    /// A pull from an OCI registry failed: names the reference and, when one is at
    /// fault, the blob.
    #[error("{reference}{}: {reason}; nothing installed", .blob.as_ref().map(|b| format!(": blob {b}")).unwrap_or_default())]
    Oci {
        /// The reference pulled (`oci:REGISTRY/REPO:TAG`).
        reference: String,
        /// The blob (manifest, config or layer digest) at fault, if any.
        blob: Option<String>,
        /// What went wrong.
        reason: String,
    },
    /// A sources change that makes no sense (bad URL, duplicate, unknown).
    #[error("sources: {0}")]
    Sources(String),
}

impl StoreError {
    /// Wraps an I/O error with the path it is about.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
