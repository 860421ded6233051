//! The skerry manifest schema.
//!
//! Manifests are KDL v2 documents (see manifests/README.md) holding one or more
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

#![forbid(unsafe_code)]

/// Serialises a type as its `Display` text and deserialises it with its `FromStr`, so
/// that JSON holds what an operator writes (`"256M"`, `"02:5c:00:11:22:33"`).
macro_rules! serde_as_text {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod api;
pub mod atomic;
pub mod customer;
pub mod diff;
#[cfg(feature = "kdl")]
pub mod error;
pub mod format;
pub mod mac;
#[cfg(feature = "kdl")]
pub mod manifest;
pub mod model;
pub mod oci;
#[cfg(feature = "kdl")]
pub mod payload;
pub mod pool;
pub mod size;
#[cfg(feature = "kdl")]
pub mod smartos;
pub mod state;
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
pub use state::{unix_now, State, UnknownState};
