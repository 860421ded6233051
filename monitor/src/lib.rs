//! The contract between init and the per-instance monitor processes, with its
//! behaviour: what crosses the boundary ([`InstanceConfig`], [`MonitorRequest`],
//! [`MonitorResponse`], [`MonitorStatus`], [`State`]), the one socket [`Server`] both
//! monitors run and the one [`Client`] init (and tests) talk to them with, and the
//! process scaffolding every monitor needs ([`detach`], [`Claim`]: the lifetime lock,
//! the pidfile and the socket; [`StatusFile`]), and the run loop both monitors drive
//! their instance with ([`supervise`] over [`Supervised`]), with the one rule for what
//! follows the end of a run ([`Pending`], [`Ended`], [`Next`]).
//!
//! The per-instance process is a *monitor*, whatever it runs. init prepares
//! `<pool>/<uuid>/` and writes [`InstanceConfig`] to [`config_path`] (atomically), then
//! spawns, in a new session:
//!
//! - `zone monitor --config <pool>/<uuid>/config.json` for a zone,
//! - `vmm monitor --config <pool>/<uuid>/config.json` for an HVM instance.
//!
//! The monitor writes its pid to [`pidfile_path`] and listens on [`socket_path`]; it
//! keeps [`MonitorStatus`] in [`status_path`] (`monitor.json`, atomically) on every
//! change, and its own stdio goes to [`monitor_log_path`], bounded ([`BoundedMonitorLog`]). Requests on the socket are
//! one JSON [`MonitorRequest`] per line; each gets one JSON [`MonitorResponse`] line.
//! For `Console`, the response is sent with the console fd attached as SCM_RIGHTS
//! ancillary data: a pty master (the VMM's serial), or one end of a stream socket the
//! monitor relays to the instance's pty (zones), so that the monitor's console log and
//! every attached client see all of the output.
//!
//! A zone's console relay carries raw bytes both ways. A client that wants to pass its
//! terminal's window size switches its own direction (client to zone) to frames by
//! sending [`CONSOLE_FRAMED`] as its very first bytes; a client that does not stays
//! raw (compatible with clients that predate frames). A frame is one type byte, a
//! big-endian `u16` payload length and the payload: [`FRAME_DATA`] (bytes for the
//! console), [`FRAME_WINSIZE`] (rows and columns, big-endian `u16` each; the monitor
//! sets them on the zone's pty, which sends the zone's foreground job SIGWINCH).
//! Frames of other types are skipped. Output (zone to client) stays raw. A client sends
//! a size frame at attach and on every SIGWINCH: see [`console_frame`].
//!
//! The monitor exits when the instance has stopped for good (stop request, or init exit
//! without restart) with one of [`exit`]'s codes: 0 = clean stop/power-off, 3 = the
//! instance asked to reboot (the monitor restarts it itself unless told to stop),
//! 1 = failure (reason in monitor.json). It never depends on init staying alive: if
//! init dies, it keeps running and a restarted init re-adopts it through the socket.

#![warn(missing_docs)]

mod client;
mod console;
mod instance;
mod lifecycle;
mod lock;
mod logbound;
mod paths;
mod process;
mod protocol;
mod server;
mod status;

pub use client::{Client, ClientError, DEFAULT_TIMEOUT};
pub use console::{console_frame, winsize_frame, CONSOLE_FRAMED, FRAME_DATA, FRAME_WINSIZE};
pub use instance::{answer, AfterStop, Instance, StopRequest};
pub use lifecycle::{supervise, Ended, Next, Pending, Supervised};
pub use lock::{LockError, MonitorLock};
pub use logbound::{rotated_monitor_log, BoundedMonitorLog, MONITOR_LOG_CHECK, MONITOR_LOG_MAX};
pub use paths::*;
pub use process::{detach, read_config, Claim, ProcessError};
pub use protocol::{InstanceConfig, MonitorRequest, MonitorResponse, MonitorStatus, ZoneDefaults};
pub use server::{Connection, ConnectionError, Incoming, Reply, Server, ServerError};
pub use server::{MAX_REQUEST_LINE, REQUEST_TIMEOUT};
pub use spec::State;
pub use status::{StatusFile, StatusFileError};

/// A monitor's exit codes (see the crate doc).
pub mod exit {
    /// The instance stopped cleanly (on request, or it powered off).
    pub const STOPPED: i32 = 0;
    /// The instance failed; the reason is in monitor.json.
    pub const FAILED: i32 = 1;
    /// The instance asked to reboot and the monitor left it to init to start again.
    pub const REBOOT: i32 = 3;
}
