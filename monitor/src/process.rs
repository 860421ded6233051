//! What makes a process the monitor of one instance, the same for every monitor:
//! reading init's config, leaving init's session and stdio ([`detach`]), and holding
//! the instance ([`Claim`]: the lifetime lock, the socket and the pidfile).

use crate::{InstanceConfig, LockError, MonitorLock, Server, ServerError};
use std::io;
use std::path::{Path, PathBuf};

/// Why a process could not become the monitor of its instance: one error for all of
/// the scaffolding, so that a monitor wraps it once.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// init's config.json is unreadable.
    #[error("{path}: {source}")]
    ReadConfig {
        /// config.json.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// init's config.json is not an [`InstanceConfig`].
    #[error("{path}: {source}")]
    InvalidConfig {
        /// config.json.
        path: PathBuf,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// Opening /dev/null or the monitor log failed.
    #[error("opening {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Redirecting a stdio descriptor failed.
    #[error("redirecting {stream} to {path}: {source}")]
    Redirect {
        /// `stdin`, `stdout` or `stderr`.
        stream: &'static str,
        /// Where to.
        path: PathBuf,
        /// The error.
        source: nix::Error,
    },
    /// Making the run directory failed.
    #[error("creating {path}: {source}")]
    RunDir {
        /// The run directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another monitor owns the instance, or the lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The socket is taken or cannot be bound.
    #[error(transparent)]
    Socket(#[from] ServerError),
    /// Writing the pidfile failed.
    #[error("writing {path}: {source}")]
    Pidfile {
        /// The pidfile.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Reads the `config.json` init wrote for a monitor.
pub fn read_config(path: &Path) -> Result<InstanceConfig, ProcessError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProcessError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ProcessError::InvalidConfig {
        path: path.to_path_buf(),
        source,
    })
}

/// Leaves the parent's session and stdio, so that init dying cannot hurt the monitor:
/// a session of its own, stdin from /dev/null, stdout and stderr appended to `log`
/// (the instance's monitor.log). Every redirection is checked.
pub fn detach(log: &Path) -> Result<(), ProcessError> {
    // Already a session leader when init spawned us so: EPERM is fine.
    let _ = nix::unistd::setsid();
    let open = |path: &Path, append: bool| {
        std::fs::OpenOptions::new()
            .read(!append)
            .create(append)
            .append(append)
            .open(path)
            .map_err(|source| ProcessError::Open {
                path: path.to_path_buf(),
                source,
            })
    };
    let null_path = Path::new("/dev/null");
    let null = open(null_path, false)?;
    let out = open(log, true)?;
    let redirect = |stream, path: &Path, result: nix::Result<()>| {
        result.map_err(|source| ProcessError::Redirect {
            stream,
            path: path.to_path_buf(),
            source,
        })
    };
    redirect("stdin", null_path, nix::unistd::dup2_stdin(&null))?;
    redirect("stdout", log, nix::unistd::dup2_stdout(&out))?;
    redirect("stderr", log, nix::unistd::dup2_stderr(&out))?;
    Ok(())
}

/// A monitor's hold on its instance: the lifetime lock, then the socket and the
/// pidfile, taken in that order and given back in reverse by [`Claim::release`].
#[derive(Debug)]
pub struct Claim {
    lock: MonitorLock,
    socket: PathBuf,
    pidfile: PathBuf,
}

impl Claim {
    /// Claims instance `uuid` for this process (its files live in `run_dir`),
    /// returning the socket [`Server`] to serve on. First of all the lock: a live
    /// monitor of the instance keeps it and is never disturbed; whatever else exists
    /// of it then belongs to a dead monitor.
    pub fn take(run_dir: &Path, uuid: &str) -> Result<(Claim, Server), ProcessError> {
        std::fs::create_dir_all(run_dir).map_err(|source| ProcessError::RunDir {
            path: run_dir.to_path_buf(),
            source,
        })?;
        let lock = MonitorLock::take(&crate::lock_path(run_dir, uuid))?;
        let socket = crate::socket_path(run_dir, uuid);
        let server = Server::bind(&socket)?;
        let pidfile = crate::pidfile_path(run_dir, uuid);
        spec::atomic::write_atomic(&pidfile, format!("{}\n", std::process::id()).as_bytes())
            .map_err(|source| ProcessError::Pidfile {
                path: pidfile.clone(),
                source,
            })?;
        Ok((
            Claim {
                lock,
                socket,
                pidfile,
            },
            server,
        ))
    }

    /// The pid in instance `uuid`'s pidfile (in `run_dir`): the monitor that claimed
    /// it, alive or not (ask it on the socket to know).
    pub fn recorded_pid(run_dir: &Path, uuid: &str) -> Option<u32> {
        std::fs::read_to_string(crate::pidfile_path(run_dir, uuid))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Removes the socket and the pidfile, then drops the lock: the next monitor of
    /// the instance finds nothing of this one.
    pub fn release(mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.pidfile);
        self.lock.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_exclusive_and_its_release_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let (claim, server) = Claim::take(&run_dir, "u1").unwrap();
        let pid = std::fs::read_to_string(crate::pidfile_path(&run_dir, "u1")).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        assert_eq!(
            Claim::recorded_pid(&run_dir, "u1"),
            Some(std::process::id())
        );
        let e = Claim::take(&run_dir, "u1").unwrap_err().to_string();
        assert!(
            e.contains("another monitor") && e.contains(pid.trim()),
            "{e}"
        );
        drop(server);
        claim.release();
        let left: Vec<_> = std::fs::read_dir(&run_dir).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(Claim::recorded_pid(&run_dir, "u1"), None);
        let (claim, _server) = Claim::take(&run_dir, "u1").expect("claimed again after release");
        claim.release();
    }

    #[test]
    fn a_bad_config_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, b"{}").unwrap();
        let e = read_config(&path).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("missing field"),
            "{e}"
        );
    }
}
