//! A zone's cgroup v2 limits shown enforced on a booted node: the limit files read
//! there match the manifest, an allocation past `memory` is OOM-killed, a fork past
//! `pids` is refused and a busy loop past `cpu-cap` is throttled. The host tests may
//! run on cgroup v1; the node always runs v2. Every probe also runs in a zone with the
//! defaults (256M, 2000 tasks, no cap), where it must succeed: the same run shows that
//! each check fails when its limit is not there.

use super::{sh, SHELL};
use e2e::node::Node;
use std::time::Duration;

/// What the `capped` zone's manifest asks for (see its manifest in node.rs).
pub const MEMORY_BYTES: u64 = 48 << 20;
/// `pids` in the manifest.
pub const PIDS: u64 = 24;
/// `cpu-cap` in the manifest: percent of one CPU.
pub const CPU_CAP: u64 = 20;

/// The default-limits zone's manifest: an init that waits without forking.
pub const ROOMY: &str = "zone roomy {\n    image \"busybox@1.36\"\n    init \"/bin/sh\" \"-c\" \
                         \"trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done\"\n}\n";

/// A zone to probe: its alias, its cgroup directory on the node, and whether it has
/// the limits above (else the defaults).
pub struct Probed<'a> {
    /// The alias, for zlogin.
    pub alias: &'a str,
    /// `/sys/fs/cgroup/skerry/<uuid>`.
    pub cgroup: String,
    /// `capped`'s limits (true) or the defaults (false).
    pub limited: bool,
}

impl<'a> Probed<'a> {
    /// The zone `alias` whose uuid is `uuid`.
    pub fn new(alias: &'a str, uuid: &str, limited: bool) -> Probed<'a> {
        Probed {
            alias,
            cgroup: format!("/sys/fs/cgroup/skerry/{}", uuid.trim()),
            limited,
        }
    }
}

/// The sum of the `key value` lines of the cgroup files `paths` (a shell word list:
/// globs allowed) on the node.
fn counter(node: &mut Node, paths: &str, key: &str) -> u64 {
    let out = sh(node, &format!("cat {paths}"), SHELL);
    let values: Vec<u64> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key} ")))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert!(!values.is_empty(), "{paths} have no `{key}`:\n{out}");
    values.iter().sum()
}

/// Runs every check on `z`.
pub fn check(node: &mut Node, z: &Probed) {
    limit_files(node, z);
    memory(node, z);
    cpu(node, z);
    pids(node, z);
}

fn limit_files(node: &mut Node, z: &Probed) {
    let cg = &z.cgroup;
    let files = sh(
        node,
        &format!("cat {cg}/memory.max {cg}/pids.max {cg}/cpu.max"),
        SHELL,
    );
    let lines: Vec<&str> = files.lines().map(str::trim).collect();
    let want = if z.limited {
        [
            MEMORY_BYTES.to_string(),
            PIDS.to_string(),
            format!("{} 100000", CPU_CAP * 1000),
        ]
    } else {
        [
            (256u64 << 20).to_string(),
            "2000".into(),
            "max 100000".into(),
        ]
    };
    assert_eq!(lines, want, "{cg}'s memory.max, pids.max, cpu.max");
}

/// busybox awk doubles a string to 64 MiB (96 MiB at the last step): past `memory`
/// the cgroup's OOM killer ends it (SIGKILL: zlogin exits 128 + 9) and memory.events
/// counts the kill; within the default 256M it ends normally.
fn memory(node: &mut Node, z: &Probed) {
    let events = format!("{}/memory.events", z.cgroup);
    let kills = counter(node, &events, "oom_kill");
    let (out, rc) = node
        .shell(
            &format!(
                "zlogin {} awk 'BEGIN {{ s = \"x\"; while (length(s) < 67108864) s = s s; \
                 print \"grew\" }}'",
                z.alias
            ),
            Duration::from_secs(120),
        )
        .expect("zlogin awk");
    let after = counter(node, &events, "oom_kill");
    if z.limited {
        assert_eq!(
            rc, 137,
            "96M past memory {MEMORY_BYTES} was not killed:\n{out}"
        );
        assert!(after > kills, "memory.events oom_kill {kills} -> {after}");
    } else {
        assert!(
            rc == 0 && out.contains("grew"),
            "96M in 256M: rc {rc}\n{out}"
        );
        assert_eq!(after, kills, "an OOM kill within the default memory");
    }
}

