//! The skerry manifest schema.
//!
//! Manifests are KDL v2 documents (see DESIGN.md, "Manifests") holding one or more
//! `zone` / `hvm` nodes. This crate turns them, or SmartOS `vmadm` JSON payloads, into
//! typed [`InstanceSpec`]s with every default applied, and validates them. Every error
//! carries the file, line and column it came from.
//!
//! Reading KDL and SmartOS payloads (`manifest`, `smartos`, `payload`, `error`) is
//! behind the `kdl` feature: the per-instance processes (`zone`, `vmm`) only use the
//! typed model, the formats and the contracts, and do not link a KDL parser.
//!
//! `spec` depends on nothing else of ours: `init`, `vmadm`, `imgadm`, `zone` and `vmm`
//! all build on it.

pub mod api;
pub mod atomic;
pub mod diff;
#[cfg(feature = "kdl")]
pub mod error;
pub mod format;
pub mod mac;
#[cfg(feature = "kdl")]
pub mod manifest;
pub mod model;
pub mod monitor;
#[cfg(feature = "kdl")]
pub mod payload;
pub mod pool;
pub mod size;
#[cfg(feature = "kdl")]
pub mod smartos;
#[cfg(feature = "kdl")]
pub mod suggest;
pub mod table;

#[cfg(feature = "kdl")]
pub use error::{ManifestError, Problem};
pub use format::parse_size;
pub use mac::MacAddr;
#[cfg(feature = "kdl")]
pub use manifest::{load_dir, load_files, parse_file, parse_str, to_kdl, LoadedDir};
pub use model::*;
#[cfg(feature = "kdl")]
pub use payload::{parse_payload, Format, PayloadError};
pub use size::ByteSize;
