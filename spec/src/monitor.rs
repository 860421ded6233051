//! The contract between init and the per-instance monitor processes (`zone`, `vmm`).
//!
//! init prepares `<pool>/<uuid>/` and writes [`InstanceConfig`] to
//! `<pool>/<uuid>/config.json` (atomically), then spawns, in a new session:
//!
//! - `zone monitor --config <pool>/<uuid>/config.json` for a zone,
//! - `vmm instance --config <pool>/<uuid>/config.json` for an HVM instance.
//!
//! The monitor writes its pid to [`pidfile_path`] and listens on [`socket_path`]; it
//! keeps [`MonitorStatus`] in `<pool>/<uuid>/monitor.json` (atomically) on every change.
//! Requests on the socket are one JSON [`MonitorRequest`] per line; each gets one JSON
//! [`MonitorResponse`] line. For `Console`, the response is sent with the console fd
//! attached as SCM_RIGHTS ancillary data: a pty master (the VMM's serial), or one end
//! of a stream socket the monitor relays to the instance's pty (zones), so that the
//! monitor's console log and every attached client see all of the output.
//!
//! A zone's console relay carries raw bytes both ways. A client that wants to pass its
//! terminal's window size switches its own direction (client to zone) to frames by
//! sending [`CONSOLE_FRAMED`] as its very first bytes; a client that does not stays
//! raw (compatible with clients that predate frames). A frame is one type byte, a
//! big-endian `u16` payload length and the payload: [`FRAME_DATA`] (bytes for the
//! console), [`FRAME_WINSIZE`] (rows and columns, big-endian `u16` each; the monitor
//! sets them on the zone's pty, which sends the zone's foreground job SIGWINCH).
//! Frames of other types are skipped. Output (zone to client) stays raw. A client sends
//! a size frame at attach and on every SIGWINCH: see [`console_frame`].
//!
//! The monitor exits when the instance has stopped for good (stop request, or init exit
//! without restart) with: 0 = clean stop/power-off, 3 = the instance asked to reboot
//! (the monitor restarts it itself unless told to stop), 1 = failure (reason in
//! monitor.json). It never depends on init staying alive: if init dies, it keeps
//! running and a restarted init re-adopts it through the socket.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default directory for monitor sockets and pidfiles (`--run-dir` overrides).
pub const DEFAULT_RUN_DIR: &str = "/run/skerry";

/// Everything a monitor needs to run one instance; written by init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceConfig {
    /// Instance UUID (directory name in the pool).
    pub uuid: String,
    /// The pool root (`/zones`).
    pub pool: PathBuf,
    /// Where sockets and pidfiles live ([`DEFAULT_RUN_DIR`] on a node).
    pub run_dir: PathBuf,
    /// The spec, defaults applied.
    pub spec: crate::InstanceSpec,
    /// Zone: the image's unpacked rootfs (overlay lower). HVM: the image's raw disk file.
    pub image_path: PathBuf,
    /// Zone: first host uid/gid of the zone's 65536-id range (zone root maps here).
    pub id_range_start: u32,
    /// Node bridge for each nic tag used by this instance (tag -> bridge name).
    pub bridges: std::collections::BTreeMap<String, String>,
}

/// A request on the monitor socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum MonitorRequest {
    /// Report [`MonitorStatus`].
    Status,
    /// Stop the instance: graceful (the zone init's power-off request: runlevel 0 on
    /// /run/initctl, SIGUSR2, SIGRTMIN+4 or SIGTERM; the HVM guest's ACPI power
    /// button), then forced after
    /// `timeout_secs`; `force` skips the graceful part. The monitor exits afterwards.
    Stop {
        /// Kill at once.
        force: bool,
        /// Grace period.
        timeout_secs: u32,
    },
    /// Stop then start again, in the same monitor.
    Reboot {
        /// Kill at once instead of a graceful stop.
        force: bool,
    },
    /// Hand over the console (pty master / serial) as an fd.
    Console,
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, or a note.
    #[serde(default)]
    pub message: String,
    /// For `Status`.
    #[serde(default)]
    pub status: Option<MonitorStatus>,
}

/// What a monitor reports about its instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStatus {
    /// Monitor pid.
    pub pid: u32,
    /// `provisioning`, `running`, `stopping`, `stopped`, `failed` (see [`crate::api::states`]).
    pub state: String,
    /// Pid of the zone's init / the VMM's guest process, when running.
    pub instance_pid: Option<u32>,
    /// Unix time (seconds) the instance last started.
    pub started_at: Option<u64>,
    /// Last exit or failure reason.
    #[serde(default)]
    pub reason: String,
    /// Free-form details for `vmadm info` (limits, devices, cgroup path, ...).
    #[serde(default)]
    pub details: std::collections::BTreeMap<String, String>,
}

