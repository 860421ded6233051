//! A zone's cgroup v2 limits shown enforced on a booted node: the limit files read
//! there match the manifest, an allocation past `memory` is OOM-killed, a fork past
//! `pids` is refused and a busy loop past `cpu-cap` is throttled. The host tests may
//! run on cgroup v1; the node always runs v2.

use super::{sh, SHELL};
use e2e::node::Node;
use std::time::Duration;

/// What the `capped` zone's manifest asks for (see `CAPPED` in node.rs).
pub const MEMORY_BYTES: u64 = 48 << 20;
/// `pids` in the manifest.
pub const PIDS: u64 = 24;
/// `cpu-cap` in the manifest: percent of one CPU.
pub const CPU_CAP: u64 = 20;

/// One counter (`key value` line) of a cgroup `*.events`/`*.stat` file on the node.
fn counter(node: &mut Node, cg: &str, file: &str, key: &str) -> u64 {
    let out = sh(node, &format!("cat {cg}/{file}"), SHELL);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{cg}/{file} has no `{key}`:\n{out}"))
}

/// Runs the checks on the zone `alias` whose cgroup is `/sys/fs/cgroup/skerry/<uuid>`.
pub fn enforced(node: &mut Node, alias: &str, uuid: &str) {
    let cg = format!("/sys/fs/cgroup/skerry/{uuid}");
    let files = sh(
        node,
        &format!("cat {cg}/memory.max {cg}/pids.max {cg}/cpu.max"),
        SHELL,
    );
    let lines: Vec<&str> = files.lines().map(str::trim).collect();
    let cpu_max = format!("{} 100000", CPU_CAP * 1000);
    assert_eq!(
        lines,
        [
            MEMORY_BYTES.to_string().as_str(),
            PIDS.to_string().as_str(),
            cpu_max.as_str()
        ],
        "{cg}'s memory.max, pids.max, cpu.max do not say what the manifest asks"
    );

    // memory: busybox awk doubles a string until the cgroup's OOM killer ends it
    // (SIGKILL: zlogin exits 128 + 9); memory.events counts the kill.
    let kills = counter(node, &cg, "memory.events", "oom_kill");
    let (out, rc) = node
        .shell(
            &format!("zlogin {alias} awk 'BEGIN {{ s = \"x\"; while (1) s = s s }}'"),
            Duration::from_secs(120),
        )
        .expect("zlogin awk");
    assert_eq!(
        rc, 137,
        "an allocation past memory {MEMORY_BYTES} was not killed:\n{out}"
    );
    let after = counter(node, &cg, "memory.events", "oom_kill");
    assert!(after > kills, "memory.events oom_kill {kills} -> {after}");

    // cpu-cap: a 3 s busy loop runs at most CPU_CAP% of one CPU and is throttled.
    let throttled = counter(node, &cg, "cpu.stat", "nr_throttled");
    let used = counter(node, &cg, "cpu.stat", "usage_usec");
    sh(
        node,
        &format!("zlogin {alias} sh -c 'sh -c \"while :; do :; done\" & sleep 3; kill $!'"),
        SHELL,
    );
    let throttled_after = counter(node, &cg, "cpu.stat", "nr_throttled");
    let used_after = counter(node, &cg, "cpu.stat", "usage_usec");
    assert!(
        throttled_after > throttled + 5,
        "a busy loop under cpu-cap {CPU_CAP} was not throttled: nr_throttled {throttled} -> {throttled_after}"
    );
    // 3 s at 20% is 0.6 s; twice that leaves room for zlogin and sleep themselves.
    let busy = used_after - used;
    assert!(
        busy < 3_000_000 * CPU_CAP * 2 / 100,
        "the zone used {busy} us of CPU in 3 s under cpu-cap {CPU_CAP}"
    );

    // pids: forking PIDS more processes fails inside the zone (ash: "can't fork")
    // and pids.events counts the refusals. The sleeps end by themselves.
    let refused = counter(node, &cg, "pids.events", "max");
    let (out, _) = node
        .shell(
            &format!(
                "zlogin {alias} sh -c 'i=0; while [ $i -lt {PIDS} ]; do sleep 5 & i=$((i+1)); done; echo forked-all' 2>&1"
            ),
            SHELL,
        )
        .expect("zlogin fork loop");
    let refused_after = counter(node, &cg, "pids.events", "max");
    assert!(
        out.contains("can't fork"),
        "{PIDS} forks in a zone with pids {PIDS} all succeeded:\n{out}"
    );
    assert!(
        refused_after > refused,
        "pids.events max {refused} -> {refused_after}"
    );
    // The zone's init is still there once the sleeps have ended.
    sh(node, &format!("sleep 6; zlogin {alias} true"), SHELL);
}
