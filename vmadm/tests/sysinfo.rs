//! `sysinfo` on this host: SmartOS's keys, with the values the host's own tools give.

use serde_json::Value;
use std::process::Command;

fn sysinfo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sysinfo"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn sysinfo_reports_this_host_under_smartos_keys() {
    let out = sysinfo(&[]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(v["Hostname"], hostname.trim());
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as u64;
    assert_eq!(v["CPU Total Cores"], cpus);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(v["MiB of Memory"], (mem_kib / 1024).to_string());
    let btime = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime ").map(str::to_string))
        .unwrap();
    assert_eq!(v["Boot Time"], btime);
    assert_eq!(v["Skerry Version"], env!("CARGO_PKG_VERSION"));
    let uuid = v["UUID"].as_str().unwrap();
    assert_eq!(uuid.len(), 36, "{uuid}");
    // Every physical nic of this host, with its MAC.
    let nics = v["Network Interfaces"].as_object().unwrap();
    for e in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
        if e.path().join("device").exists() {
            let name = e.file_name().into_string().unwrap();
            let mac = std::fs::read_to_string(e.path().join("address")).unwrap();
            assert_eq!(nics[&name]["MAC Address"], mac.trim(), "{name}");
        }
    }
}

#[test]
fn sysinfo_refuses_arguments_it_does_not_know() {
    let out = sysinfo(&["-x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '-x'"));
}