/// A 3 s busy loop: under the cap it is throttled and the zone's CPU time stays
/// within CPU_CAP% of the wall time the zlogin took (zlogin itself included; the
/// node is a loaded TCG guest, so the wall time is measured, not assumed); without
/// a cap it takes more and is never throttled.
fn cpu(node: &mut Node, z: &Probed) {
    let stat = format!("{}/cpu.stat", z.cgroup);
    let throttled = counter(node, &stat, "nr_throttled");
    let used = counter(node, &stat, "usage_usec");
    let out = sh(
        node,
        &format!(
            "a=$(cut -d' ' -f1 /proc/uptime); \
             zlogin {} sh -c 'sh -c \"while :; do :; done\" & sleep 3; kill $!'; \
             echo wall $a $(cut -d' ' -f1 /proc/uptime)",
            z.alias
        ),
        SHELL,
    );
    let wall: Vec<f64> = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("wall "))
        .map(|w| {
            w.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(wall.len(), 2, "no wall time in:\n{out}");
    let wall_us = (wall[1] - wall[0]) * 1e6;
    let throttled_after = counter(node, &stat, "nr_throttled");
    let busy = (counter(node, &stat, "usage_usec") - used) as f64;
    // A quarter above the cap, plus one period, for what accounting rounds.
    let bound = wall_us * CPU_CAP as f64 / 100.0 * 1.25 + 100_000.0;
    let seen = format!(
        "{}: {busy} us of CPU in {wall_us} us, nr_throttled {throttled} -> {throttled_after}",
        z.alias
    );
    if z.limited {
        assert!(
            throttled_after > throttled + 5,
            "not throttled under cpu-cap: {seen}"
        );
        assert!(busy <= bound, "more than cpu-cap {CPU_CAP}: {seen}");
    } else {
        assert_eq!(
            throttled_after, throttled,
            "throttled without a cap: {seen}"
        );
        assert!(
            busy > bound,
            "an uncapped busy loop stayed under the cap: {seen}"
        );
    }
}

/// PIDS forks in the zone: past `pids` they fail (ash: "can't fork") and pids.events
/// counts the refusals. The node's kernel (6.1) counts a refusal in the forking task's
/// cgroup (capped's own init.scope below its cgroup), so the subtree is summed. The
/// sleeps end by themselves.
fn pids(node: &mut Node, z: &Probed) {
    let cg = &z.cgroup;
    let events = format!("$(find {cg} -name pids.events)");
    let refused = counter(node, &events, "max");
    let (out, _) = node
        .shell(
            &format!(
                "zlogin {} sh -c 'i=0; while [ $i -lt {PIDS} ]; do sleep 5 & i=$((i+1)); done; \
                 echo forked-all' 2>&1",
                z.alias
            ),
            SHELL,
        )
        .expect("zlogin fork loop");
    let refused_after = counter(node, &events, "max");
    if z.limited {
        assert!(
            out.contains("can't fork"),
            "{PIDS} forks under pids {PIDS}:\n{out}"
        );
        assert!(
            refused_after > refused,
            "pids.events max {refused} -> {refused_after}"
        );
    } else {
        assert!(
            out.contains("forked-all") && !out.contains("can't fork"),
            "{out}"
        );
        assert_eq!(refused_after, refused, "pids.events max without a limit");
    }
    // The zone's init is still there once the sleeps have ended.
    sh(node, &format!("sleep 6; zlogin {} true", z.alias), SHELL);
}
