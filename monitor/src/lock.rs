//! The lifetime lock: one monitor per instance, however the last one ended.

use std::path::{Path, PathBuf};

/// Why [`MonitorLock::take`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A live monitor holds the lock: it owns the instance.
    #[error("another monitor (pid {pid}) holds {path}: it owns this instance")]
    Held {
        /// The lock file.
        path: PathBuf,
        /// What the holder's pidfile says.
        pid: String,
    },
    /// Opening or locking the file failed.
    #[error("locking {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The exclusive lock on [`crate::lock_path`] a monitor holds for its life.
#[derive(Debug)]
pub struct MonitorLock {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl MonitorLock {
    /// Takes the lock without waiting, or says which monitor holds it.
    pub fn take(path: &Path) -> Result<MonitorLock, LockError> {
        use std::os::unix::fs::MetadataExt;
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let pidfile = path.with_extension("pid");
                    let pid = std::fs::read_to_string(pidfile).unwrap_or_default();
                    return Err(LockError::Held {
                        path: path.to_path_buf(),
                        pid: pid.trim().to_string(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
            // The previous holder unlinks the file when it exits: a lock on an
            // unlinked inode guards nothing, so take it again on the current file.
            let ours = file.metadata().map(|m| m.ino()).ok();
            let current = std::fs::metadata(path).map(|m| m.ino()).ok();
            if ours.is_some() && ours == current {
                return Ok(MonitorLock {
                    path: path.to_path_buf(),
                    file: Some(file),
                });
            }
        }
    }

    /// Unlinks the lock file, then unlocks: a waiting monitor retries on a new file.
    /// (A monitor that dies without it leaves the file, unlocked, for the next one.)
    pub fn release(&mut self) {
        if let Some(held) = self.file.take() {
            let _ = std::fs::remove_file(&self.path);
            drop(held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{lock_path, pidfile_path};

    #[test]
    fn a_monitor_lock_is_exclusive_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "u1");
        std::fs::write(pidfile_path(dir.path(), "u1"), "4242\n").unwrap();
        let mut held = MonitorLock::take(&path).unwrap();
        match MonitorLock::take(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, "4242"),
            other => panic!("second take: {other:?}"),
        }
        held.release();
        assert!(!path.exists(), "release leaves the lock file");
        // A holder that died without releasing leaves the file, unlocked.
        drop(MonitorLock::take(&path).unwrap());
        assert!(path.exists());
        MonitorLock::take(&path).expect("a dead holder's lock is taken again");
    }
}
