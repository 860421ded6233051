//! The skerry zone runtime.
//!
//! A zone is an OS container: an image rootfs under an overlay, in its own user, pid,
//! mount, uts, ipc, net and cgroup namespaces, with cgroup limits, a reduced capability
//! set and a seccomp filter, on a pty console, plugged into the node's bridges.
//!
//! - [`launch`] starts one zone (the process choreography);
//! - [`run`] is `zone run`, a throwaway zone in the foreground;
//! - [`monitor`] is `zone monitor`, the per-zone process init spawns;
//! - [`zlogin`] runs a command inside a running zone (SmartOS's `zlogin`);
//! - [`rootfs`], [`cgroups`], [`idmap`], [`security`], [`net`], [`console`], [`quota`],
//!   [`halt`], [`user`] are the pieces.

pub mod cgroups;
pub mod console;
pub mod error;
pub mod halt;
pub mod idmap;
pub mod launch;
pub mod monitor;
pub mod net;
pub mod quota;
pub mod rootfs;
pub mod run;
pub mod security;
pub mod sys;
pub mod timing;
pub mod user;
pub mod zlogin;

pub use error::{Result, ZoneError};
