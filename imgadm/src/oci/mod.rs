//! OCI registries as image sources for zones.
//!
//! `imgadm import oci:REGISTRY/REPO:TAG` (or a manifest's `image "oci:..."`) pulls
//! through the OCI distribution API (`registry.rs`, over the same blocking HTTP client
//! as the IMGAPI sources), picks linux/amd64 from a multi-arch index, verifies every
//! blob's digest while it streams and bounds it by its declared size, and applies the
//! layers in order, OCI whiteouts included, into a `zone-dataset` image of the store
//! (`pull.rs`). The store image's UUID is derived from the manifest digest, so
//! importing the same digest twice is a no-op. Credentials come from
//! `<pool>/config/auth.json` (`auth.rs`), never from manifests.

mod auth;
mod fetch;
mod pull;
mod registry;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use auth::auth_path;
pub use pull::{installed, pull, tag_moved, TagMove};
pub use spec::oci::OciReference;

/// OCI image manifest.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-arch).
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list (multi-arch).
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A content descriptor: what a manifest says a blob is.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// The platform of one manifest of an index.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
}

impl Descriptor {
    /// The lowercase hex of a `sha256:` digest, or None for any other digest (the
    /// only algorithm accepted: the hex also names files in the work area).
    pub fn sha256_hex(&self) -> Option<&str> {
        sha256_hex(&self.digest)
    }
}

pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    digest.strip_prefix("sha256:").filter(|h| {
        h.len() == 64
            && h.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// What the image's config says a container runs, as the zone's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerDefaults {
    /// `Entrypoint`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// `Cmd`: arguments after the entrypoint (the command when there is none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `WorkingDir`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// `User`: `uid[:gid]` or a name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
}

impl ContainerDefaults {
    /// Entrypoint followed by Cmd: the zone's init command line.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// Where a store image came from, kept as `oci` in its IMGAPI manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciOrigin {
    /// The reference it was imported as.
    pub reference: OciReference,
    /// Digest of the linux/amd64 image manifest.
    pub digest: String,
    /// Digest the reference resolved to (an index's, for a multi-arch image): what a
    /// moved tag is compared with.
    pub resolved: String,
    /// The image config's container defaults.
    #[serde(default)]
    pub config: ContainerDefaults,
}

/// The key of [`OciOrigin`] in an IMGAPI manifest.
pub(crate) const ORIGIN_KEY: &str = "oci";

impl crate::manifest::ImageManifest {
    /// The registry origin of an image pulled from an OCI registry.
    pub fn oci(&self) -> Option<OciOrigin> {
        self.extra
            .get(ORIGIN_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// The store UUID of the image whose manifest has `digest`: the same digest always
/// lands in the same image directory.
pub fn uuid_for(digest: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("skerry-oci:{digest}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid()
}
