//! The zone runtime's error type: every variant names the thing that went wrong.

use std::io;
use std::path::PathBuf;

/// Why a zone could not be set up, run or cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The rootfs (image) directory is missing or not a directory.
    #[error("zone rootfs {path}: {reason}")]
    Rootfs {
        /// The rootfs path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The command (or zone init) does not exist in the zone's rootfs.
    #[error("{command}: not found in the zone's rootfs {rootfs} (does the image have it?)")]
    CommandNotFound {
        /// The program asked for.
        command: String,
        /// The zone rootfs.
        rootfs: PathBuf,
    },
    /// The image's `User` names nobody the image knows, or cannot be read.
    #[error("zone {instance}: user {user:?} of its image: {source}")]
    User {
        /// The instance's name and UUID.
        instance: String,
        /// The `User` as the image says it.
        user: String,
        /// Why it did not resolve.
        source: crate::user::UserError,
    },
    /// A step of the zone's setup failed inside the new namespaces.
    #[error("zone setup failed: {0}")]
    Setup(String),
    /// A system call made while preparing the zone failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path or object.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A cgroup operation failed.
    #[error("cgroup {path}: {reason}")]
    Cgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Network setup failed.
    #[error("network ({what}): {reason}")]
    Net {
        /// The nic, bridge or interface concerned.
        what: String,
        /// What failed.
        reason: String,
    },
    /// Setting up the writable-layer quota failed on a filesystem that supports it.
    #[error("zone {zone}: quota on {path}: {reason}")]
    Quota {
        /// The zone.
        zone: String,
        /// The directory concerned.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The zone's metadata store (`metadata.json`) could not be read or written.
    #[error("zone {zone}: metadata: {source}")]
    Metadata {
        /// The zone (its UUID).
        zone: String,
        /// The store's error, naming the file.
        #[source]
        source: mdata::StoreError,
    },
    /// Bad argument or configuration value.
    #[error("{0}")]
    Invalid(String),
    /// The monitor could not set itself up: init's config, its stdio, or its claim
    /// on the zone (another monitor owns it, or the lock, socket or pidfile failed).
    #[error(transparent)]
    Monitor(#[from] monitor::ProcessError),
}

impl ZoneError {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        ZoneError::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<nix::Error> for ZoneError {
    fn from(e: nix::Error) -> Self {
        ZoneError::io("system call", io::Error::from(e))
    }
}

impl From<host::cgroup::CgroupError> for ZoneError {
    fn from(e: host::cgroup::CgroupError) -> Self {
        ZoneError::Cgroup {
            path: e.path,
            reason: e.reason,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ZoneError>;

/// Extension to attach "what was being done" to `io::Result` and `nix::Result`.
pub trait Context<T> {
    /// Names the operation for the error message.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| ZoneError::io(what(), e))
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| ZoneError::io(what(), io::Error::from(e)))
    }
}
