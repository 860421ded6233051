//! The skerry image store (`/zones/images/<uuid>/`) and IMGAPI client/server.
//!
//! [`ImageStore`] is what init and the `imgadm` CLI share: lookup by UUID,
//! `name@version` or name, verified streaming import from IMGAPI sources (resumable,
//! atomic), local install, delete, vacuum. [`serve::Server`] serves a store over the
//! same IMGAPI protocol (feature `server`). The API is synchronous; init calls it from a
//! blocking thread, and links it without the `cli` and `server` features.

#![forbid(unsafe_code)]

pub mod bootcheck;
pub mod create;
pub mod error;
mod import;
pub mod manifest;
pub mod oci;
pub mod output;
mod progress;
pub mod qcow2;
#[cfg(feature = "server")]
pub mod serve;
pub mod sources;
pub mod store;
pub mod unpack;
pub mod vacuum;

pub use error::StoreError;
pub use manifest::{Compression, ImageFile, ImageKind, ImageManifest};
pub use sources::{SourceClient, SourceLimits};
pub use store::{instances_using, parse_checked_ref, parse_ref, Image, ImageStore};
