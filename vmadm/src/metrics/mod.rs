//! The Prometheus endpoint (`skerry-metrics`, started by init when node.kdl says
//! `metrics listen="ADDR:PORT"`): node and per-instance gauges and counters in the
//! text exposition format, named the Prometheus way (`skerry_` prefix, base units,
//! `_total` on counters, `_bytes`/`_seconds` suffixes).
//!
//! It runs outside PID 1, as a client of init's API like vmadm: a bug or a hostile
//! scraper can take down this process, never init. [`render`] is pure; [`server`]
//! holds the bounded HTTP side.

pub mod server;

use crate::node_info::{CpuTimes, Memory};
use spec::api::InstanceUsage;
use spec::State;
use std::fmt::Write as _;

/// What one scrape shows about the node itself.
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    /// Hostname.
    pub hostname: String,
    /// Node UUID.
    pub uuid: String,
    /// Memory.
    pub memory: Memory,
    /// CPU times and boot time.
    pub cpu: CpuTimes,
    /// Logical CPUs.
    pub cpus: u32,
}

/// Escapes a label value: backslash, double quote and newline.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family: HELP, TYPE and its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// The exposition text of one scrape: the node, whether init answered, and every
/// instance init reported (`instances` is `None` when init did not answer).
pub fn render(node: &NodeSample, instances: Option<&[InstanceUsage]>) -> String {
    let mut out = String::new();
    let o = &mut out;
    Family::new(
        o,
        "skerry_node_info",
        "gauge",
        "The node: hostname, UUID and skerry version (always 1).",
    )
    .sample(
        "skerry_node_info",
        &[
            ("hostname", &node.hostname),
            ("uuid", &node.uuid),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );
    Family::new(
        o,
        "skerry_node_boot_time_seconds",
        "gauge",
        "When the node booted, Unix seconds.",
    )
    .sample(
        "skerry_node_boot_time_seconds",
        &[],
        node.cpu.boot_time as f64,
    );
    Family::new(o, "skerry_node_cpus", "gauge", "Logical CPUs of the node.").sample(
        "skerry_node_cpus",
        &[],
        f64::from(node.cpus),
    );
    let mut f = Family::new(
        o,
        "skerry_node_cpu_seconds_total",
        "counter",
        "CPU time the node spent in each mode, summed over CPUs.",
    );
    for (mode, secs) in &node.cpu.modes {
        f.sample("skerry_node_cpu_seconds_total", &[("mode", mode)], *secs);
    }
    Family::new(
        o,
        "skerry_node_memory_total_bytes",
        "gauge",
        "Memory of the node.",
    )
    .sample(
        "skerry_node_memory_total_bytes",
        &[],
        node.memory.total as f64,
    );
    Family::new(
        o,
        "skerry_node_memory_available_bytes",
        "gauge",
        "Memory available for new work without swapping.",
    )
    .sample(
        "skerry_node_memory_available_bytes",
        &[],
        node.memory.available as f64,
    );
    Family::new(
        o,
        "skerry_init_up",
        "gauge",
        "Whether init answered this scrape's Usage call (1) or not (0).",
    )
    .sample(
        "skerry_init_up",
        &[],
        if instances.is_some() { 1.0 } else { 0.0 },
    );
    let rows = instances.unwrap_or(&[]);
    instance_families(o, rows);
    out
}

/// A per-instance family: one sample per instance, labelled name, uuid and type.
fn per_instance(
    out: &mut String,
    rows: &[InstanceUsage],
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&InstanceUsage) -> Option<f64>,
) {
    let mut f = Family::new(out, name, kind, help);
    for u in rows {
        if let Some(v) = value(u) {
            f.sample(
                name,
                &[("name", &u.name), ("uuid", &u.uuid), ("type", &u.kind)],
                v,
            );
        }
    }
}

