//! The zone console: a pty whose slave is the zone init's stdio and controlling
//! terminal, and a size-bounded log of everything the zone writes to it.

use crate::error::{Context, Result};
use nix::pty::{openpty, OpenptyResult};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A pty pair for one zone boot.
#[derive(Debug)]
pub struct Pty {
    /// The master the monitor keeps; consoles attach through relays, never to it.
    pub master: OwnedFd,
    /// The slave, given to the zone init.
    pub slave: OwnedFd,
    /// The slave's path on the host, bound at the zone's /dev/console.
    pub slave_path: PathBuf,
}

impl Pty {
    /// Opens a pty whose slave belongs to zone root (host id `owner`), so that the zone
    /// can reopen its /dev/console.
    pub fn open(owner: u32) -> Result<Pty> {
        let OpenptyResult { master, slave } = openpty(None, None).ctx(|| "openpty".into())?;
        let slave_path = fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
            .ctx(|| "naming the pty slave".into())?;
        std::os::unix::fs::chown(&slave_path, Some(owner), Some(owner))
            .ctx(|| format!("chown {}", slave_path.display()))?;
        for fd in [&master, &slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .ctx(|| "pty cloexec".into())?;
        }
        Ok(Pty {
            master,
            slave,
            slave_path,
        })
    }
}

/// Default bound of a console log before it is rotated.
pub const LOG_LIMIT: u64 = 1 << 20;

/// An append-only log that rotates to `<path>.0` when it passes its limit, so a chatty
/// zone holds at most two limits' worth of disk.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    file: File,
    size: u64,
    limit: u64,
}

impl ConsoleLog {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, limit: u64) -> Result<ConsoleLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ctx(|| format!("opening {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(ConsoleLog {
            path: path.to_path_buf(),
            file,
            size,
            limit,
        })
    }

    /// Appends console bytes, rotating first if they would pass the limit.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.size + data.len() as u64 > self.limit && self.size > 0 {
            let old = rotated_path(&self.path);
            fs::rename(&self.path, &old).ctx(|| format!("rotating {}", self.path.display()))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ctx(|| format!("opening {}", self.path.display()))?;
            self.size = 0;
        }
        self.file
            .write_all(data)
            .ctx(|| format!("writing {}", self.path.display()))?;
        self.size += data.len() as u64;
        Ok(())
    }
}

/// `<log>.0`, where the previous part of a rotated log is kept.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".0");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut log = ConsoleLog::open(&p, 100).unwrap();
        for i in 0..50u8 {
            log.write(&[b'a' + i % 26; 10]).unwrap();
        }
        let cur = fs::read(&p).unwrap();
        let old = fs::read(rotated_path(&p)).unwrap();
        assert_eq!((cur.len(), old.len()), (100, 100));
        // The newest bytes are in the current file, the ones before in `.0`.
        assert_eq!(&cur[90..], &[b'a' + 49 % 26; 10]);
        assert_eq!(&old[90..], &[b'a' + 39 % 26; 10]);
    }
}
