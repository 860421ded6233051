//! The contract between `init` (server) and `vmadm` (client) on the system bus.
//!
//! init owns [`BUS_NAME`] and serves [`INTERFACE`] at [`OBJECT_PATH`]. The methods
//! (arguments -> result, D-Bus signatures in brackets):
//!
//! | method | in | out |
//! |---|---|---|
//! | `List` | | `a(ssssstbus)` [`InstanceSummary`] per instance |
//! | `Get` | `id: s` (name or UUID) | `s`: JSON [`InstanceDetail`] |
//! | `Create` | `payload: s`, `format: s` (`kdl`, `json` or empty = sniff) | `as`: names created |
//! | `Update` | `id: s`, `payload: s` (JSON object of properties, SmartOS style) | `(bs)`: needs restart, message |
//! | `Delete` | `id: s` | |
//! | `Start` | `id: s` | |
//! | `Stop` | `id: s`, `force: b`, `timeout_secs: u` | |
//! | `Reboot` | `id: s`, `force: b` | |
//! | `Validate` | `payload: s`, `format: s` | `as`: error lines, empty when valid |
//! | `Reconcile` | | `a(sss)`: [`PlanStep`] per instance touched |
//! | `Console` | `id: s` | `h`: the instance console (pty master or relay socket) |
//! | `Info` | `id: s` | `s`: JSON of monitor/VMM details (pid, uptime, limits, devices) |
//! | `Timeline` | | `a(st)`: boot phases and their duration in microseconds |
//! | `Usage` | `id: s` (empty = every instance) | `s`: JSON array of [`InstanceUsage`] |
//! | `Shutdown` | | | (PID 1 only: stop instances, sync, reboot(2))
//!
//! Signal `InstanceChanged(name: s, uuid: s, kind: s, state: s, reason: s)` is emitted on
//! every state change. Mutating methods (all but List, Get, Validate, Info,
//! Timeline, Usage)
//! are refused with [`errors::ACCESS_DENIED`] unless the bus says the caller is uid 0.

use serde::{Deserialize, Serialize};

/// Well-known bus name owned by init.
pub const BUS_NAME: &str = "org.skerry.Node1";
/// The node object.
pub const OBJECT_PATH: &str = "/org/skerry/Node1";
/// The node interface.
pub const INTERFACE: &str = "org.skerry.Node1";

/// D-Bus error names init replies with.
pub mod errors {
    /// No instance by that name or UUID.
    pub const NOT_FOUND: &str = "org.skerry.Node1.Error.NotFound";
    /// The caller is not uid 0.
    pub const ACCESS_DENIED: &str = "org.skerry.Node1.Error.AccessDenied";
    /// The payload or request is invalid; the message lists every problem.
    pub const INVALID: &str = "org.skerry.Node1.Error.Invalid";
    /// The operation failed; the message says why.
    pub const FAILED: &str = "org.skerry.Node1.Error.Failed";
}

/// One row of `List`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "dbus", derive(zvariant::Type))]
pub struct InstanceSummary {
    /// Instance name (SmartOS `alias`).
    pub name: String,
    /// Instance UUID.
    pub uuid: String,
    /// `zone` or `hvm`.
    pub kind: String,
    /// Lifecycle state (`s` on the wire: `running`, `stopped`, ...).
    pub state: crate::State,
    /// Image reference as written in the manifest.
    pub image: String,
    /// Memory in bytes.
    pub memory: u64,
    /// Autoboot flag.
    pub autoboot: bool,
    /// Monitor/VMM pid, 0 when not running.
    pub pid: u32,
    /// Last exit or failure reason, empty if none.
    pub reason: String,
}

/// What `Get` returns (as JSON): the desired spec and the observed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceDetail {
    /// The row of `List`.
    #[serde(flatten)]
    pub summary: InstanceSummary,
    /// The spec from the manifests, when one declares the instance.
    pub spec: Option<crate::InstanceSpec>,
    /// The customer metadata the instance sees now, as SmartOS's `vmadm get` shows it:
    /// the spec's, with the guest's own writes (`mdata-put`, `mdata-delete`) applied.
    #[serde(default)]
    pub customer_metadata: std::collections::BTreeMap<String, String>,
}