fn instance_families(o: &mut String, rows: &[InstanceUsage]) {
    let mut f = Family::new(
        o,
        "skerry_instance_state",
        "gauge",
        "The instance's lifecycle state: 1 for the state it is in, 0 for the others.",
    );
    for u in rows {
        for s in State::ALL {
            let on = if u.state == s { 1.0 } else { 0.0 };
            f.sample(
                "skerry_instance_state",
                &[
                    ("name", &u.name),
                    ("uuid", &u.uuid),
                    ("type", &u.kind),
                    ("state", s.as_str()),
                ],
                on,
            );
        }
    }
    per_instance(
        o,
        rows,
        "skerry_instance_memory_bytes",
        "gauge",
        "Memory charged to the instance's cgroup, page cache included.",
        |u| Some(u.memory_bytes as f64),
    );
    per_instance(
        o,
        rows,
        "skerry_instance_memory_limit_bytes",
        "gauge",
        "The instance's memory limit.",
        |u| Some(u.memory_limit_bytes as f64),
    );
    per_instance(
        o,
        rows,
        "skerry_instance_cpu_seconds_total",
        "counter",
        "CPU time the instance used since it last started.",
        |u| Some(u.cpu_usec as f64 / 1e6),
    );
    per_instance(
        o,
        rows,
        "skerry_instance_cpu_cap_ratio",
        "gauge",
        "The instance's CPU cap in CPUs (0: no cap).",
        |u| Some(f64::from(u.cpu_cap) / 100.0),
    );
    per_instance(
        o,
        rows,
        "skerry_instance_tasks",
        "gauge",
        "Tasks (processes and threads) in the instance's cgroup.",
        |u| Some(u.tasks as f64),
    );
    per_instance(
        o,
        rows,
        "skerry_instance_tasks_limit",
        "gauge",
        "The instance's task limit, where it has one.",
        |u| u.tasks_limit.map(|n| n as f64),
    );
    per_instance(
        o,
        rows,
        "skerry_instance_disk_used_bytes",
        "gauge",
        "Disk the instance uses: a zone's writable layer, an HVM's allocated disk blocks.",
        |u| Some(u.disk_used_bytes as f64),
    );
    per_instance(
        o,
        rows,
        "skerry_instance_disk_quota_bytes",
        "gauge",
        "The instance's disk limit, where it has one.",
        |u| u.disk_quota_bytes.map(|n| n as f64),
    );
    let nic_family =
        |o: &mut String, name: &str, help: &str, value: fn(&spec::api::NicUsage) -> u64| {
            let mut f = Family::new(o, name, "counter", help);
            for u in rows {
                for n in &u.nics {
                    f.sample(
                        name,
                        &[
                            ("name", &u.name),
                            ("uuid", &u.uuid),
                            ("type", &u.kind),
                            ("nic", &n.name),
                        ],
                        value(n) as f64,
                    );
                }
            }
        };
    nic_family(
        o,
        "skerry_instance_network_receive_bytes_total",
        "Bytes the instance received on a nic.",
        |n| n.rx_bytes,
    );
    nic_family(
        o,
        "skerry_instance_network_transmit_bytes_total",
        "Bytes the instance sent on a nic.",
        |n| n.tx_bytes,
    );
    nic_family(
        o,
        "skerry_instance_network_receive_packets_total",
        "Packets the instance received on a nic.",
        |n| n.rx_packets,
    );
    nic_family(
        o,
        "skerry_instance_network_transmit_packets_total",
        "Packets the instance sent on a nic.",
        |n| n.tx_packets,
    );
}

/// Samples the node now (each fact best-effort: a missing file reads as zero).
pub fn sample_node() -> NodeSample {
    let cpus = crate::node_info::read_capped("/proc/cpuinfo")
        .map(|t| crate::node_info::parse_cpuinfo(&t).total)
        .unwrap_or(0);
    NodeSample {
        hostname: crate::node_info::hostname(),
        uuid: crate::node_info::node_uuid(),
        memory: crate::node_info::memory().unwrap_or_default(),
        cpu: crate::node_info::cpu_times().unwrap_or_default(),
        cpus,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_states_are_one_hot() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let u = InstanceUsage {
            name: "web01".into(),
            uuid: "u-1".into(),
            kind: "zone".into(),
            state: State::Running,
            memory_bytes: 4096,
            memory_limit_bytes: 8192,
            cpu_usec: 1_500_000,
            cpu_cap: 50,
            tasks: 3,
            tasks_limit: None,
            disk_used_bytes: 0,
            disk_quota_bytes: None,
            nics: vec![],
            sampled_usec: 0,
            problems: vec![],
        };
        let text = render(&NodeSample::default(), Some(&[u]));
        assert!(
            text.contains(
                "skerry_instance_memory_bytes{name=\"web01\",uuid=\"u-1\",type=\"zone\"} 4096\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "skerry_instance_cpu_seconds_total{name=\"web01\",uuid=\"u-1\",type=\"zone\"} 1.5\n"
        ));
        assert!(text.contains("state=\"running\"} 1\n"));
        assert!(text.contains("state=\"stopped\"} 0\n"));
        assert!(
            !text.contains("skerry_instance_tasks_limit{"),
            "no limit, no sample"
        );
        assert!(text.contains("skerry_init_up 1\n"));
        assert!(render(&NodeSample::default(), None).contains("skerry_init_up 0\n"));
    }
}
