//! host::cgroup on this host's real hierarchy, as root (cgroup v1 on this hybrid
//! host, v2 on a node; the v2 limit files are unit-tested on a fake tree).

use host::cgroup::{Hierarchy, Limits};
use std::process::Command;

#[test]
fn a_cgroup_is_created_limited_joined_and_removed_with_its_processes() {
    assert!(nix::unistd::getuid().is_root(), "cgroup tests need root");
    let h = Hierarchy::detect().unwrap();
    let name = format!("skhost-test-{}", std::process::id());
    let cg = h.create(&name).unwrap();
    assert!(h.existing(&name).is_some());
    cg.set_limits(&Limits {
        memory: Some(64 << 20),
        cpu_cap: 50,
        pids: Some(16),
    })
    .unwrap();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    cg.add_process(pid).unwrap();
    assert_eq!(cg.processes().unwrap(), vec![pid]);
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains(&format!("skerry/{name}")), "{own}");
    let memory_line = own
        .lines()
        .find(|l| l.contains("memory") || l.starts_with("0::"))
        .unwrap();
    assert!(memory_line.ends_with(&format!("skerry/{name}")), "{own}");
    let _ = cg.cpu_usage_usec().unwrap();

    cg.remove().unwrap();
    // The process was killed, not left running outside any limit.
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(h.existing(&name).is_none(), "{}", cg.describe());
    assert!(h.remove_stale(&name).unwrap().is_none());
}

#[test]
fn a_stale_cgroup_is_found_by_name_and_removed() {
    assert!(nix::unistd::getuid().is_root(), "cgroup tests need root");
    let h = Hierarchy::detect().unwrap();
    let name = format!("skhost-stale-{}", std::process::id());
    let cg = h.create(&name).unwrap();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    cg.add_process(child.id() as i32).unwrap();
    drop(cg);
    let stale = h.remove_stale(&name).unwrap().expect("found again by name");
    assert_eq!(stale.killed, vec![child.id() as i32]);
    assert!(stale.cgroup.contains(&name), "{}", stale.cgroup);
    child.wait().unwrap();
    assert!(h.existing(&name).is_none());
}
