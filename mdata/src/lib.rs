//! The SmartOS metadata protocol, as skerry speaks it.
//!
//! - [`frame`], [`crc32`], [`base64`]: the wire (version 2 frames; version 1 lines).
//! - [`server`]: a per-connection [`server::Session`] state machine that answers as
//!   SmartOS's metadata agent does, bounded in memory and rate.
//! - [`store`]: one instance's metadata: customer keys (manifest + guest writes,
//!   persisted atomically) and the read-only `sdc:` keys computed by [`sdc`].
//! - [`client`], [`transport`]: what `mdata-get`/`-put`/`-list`/`-delete` use, over a
//!   serial device or the zone's unix socket, as mdata-client does.
//! - [`firstboot`]: the first-boot agent that configures a guest from its metadata.
//!
//! The server runs inside each instance's monitor, never in init: one guest's traffic
//! reaches only its own server (see mdata/README.md).

#![forbid(unsafe_code)]

pub mod base64;
pub mod cli;
pub mod client;
pub mod crc32;
pub mod firstboot;
pub mod frame;
pub mod sdc;
pub mod server;
pub mod store;
pub mod transport;

pub use sdc::{InstanceInfo, Nic, NicAddress, Route, RouteVia};
pub use server::{serve, Session, SessionConfig};
pub use store::{Limits, MetadataStore, StoreError};
