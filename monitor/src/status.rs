//! `monitor.json`: the status a monitor leaves in the pool, so that init learns how an
//! instance ended even when the monitor is gone (or was never init's child).

use crate::MonitorStatus;
use std::io;
use std::path::{Path, PathBuf};

/// Why the status file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StatusFileError {
    /// Reading or writing failed (a missing file included).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file holds no status.
    #[error("{path}: not a monitor status: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        source: serde_json::Error,
    },
}

/// One instance's `monitor.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFile {
    path: PathBuf,
}

impl StatusFile {
    /// The status file of instance `uuid` in `pool`.
    pub fn of(pool: &Path, uuid: &str) -> StatusFile {
        StatusFile {
            path: crate::status_path(pool, uuid),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The status the monitor last wrote.
    pub fn read(&self) -> Result<MonitorStatus, StatusFileError> {
        let data = std::fs::read(&self.path).map_err(|source| StatusFileError::Io {
            path: self.path.clone(),
            source,
        })?;
        serde_json::from_slice(&data).map_err(|source| StatusFileError::Corrupt {
            path: self.path.clone(),
            source,
        })
    }

    /// Replaces the status, atomically: a reader sees the old or the new one.
    pub fn write(&self, status: &MonitorStatus) -> Result<(), StatusFileError> {
        spec::atomic::write_json_atomic(&self.path, status).map_err(|source| StatusFileError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::State;

    #[test]
    fn a_status_reads_back_as_written_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("u1")).unwrap();
        let file = StatusFile::of(dir.path(), "u1");
        let e = file.read().unwrap_err().to_string();
        assert!(e.contains("u1/monitor.json"), "{e}");
        let mut st = MonitorStatus::provisioning(42);
        st.set(State::Stopped, "stopped on request");
        file.write(&st).unwrap();
        assert_eq!(file.read().unwrap(), st);
        std::fs::write(file.path(), b"{\"pid\":1,\"state\":\"resting\"}").unwrap();
        let e = file.read().unwrap_err().to_string();
        assert!(e.contains("not a monitor status"), "{e}");
    }
}
