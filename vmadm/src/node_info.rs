//! What the node is and has: identity and hardware for `sysinfo` (SmartOS's key names
//! where one applies), and the node-wide counters the metrics server exports. Read
//! from /proc and /sys on every call, each file capped in size.

use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Most a /proc or /sys file is read to (a big /proc/cpuinfo is ~100 KiB per 64 CPUs).
const READ_LIMIT: u64 = 1 << 20;

/// Why a node fact could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", .path.display())]
pub struct FactError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Reads a file of /proc or /sys, at most [`READ_LIMIT`] bytes.
pub fn read_capped(path: impl AsRef<Path>) -> Result<String, FactError> {
    let path = path.as_ref();
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(READ_LIMIT).read_to_string(&mut text))
        .map_err(|source| FactError {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(text)
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    read_capped(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Memory from /proc/meminfo, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// MemTotal.
    pub total: u64,
    /// MemAvailable.
    pub available: u64,
}

/// Parses /proc/meminfo.
pub fn parse_meminfo(text: &str) -> Memory {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            * 1024
    };
    Memory {
        total: kib("MemTotal:"),
        available: kib("MemAvailable:"),
    }
}

/// The node's memory.
pub fn memory() -> Result<Memory, FactError> {
    read_capped("/proc/meminfo").map(|t| parse_meminfo(&t))
}

/// The aggregate `cpu` line of /proc/stat in seconds per mode, and `btime`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CpuTimes {
    /// (mode, seconds) in /proc/stat's order: user, nice, system, idle, iowait, irq,
    /// softirq, steal.
    pub modes: Vec<(&'static str, f64)>,
    /// Boot time, Unix seconds.
    pub boot_time: u64,
}

/// Parses /proc/stat (USER_HZ is 100 on every Linux architecture skerry runs on).
pub fn parse_stat(text: &str) -> CpuTimes {
    const MODES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    const USER_HZ: f64 = 100.0;
    let mut out = CpuTimes::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            out.modes = MODES
                .iter()
                .zip(rest.split_whitespace())
                .filter_map(|(m, v)| Some((*m, v.parse::<u64>().ok()? as f64 / USER_HZ)))
                .collect();
        } else if let Some(b) = line.strip_prefix("btime ") {
            out.boot_time = b.trim().parse().unwrap_or(0);
        }
    }
    out
}

/// CPU times and boot time.
pub fn cpu_times() -> Result<CpuTimes, FactError> {
    read_capped("/proc/stat").map(|t| parse_stat(&t))
}

/// What /proc/cpuinfo says about the CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cpus {
    /// Logical CPUs.
    pub total: u32,
    /// Distinct sockets (`physical id`), at least 1.
    pub sockets: u32,
    /// The first `model name`.
    pub model: String,
    /// `vmx`, `svm` or `none`.
    pub virtualization: &'static str,
}

/// Parses /proc/cpuinfo.
pub fn parse_cpuinfo(text: &str) -> Cpus {
    let mut c = Cpus {
        virtualization: "none",
        ..Cpus::default()
    };
    let mut sockets = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => c.total += 1,
            "physical id" => {
                sockets.insert(v.to_string());
            }
            "model name" if c.model.is_empty() => c.model = v.to_string(),
            "flags" if c.virtualization == "none" => {
                let flags: Vec<&str> = v.split_whitespace().collect();
                if flags.contains(&"vmx") {
                    c.virtualization = "vmx";
                } else if flags.contains(&"svm") {
                    c.virtualization = "svm";
                }
            }
            _ => {}
        }
    }
    c.sockets = (sockets.len() as u32).max(1);
    c
}

/// The node's UUID: SMBIOS's (as SmartOS reports it), else the machine id written as
/// a UUID, else empty.
pub fn node_uuid() -> String {
    if let Some(u) = read_trimmed("/sys/class/dmi/id/product_uuid") {
        return u.to_lowercase();
    }
    match read_trimmed("/etc/machine-id") {
        Some(id) if id.len() == 32 => format!(
            "{}-{}-{}-{}-{}",
            &id[0..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..32]
        ),
        _ => String::new(),
    }
}