/// `<run_dir>/<uuid>.sock`.
pub fn socket_path(run_dir: &Path, uuid: &str) -> PathBuf {
    run_dir.join(format!("{uuid}.sock"))
}

/// First bytes a console client sends to switch its direction of a zone's console relay
/// to frames (see the module doc). It starts with a NUL byte, which no raw client sends
/// first but the rarest of typists.
pub const CONSOLE_FRAMED: &[u8] = b"\0skerry-console-frames-1\n";
/// Frame type: console input bytes.
pub const FRAME_DATA: u8 = b'd';
/// Frame type: window size, rows then columns, big-endian `u16` each.
pub const FRAME_WINSIZE: u8 = b'w';

/// Encodes one console frame; payloads longer than `u16::MAX` are split over frames.
pub fn console_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    let mut chunks = payload.chunks(u16::MAX as usize).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[kind, 0, 0]);
    }
    for chunk in chunks {
        out.push(kind);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// The [`FRAME_WINSIZE`] frame for a `rows` x `cols` terminal.
pub fn winsize_frame(rows: u16, cols: u16) -> Vec<u8> {
    let mut payload = rows.to_be_bytes().to_vec();
    payload.extend_from_slice(&cols.to_be_bytes());
    console_frame(FRAME_WINSIZE, &payload)
}

/// `<run_dir>/<uuid>.lock`: a monitor (zone or vmm) holds an exclusive `flock` on it
/// for its whole life (the kernel drops it however the monitor ends), see
/// [`MonitorLock`]. A monitor that cannot take it refuses to start, before it touches
/// anything of the instance: the holder is alive and owns the instance. Only the lock
/// holder may clean up what a killed predecessor left behind.
pub fn lock_path(run_dir: &Path, uuid: &str) -> PathBuf {
    run_dir.join(format!("{uuid}.lock"))
}

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

/// The exclusive lock on [`lock_path`] a monitor holds for its life.
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

/// `<run_dir>/<uuid>.pid`.
pub fn pidfile_path(run_dir: &Path, uuid: &str) -> PathBuf {
    run_dir.join(format!("{uuid}.pid"))
}

/// `<pool>/<uuid>/config.json`.
pub fn config_path(pool: &Path, uuid: &str) -> PathBuf {
    pool.join(uuid).join("config.json")
}

/// `<pool>/<uuid>/metadata.json`: the guest's writes to its metadata (the `mdata`
/// store), kept by the instance's monitor.
pub fn metadata_path(pool: &Path, uuid: &str) -> PathBuf {
    pool.join(uuid).join("metadata.json")
}

/// `<pool>/<uuid>/monitor.json`.
pub fn status_path(pool: &Path, uuid: &str) -> PathBuf {
    pool.join(uuid).join("monitor.json")
}

/// `<pool>/<uuid>/disks/<name>.raw`: an HVM instance's disk files. init creates them
/// while provisioning (the boot disk cloned from the image and grown to its size, the
/// others blank and sparse); the VMM only opens them.
pub fn disk_path(pool: &Path, uuid: &str, disk: &str) -> PathBuf {
    pool.join(uuid).join("disks").join(format!("{disk}.raw"))
}

/// `<pool>/<uuid>/console.log`: the bounded console log the monitor keeps.
pub fn console_log_path(pool: &Path, uuid: &str) -> PathBuf {
    pool.join(uuid).join("console.log")
}

/// The node bridge a nic tag maps to when node.kdl does not name one: `sk-<tag>`,
/// cut to the 15 bytes Linux allows for an interface name.
pub fn default_bridge_name(tag: &str) -> String {
    let mut name = format!("sk-{tag}");
    name.truncate(15);
    name
}

/// Host-side name of an instance's nic (veth end or tap): `sk` + the first 8 hex digits
/// of the UUID + the nic index, 13 bytes at most, unique per instance and nic.
pub fn host_ifname(uuid: &str, nic_index: usize) -> String {
    let hex: String = uuid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    format!("sk{hex}n{nic_index}")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn frames_carry_type_length_and_split_long_payloads() {
        assert_eq!(console_frame(FRAME_DATA, b"ls\r"), b"d\0\x03ls\r");
        assert_eq!(console_frame(FRAME_DATA, b""), b"d\0\0");
        assert_eq!(winsize_frame(40, 132), [b'w', 0, 4, 0, 40, 0, 132]);
        let long = vec![b'x'; 70_000];
        let f = console_frame(FRAME_DATA, &long);
        assert_eq!(f.len(), 70_000 + 6);
        assert_eq!(&f[..3], &[b'd', 0xff, 0xff]);
        assert_eq!(&f[3 + 65535..3 + 65535 + 3], &[b'd', 0x11, 0x71]);
    }
}
