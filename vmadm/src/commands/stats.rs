//! `stats`, `info` and `timeline`: what instances use and how the node booted.
//!
//! `vmadm stats` reads init's `Usage` twice, `-i` seconds apart, the way `prstat`
//! samples: CPU % is the CPU time used between the two reads over the time between
//! them (100 = one CPU busy).

use super::{print, print_json, Init, Result};
use crate::cli::TableArgs;
use crate::filter::FilterError;
use serde_json::Value;
use spec::api::InstanceUsage;
use spec::table::{Table, TableStyle};
use std::collections::BTreeMap;
use std::time::Duration;

/// Columns shown without `-o`.
pub const DEFAULT_COLUMNS: &[&str] = &[
    "uuid", "type", "alias", "mem", "mem_cap", "cpu", "time", "nproc", "disk", "quota", "rx_bytes",
    "tx_bytes",
];

/// Every column a row has, besides the per-nic `NIC.rx_bytes`, `NIC.tx_bytes`,
/// `NIC.rx_pkts` and `NIC.tx_pkts` (`net0.rx_bytes`).
pub const ALL_COLUMNS: &[&str] = &[
    "uuid",
    "alias",
    "type",
    "state",
    "mem",
    "mem_cap",
    "cpu",
    "cpu_cap",
    "time",
    "nproc",
    "nproc_cap",
    "disk",
    "quota",
    "rx_bytes",
    "tx_bytes",
    "rx_pkts",
    "tx_pkts",
];

const MIB: u64 = 1 << 20;

/// One row's cells by column name. Sizes are MiB (as `vmadm list` prints `ram`),
/// CPU time is seconds, `-` is "none" or "not measured".
pub fn cells(u: &InstanceUsage, cpu_pct: Option<f64>) -> BTreeMap<String, String> {
    let mut c = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        c.insert(k.to_string(), v);
    };
    put("uuid", u.uuid.clone());
    put("alias", u.name.clone());
    put("type", u.kind.to_uppercase());
    put("state", u.state.to_string());
    put("mem", (u.memory_bytes / MIB).to_string());
    put("mem_cap", (u.memory_limit_bytes / MIB).to_string());
    put("cpu", cpu_pct.map_or("-".into(), |p| format!("{p:.1}")));
    put("cpu_cap", u.cpu_cap.to_string());
    put("time", format!("{:.1}", u.cpu_usec as f64 / 1e6));
    put("nproc", u.tasks.to_string());
    put(
        "nproc_cap",
        u.tasks_limit.map_or("-".into(), |n| n.to_string()),
    );
    put("disk", (u.disk_used_bytes / MIB).to_string());
    put(
        "quota",
        u.disk_quota_bytes
            .map_or("-".into(), |q| (q / MIB).to_string()),
    );
    let sum = |f: fn(&spec::api::NicUsage) -> u64| u.nics.iter().map(f).sum::<u64>().to_string();
    put("rx_bytes", sum(|n| n.rx_bytes));
    put("tx_bytes", sum(|n| n.tx_bytes));
    put("rx_pkts", sum(|n| n.rx_packets));
    put("tx_pkts", sum(|n| n.tx_packets));
    for n in &u.nics {
        put(&format!("{}.rx_bytes", n.name), n.rx_bytes.to_string());
        put(&format!("{}.tx_bytes", n.name), n.tx_bytes.to_string());
        put(&format!("{}.rx_pkts", n.name), n.rx_packets.to_string());
        put(&format!("{}.tx_pkts", n.name), n.tx_packets.to_string());
    }
    c
}

/// CPU % of one CPU between two samples of the same instance; `None` when the two
/// are not comparable (restarted between them, or no time passed).
pub fn cpu_percent(before: &InstanceUsage, after: &InstanceUsage) -> Option<f64> {
    let wall = after.sampled_usec.checked_sub(before.sampled_usec)?;
    let cpu = after.cpu_usec.checked_sub(before.cpu_usec)?;
    (wall > 0 && before.uuid == after.uuid).then(|| cpu as f64 * 100.0 / wall as f64)
}

/// Fails with a usage error unless `field` is a column (or a per-nic one).
fn check_column(field: &str) -> std::result::Result<(), FilterError> {
    let per_nic = field
        .split_once('.')
        .is_some_and(|(_, c)| ["rx_bytes", "tx_bytes", "rx_pkts", "tx_pkts"].contains(&c));
    if ALL_COLUMNS.contains(&field) || per_nic {
        return Ok(());
    }
    Err(FilterError::UnknownColumn {
        field: field.to_string(),
        allowed: format!(
            "{},NIC.rx_bytes,NIC.tx_bytes,NIC.rx_pkts,NIC.tx_pkts",
            ALL_COLUMNS.join(",")
        ),
    })
}