/// The node's hostname.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// Physical network interfaces (those with a device behind them), SmartOS style:
/// `{"eth0": {"MAC Address": ..., "ip4addr": ..., "Link Status": "up"}}`. A port
/// enslaved to a bridge reports the bridge's address, where the node's address lives.
pub fn network_interfaces() -> Map<String, Value> {
    let mut addrs: std::collections::BTreeMap<String, String> = Default::default();
    if let Ok(ifs) = nix::ifaddrs::getifaddrs() {
        for i in ifs {
            if let Some(a) = i.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
                addrs.entry(i.interface_name).or_insert(a.ip().to_string());
            }
        }
    }
    let mut out = Map::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    let mut names: Vec<String> = dir
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let sys = Path::new("/sys/class/net").join(&name);
        let master = std::fs::read_link(sys.join("master"))
            .ok()
            .and_then(|p| p.file_name()?.to_str().map(str::to_string));
        let ip = addrs
            .get(&name)
            .or_else(|| master.as_ref().and_then(|m| addrs.get(m)))
            .cloned()
            .unwrap_or_default();
        let mut nic = json!({
            "MAC Address": read_trimmed(sys.join("address")).unwrap_or_default(),
            "ip4addr": ip,
            "Link Status": read_trimmed(sys.join("operstate")).unwrap_or_else(|| "unknown".into()),
        });
        if let Some(m) = master {
            nic["Bridge"] = Value::String(m);
        }
        out.insert(name, nic);
    }
    out
}

/// `sysinfo`: the node as JSON, with SmartOS's key names where one applies.
pub fn sysinfo() -> Value {
    let cpus = read_capped("/proc/cpuinfo")
        .map(|t| parse_cpuinfo(&t))
        .unwrap_or_default();
    let mem = memory().unwrap_or_default();
    let times = cpu_times().unwrap_or_default();
    let dmi = |f: &str| read_trimmed(Path::new("/sys/class/dmi/id").join(f)).unwrap_or_default();
    let uname = nix::sys::utsname::uname().ok();
    let release = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    json!({
        "UUID": node_uuid(),
        "Hostname": hostname(),
        "System Type": "Linux",
        "Kernel Version": release,
        "Skerry Version": env!("CARGO_PKG_VERSION"),
        "Boot Time": times.boot_time.to_string(),
        "Manufacturer": dmi("sys_vendor"),
        "Product": dmi("product_name"),
        "Serial Number": dmi("product_serial"),
        "CPU Type": cpus.model,
        "CPU Virtualization": cpus.virtualization,
        "CPU Physical Cores": cpus.sockets,
        "CPU Total Cores": cpus.total,
        "MiB of Memory": (mem.total >> 20).to_string(),
        "Network Interfaces": Value::Object(network_interfaces()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let m = parse_meminfo("MemTotal:       2048 kB\nMemFree: 1 kB\nMemAvailable:   1024 kB\n");
        assert_eq!(
            m,
            Memory {
                total: 2 << 20,
                available: 1 << 20
            }
        );
        let s = parse_stat("cpu  100 0 50 1000 0 0 0 0 0 0\ncpu0 1 2 3\nbtime 1700000000\n");
        assert_eq!(s.boot_time, 1_700_000_000);
        assert_eq!(s.modes[0], ("user", 1.0));
        assert_eq!(s.modes[3], ("idle", 10.0));
        let c = parse_cpuinfo(
            "processor\t: 0\nphysical id\t: 0\nmodel name\t: Test CPU\nflags\t: fpu svm\n\n\
             processor\t: 1\nphysical id\t: 0\nmodel name\t: Test CPU\nflags\t: fpu svm\n",
        );
        assert_eq!((c.total, c.sockets, c.virtualization), (2, 1, "svm"));
        assert_eq!(c.model, "Test CPU");
    }

    #[test]
    fn sysinfo_has_smartos_keys_with_this_hosts_values() {
        let v = sysinfo();
        for key in [
            "UUID",
            "Hostname",
            "CPU Total Cores",
            "MiB of Memory",
            "Network Interfaces",
            "Boot Time",
            "Skerry Version",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        let cores = std::thread::available_parallelism().unwrap().get() as u64;
        assert!(v["CPU Total Cores"].as_u64().unwrap() >= cores);
        assert!(v["MiB of Memory"].as_str().unwrap().parse::<u64>().unwrap() > 0);
        assert_eq!(v["Hostname"], hostname());
    }
}
