//! monitor.log kept bounded. A monitor's stdout and stderr, and those of whatever it
//! starts (the jailed `vmm` process, a zone's setup helpers), are one `O_APPEND` file
//! beside the instance. Lines a guest or a zone can trigger are rate-limited at their
//! source, but a file written by several processes through inherited descriptors
//! cannot be rotated by renaming it (the others would write on into the renamed
//! part), so the monitor bounds it as logrotate's `copytruncate` does: once the file
//! passes [`MONITOR_LOG_MAX`], its last [`MONITOR_LOG_MAX`] bytes are copied to
//! `monitor.log.0` (replacing the previous part) and the file is truncated to zero;
//! every writer, appending, carries on at the new end. Lines written between the copy
//! and the truncation are lost. The monitor checks after each event it handles and at
//! least every [`MONITOR_LOG_CHECK`], so the log holds at most two bounds plus what
//! its writers manage to write in one check interval.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Size past which monitor.log is rotated (1 MiB, like a console log).
pub const MONITOR_LOG_MAX: u64 = 1 << 20;

/// The longest a monitor goes without checking its log's size.
pub const MONITOR_LOG_CHECK: Duration = Duration::from_secs(1);

/// A monitor's log and its bound.
#[derive(Debug, Clone)]
pub struct BoundedMonitorLog {
    path: PathBuf,
    max: u64,
}

/// `<log>.0`: where the previous part of a rotated monitor.log is kept.
pub fn rotated_monitor_log(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".0");
    PathBuf::from(name)
}

impl BoundedMonitorLog {
    /// The log at `path`, bounded to `max` bytes (and as much again in `<path>.0`).
    pub fn new(path: PathBuf, max: u64) -> BoundedMonitorLog {
        BoundedMonitorLog { path, max }
    }

    /// Rotates the log when it has passed its bound; returns whether it did. A
    /// missing log is nothing to bound.
    pub fn enforce(&self) -> io::Result<bool> {
        let len = match fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if len <= self.max {
            return Ok(false);
        }
        let mut log = File::open(&self.path)?;
        log.seek(SeekFrom::Start(len - self.max))?;
        let old = rotated_monitor_log(&self.path);
        let mut tmp_name = old.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        io::copy(&mut log.take(self.max), &mut File::create(&tmp)?)?;
        fs::rename(&tmp, &old)?;
        OpenOptions::new()
            .write(true)
            .open(&self.path)?
            .set_len(0)?;
        Ok(true)
    }

    /// Runs [`BoundedMonitorLog::enforce`] every [`MONITOR_LOG_CHECK`] on a thread of
    /// its own, for a monitor whose threads block elsewhere (the vmm's). A failure is
    /// said once, in the log itself.
    pub fn enforce_in_background(self) {
        std::thread::spawn(move || {
            let mut said = false;
            loop {
                if let Err(e) = self.enforce() {
                    if !said {
                        eprintln!("bounding {}: {e}", self.path.display());
                        said = true;
                    }
                }
                std::thread::sleep(MONITOR_LOG_CHECK);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn past_its_bound_the_newest_bytes_move_to_the_old_part_and_the_log_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor.log");
        let bound = BoundedMonitorLog::new(path.clone(), 100);
        assert!(!bound.enforce().unwrap(), "no log yet");
        let mut writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        writer.write_all(&[b'a'; 100]).unwrap();
        assert!(!bound.enforce().unwrap(), "at the bound");
        writer.write_all(&[b'b'; 50]).unwrap();
        assert!(bound.enforce().unwrap());
        let old = fs::read(rotated_monitor_log(&path)).unwrap();
        assert_eq!(old.len(), 100);
        assert_eq!(&old[50..], &[b'b'; 50]);
        // The writer's descriptor appends at the new end, not at its old offset.
        writer.write_all(b"next\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"next\n");
    }
}