/// Two reads of `Usage`, `interval` apart (one read when it is zero), paired by UUID.
async fn sample(
    init: &Init,
    id: &str,
    interval: Duration,
) -> Result<Vec<(InstanceUsage, Option<f64>)>> {
    let node = init.node().await?;
    let first = node.usage(id).await?;
    if interval.is_zero() {
        return Ok(first.into_iter().map(|u| (u, None)).collect());
    }
    tokio::time::sleep(interval).await;
    let second = node.usage(id).await?;
    Ok(second
        .into_iter()
        .map(|u| {
            let pct = first
                .iter()
                .find(|b| b.uuid == u.uuid)
                .and_then(|b| cpu_percent(b, &u));
            (u, pct)
        })
        .collect())
}

/// `vmadm stats [-i SECS] [ID]`.
pub(super) async fn stats(
    init: &Init,
    table: &TableArgs,
    interval: Duration,
    id: Option<&str>,
) -> Result<()> {
    let fields: Vec<String> = if table.fields.is_empty() {
        DEFAULT_COLUMNS.iter().map(|s| s.to_string()).collect()
    } else {
        table.fields.clone()
    };
    for f in &fields {
        check_column(f)?;
    }
    let rows = sample(init, id.unwrap_or(""), interval).await?;
    if table.json {
        let out: Vec<Value> = rows
            .iter()
            .map(|(u, pct)| {
                let mut v = serde_json::to_value(u).unwrap_or_default();
                v["cpu_percent"] = pct.map_or(Value::Null, Value::from);
                v
            })
            .collect();
        return print_json(&Value::Array(out));
    }
    let mut t = Table::new(fields.iter().cloned());
    for (u, pct) in &rows {
        let c = cells(u, *pct);
        t.push(
            fields
                .iter()
                .map(|f| c.get(f).cloned().unwrap_or_else(|| "-".into())),
        );
    }
    print(&t.render(TableStyle {
        no_header: table.no_header,
        parsable: table.parsable,
    }))
}

/// `vmadm info NAME`: init's monitor details with the instance's usage beside them.
pub(super) async fn info(init: &Init, id: &str) -> Result<()> {
    let node = init.node().await?;
    let mut v = node.info(id).await?;
    let usage = node.usage(id).await?;
    if let (Some(obj), Some(u)) = (v.as_object_mut(), usage.first()) {
        obj.insert("usage".into(), serde_json::to_value(u).unwrap_or_default());
    }
    print_json(&v)
}

/// `vmadm timeline`: the node's boot phases, as recorded by init.
pub(super) async fn timeline(init: &Init, table: &TableArgs) -> Result<()> {
    let phases = init.node().await?.timeline().await?;
    if table.json {
        let rows: Vec<Value> = phases
            .iter()
            .map(|(phase, us)| serde_json::json!({ "phase": phase, "usec": us }))
            .collect();
        return print_json(&Value::Array(rows));
    }
    let mut t = Table::new(["phase", "ms", "total_ms"]);
    let mut total = 0u64;
    for (phase, us) in &phases {
        total += us;
        t.push([
            phase.clone(),
            format!("{:.1}", *us as f64 / 1000.0),
            format!("{:.1}", total as f64 / 1000.0),
        ]);
    }
    print(&t.render(TableStyle {
        no_header: table.no_header,
        parsable: table.parsable,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu_usec: u64, sampled_usec: u64) -> InstanceUsage {
        InstanceUsage {
            name: "web01".into(),
            uuid: "u-1".into(),
            kind: "zone".into(),
            state: spec::State::Running,
            memory_bytes: 3 * MIB,
            memory_limit_bytes: 64 * MIB,
            cpu_usec,
            cpu_cap: 0,
            tasks: 2,
            tasks_limit: Some(100),
            disk_used_bytes: MIB,
            disk_quota_bytes: None,
            nics: vec![spec::api::NicUsage {
                name: "net0".into(),
                host_if: "sku1n0".into(),
                rx_bytes: 10,
                tx_bytes: 20,
                rx_packets: 1,
                tx_packets: 2,
            }],
            sampled_usec,
            problems: vec![],
        }
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let a = usage(1_000_000, 10_000_000);
        let b = usage(1_500_000, 11_000_000);
        assert_eq!(cpu_percent(&a, &b), Some(50.0));
        assert_eq!(cpu_percent(&b, &a), None, "a restart resets the counter");
        assert_eq!(cpu_percent(&a, &a), None);
    }

    #[test]
    fn cells_are_mib_seconds_and_per_nic() {
        let c = cells(&usage(2_500_000, 0), Some(12.34));
        assert_eq!(c["mem"], "3");
        assert_eq!(c["mem_cap"], "64");
        assert_eq!(c["time"], "2.5");
        assert_eq!(c["cpu"], "12.3");
        assert_eq!(c["quota"], "-");
        assert_eq!(c["net0.tx_pkts"], "2");
        assert_eq!(c["rx_bytes"], "10");
        for col in ALL_COLUMNS {
            assert!(c.contains_key(*col), "{col}");
        }
        assert!(check_column("net0.rx_bytes").is_ok());
        assert!(check_column("ram").is_err());
    }
}
