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
//! | `Shutdown` | | | (PID 1 only: stop instances, sync, reboot(2))
//!
//! Signal `InstanceChanged(name: s, uuid: s, kind: s, state: s, reason: s)` is emitted on
//! every state change. Mutating methods (all but List, Get, Validate, Info, Timeline)
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
}

/// One step of a reconcile plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "dbus", derive(zvariant::Type))]
pub struct PlanStep {
    /// Instance name.
    pub name: String,
    /// `create`, `start`, `stop`, `update`, `restart`, `delete`.
    pub action: String,
    /// Why, in words.
    pub reason: String,
}
