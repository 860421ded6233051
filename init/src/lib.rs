//! skerry init: PID 1 of a node, and the same node daemon on an ordinary host.
//!
//! - [`pool`]: the pool layout and each instance's state.json;
//! - [`plan`]: the pure reconcile planner; [`schedule`]: the plan as one step list per
//!   instance, and admission (what fits in the node's memory and pool);
//! - [`concurrency`]: the limits on imports, disk preparation and starts;
//! - [`images`], [`import_child`]: the image store; imports run in `imgadm` children;
//! - [`node`]: the instance table, reconciler and supervisor;
//! - [`monitor`]: the real runtime, spawning `zone`/`vmm` monitors;
//! - [`dbus`]: the `org.skerry.Node1` API;
//! - [`console`]: console lines, logging and the boot timeline;
//! - [`net`], [`node_config`]: node networking and settings;
//! - [`metrics`]: starting and restarting the metrics server node.kdl asks for;
//! - [`daemon`]: the daemon both modes run; [`pid1`]: booting the node as PID 1.

pub mod concurrency;
pub mod console;
pub mod daemon;
pub mod dbus;
pub mod images;
pub mod import_child;
pub mod manifests;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod node;
pub mod node_config;
pub mod pid1;
pub mod plan;
pub mod pool;
pub mod runtime;
pub mod schedule;
pub mod update;