/// What one instance uses now (`Usage`): read from its cgroup (the zone's, or the
/// guest's VMM's), the host ends of its nics and its pool directory. Counters only grow
/// while the instance runs; a stopped instance has no cgroup and reports zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceUsage {
    /// Instance name (SmartOS `alias`).
    pub name: String,
    /// Instance UUID.
    pub uuid: String,
    /// `zone` or `hvm`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Lifecycle state.
    pub state: crate::State,
    /// Memory charged to the cgroup (page cache included), bytes.
    pub memory_bytes: u64,
    /// The memory limit the instance runs under (its cgroup's, else the spec's), bytes.
    pub memory_limit_bytes: u64,
    /// CPU time used since the instance (re)started, microseconds.
    pub cpu_usec: u64,
    /// `cpu-cap`: percent of one CPU, 0 = none.
    pub cpu_cap: u32,
    /// Tasks (processes and threads) in the cgroup.
    pub tasks: u64,
    /// The task limit, when there is one.
    pub tasks_limit: Option<u64>,
    /// Disk used: the zone's writable layer, or the space the guest's disk files take.
    pub disk_used_bytes: u64,
    /// The disk limit: the zone's quota (none when unset), or the guest's disk sizes.
    pub disk_quota_bytes: Option<u64>,
    /// One entry per nic, in spec order.
    pub nics: Vec<NicUsage>,
    /// When these were read: CLOCK_MONOTONIC, microseconds (for rates between two reads).
    pub sampled_usec: u64,
    /// What could not be read (a missing cgroup, a vanished link), else empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// One nic's traffic, seen from the instance (received = what reached the instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicUsage {
    /// The nic's name in the spec (`net0`).
    pub name: String,
    /// The host end (veth or tap) the counters come from.
    pub host_if: String,
    /// Bytes received by the instance.
    pub rx_bytes: u64,
    /// Bytes sent by the instance.
    pub tx_bytes: u64,
    /// Packets received by the instance.
    pub rx_packets: u64,
    /// Packets sent by the instance.
    pub tx_packets: u64,
}

/// One step of a reconcile plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "dbus", derive(zvariant::Type))]
pub struct PlanStep {
    /// Instance name.
    pub name: String,
    /// What was done (`create`, `start`, ... on the wire).
    pub action: Action,
    /// Why, in words.
    pub reason: String,
}

/// What a reconcile step does to one instance; a lower-case word on the wire (D-Bus
/// `s`) and in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "dbus", derive(zvariant::Type), zvariant(signature = "s"))]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Provision a new instance (pool directory, state, config).
    Create,
    /// Start its monitor.
    Start,
    /// Stop its monitor; data kept.
    Stop,
    /// Apply a changed spec that needs no restart (or to a stopped instance).
    Update,
    /// Apply a changed spec to a running instance: stop, rewrite, start.
    Restart,
    /// Stop and remove the instance and its data.
    Delete,
    /// Nothing can be done until an operator acts; the reason says what.
    Refuse,
    /// Not a step: a manifest file that could not be read, named in the reason.
    Error,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 8] = [
        Action::Create,
        Action::Start,
        Action::Stop,
        Action::Update,
        Action::Restart,
        Action::Delete,
        Action::Refuse,
        Action::Error,
    ];

    /// The word used on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Update => "update",
            Action::Restart => "restart",
            Action::Delete => "delete",
            Action::Refuse => "refuse",
            Action::Error => "error",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no [`Action`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan action `{0}`")]
pub struct UnknownAction(pub String);

impl std::str::FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Action, UnknownAction> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_string()))
    }
}

/// Lets callers and tests compare with the wire word (`step.action == "stop"`).
impl PartialEq<&str> for Action {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_travel_as_their_words() {
        for a in Action::ALL {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{a}\""));
            assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), a);
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
        assert!(serde_json::from_str::<Action>("\"explode\"").is_err());
        assert!("explode".parse::<Action>().is_err());
    }

    #[test]
    fn a_detail_is_the_summary_flattened_beside_the_spec() {
        let image = crate::ImageRef::Name {
            name: "busybox".into(),
            version: Some("1.36".into()),
        };
        let spec = crate::InstanceSpec::zone("web01", image);
        let detail = InstanceDetail {
            summary: InstanceSummary {
                name: "web01".into(),
                uuid: "u-1".into(),
                kind: spec.kind.to_string(),
                state: crate::State::Running,
                image: "busybox@1.36".into(),
                memory: spec.memory,
                autoboot: true,
                pid: 7,
                reason: String::new(),
            },
            spec: Some(spec),
            customer_metadata: [("role".to_string(), "web".to_string())].into(),
        };
        let json = serde_json::to_value(&detail).unwrap();
        assert_eq!(json["name"], "web01");
        assert_eq!(json["kind"], "zone");
        assert_eq!(json["spec"]["kind"]["type"], "zone");
        assert_eq!(json["customer_metadata"]["role"], "web");
        let back: InstanceDetail = serde_json::from_value(json).unwrap();
        assert_eq!(back, detail);
    }
}
