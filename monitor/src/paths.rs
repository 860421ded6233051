//! Where a monitor's files live, and the host-side names of an instance's nics.

use spec::pool::instance_dir;
use std::path::{Path, PathBuf};

/// Default directory for monitor sockets and pidfiles (`--run-dir` overrides).
pub const DEFAULT_RUN_DIR: &str = "/run/skerry";

/// `<run_dir>/<uuid>.sock`: the monitor's socket.
pub fn socket_path(run_dir: &Path, uuid: &str) -> PathBuf {
    run_dir.join(format!("{uuid}.sock"))
}

/// `<run_dir>/<uuid>.lock`: a monitor (zone or vmm) holds an exclusive `flock` on it
/// for its whole life (the kernel drops it however the monitor ends), see
/// [`crate::MonitorLock`]. A monitor that cannot take it refuses to start, before it
/// touches anything of the instance: the holder is alive and owns the instance. Only
/// the lock holder may clean up what a killed predecessor left behind.
pub fn lock_path(run_dir: &Path, uuid: &str) -> PathBuf {
    run_dir.join(format!("{uuid}.lock"))
}

/// `<run_dir>/<uuid>.pid`.
pub fn pidfile_path(run_dir: &Path, uuid: &str) -> PathBuf {
    run_dir.join(format!("{uuid}.pid"))
}

/// `<pool>/<uuid>/config.json`.
pub fn config_path(pool: &Path, uuid: &str) -> PathBuf {
    instance_dir(pool, uuid).join("config.json")
}

/// `<pool>/<uuid>/metadata.json`: the guest's writes to its customer metadata (the
/// `mdata` store), kept by the instance's monitor, written atomically.
pub fn metadata_path(pool: &Path, uuid: &str) -> PathBuf {
    instance_dir(pool, uuid).join("metadata.json")
}

/// `<run_dir>/<uuid>.zonecontrol/`: the directory a zone monitor bind-mounts
/// read-only at `/native/.zonecontrol` in its zone; it holds [`METADATA_SOCKET`].
pub fn zonecontrol_dir(run_dir: &Path, uuid: &str) -> PathBuf {
    run_dir.join(format!("{uuid}.zonecontrol"))
}

/// The name of the zone's metadata socket in [`zonecontrol_dir`]: the zone reaches it
/// as `/native/.zonecontrol/metadata.sock`, where SmartOS lx zones have it.
pub const METADATA_SOCKET: &str = "metadata.sock";

/// `<pool>/<uuid>/monitor.json`: the monitor's status file, see [`crate::StatusFile`].
pub fn status_path(pool: &Path, uuid: &str) -> PathBuf {
    instance_dir(pool, uuid).join("monitor.json")
}

/// `<pool>/<uuid>/monitor.log`: the monitor's own stdout and stderr.
pub fn monitor_log_path(pool: &Path, uuid: &str) -> PathBuf {
    instance_dir(pool, uuid).join("monitor.log")
}

/// `<pool>/<uuid>/disks/<name>.raw`: an HVM instance's disk files. init creates them
/// while provisioning (the boot disk cloned from the image and grown to its size, the
/// others blank and sparse); the VMM only opens them.
pub fn disk_path(pool: &Path, uuid: &str, disk: &str) -> PathBuf {
    instance_dir(pool, uuid)
        .join("disks")
        .join(format!("{disk}.raw"))
}

/// `<pool>/<uuid>/console.log`: the bounded console log the monitor keeps.
pub fn console_log_path(pool: &Path, uuid: &str) -> PathBuf {
    instance_dir(pool, uuid).join("console.log")
}

/// The cgroup (under `skerry/`) a zone runs in: `<uuid>`. The zone runtime creates it
/// by this name; init reads the zone's usage from it.
pub fn zone_cgroup_name(uuid: &str) -> String {
    uuid.to_string()
}

/// The cgroup (under `skerry/`) a guest's VMM runs in: `vmm-<uuid>`. The vmm jail
/// creates it by this name; init reads the guest's usage from it.
pub fn vmm_cgroup_name(uuid: &str) -> String {
    format!("vmm-{uuid}")
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

/// Whether `name` is an instance's host-side nic ([`host_ifname`]'s shape), as
/// opposed to an uplink or anything else plugged into a node bridge.
pub fn is_host_ifname(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("sk") else {
        return false;
    };
    let Some((hex, index)) = rest.split_once('n') else {
        return false;
    };
    hex.len() == 8
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
}
