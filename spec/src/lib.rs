//! The skerry manifest schema.
//!
//! Manifests are KDL v2 documents (see DESIGN.md, "Manifests") holding one or more
//! `zone` / `hvm` nodes. This crate turns them, or SmartOS `vmadm` JSON payloads, into
//! typed [`InstanceSpec`]s with every default applied, and validates them. Every error
//! carries the file, line and column it came from.
//!
//! `spec` depends on nothing else of ours: `init`, `vmadm`, `imgadm`, `zone` and `vmm`
//! all build on it.

pub mod api;
pub mod atomic;
pub mod diff;
pub mod error;
pub mod format;
pub mod mac;
pub mod manifest;
pub mod model;
pub mod monitor;
pub mod payload;
pub mod pool;
pub mod size;
pub mod smartos;
pub mod suggest;
pub mod table;

pub use error::{ManifestError, Problem};
pub use format::parse_size;
pub use mac::MacAddr;
pub use manifest::{load_dir, load_files, parse_file, parse_str, to_kdl, LoadedDir};
pub use model::*;
pub use payload::{parse_payload, Format, PayloadError};
pub use size::ByteSize;
