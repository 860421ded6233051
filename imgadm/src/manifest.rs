//! IMGAPI v2 image manifests, as SmartOS's `imgadm` and IMGAPI servers write them.
//!
//! Fields skerry does not interpret (`tags`, `image_size`, `homepage`, ...) are kept in
//! [`ImageManifest::extra`] so a manifest round-trips through the store and `serve`
//! unchanged.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

use crate::error::StoreError;

/// What kind of payload an image carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImageKind {
    /// A root filesystem tarball, unpacked once into the store for zones.
    #[serde(rename = "zone-dataset", alias = "lx-dataset")]
    ZoneDataset,
    /// A raw disk image for HVM instances.
    #[serde(rename = "zvol")]
    Zvol,
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageKind::ZoneDataset => "zone-dataset",
            ImageKind::Zvol => "zvol",
        })
    }
}

/// How an image file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    #[default]
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// zstd.
    Zstd,
    /// xz (LZMA2).
    Xz,
    /// bzip2 (SmartOS's images often are).
    Bzip2,
}

/// One file of an image (IMGAPI images carry exactly one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    /// Lowercase hex SHA-1 of the file (SmartOS manifests always have it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// Lowercase hex SHA-256 of the file (preferred when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Exact size in bytes.
    pub size: u64,
    /// Compression of the file.
    #[serde(default)]
    pub compression: Compression,
    /// Other members (SmartOS's `dataset_guid`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An IMGAPI v2 image manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Manifest format version: 2.
    pub v: u32,
    /// Image UUID: its identity everywhere.
    pub uuid: Uuid,
    /// Owner UUID (all zeros when nobody in particular).
    #[serde(default)]
    pub owner: Uuid,
    /// Image name (`busybox`, `debian-hvm`).
    pub name: String,
    /// Image version (`1.36`, `12`).
    pub version: String,
    /// `active` for importable images.
    #[serde(default = "default_state")]
    pub state: String,
    /// Disabled images are not offered by `avail`.
    #[serde(default)]
    pub disabled: bool,
    /// Public images.
    #[serde(default = "default_true")]
    pub public: bool,
    /// RFC 3339 publication time; orders versions of one name.
    #[serde(default)]
    pub published_at: String,
    /// Payload type.
    #[serde(rename = "type")]
    pub kind: ImageKind,
    /// Guest OS (`linux`, `other`, ...).
    #[serde(default)]
    pub os: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The image file.
    pub files: Vec<ImageFile>,
    /// Requirements on the instance (kept as given).
    #[serde(default = "empty_object")]
    pub requirements: serde_json::Value,
    /// Every other member of the manifest, kept verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_state() -> String {
    "active".into()
}
fn default_true() -> bool {
    true
}
fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl ImageManifest {
    /// Parses and validates a manifest; `origin` (a path or URL) names it in errors.
    pub fn from_json(data: &[u8], origin: &str) -> Result<ImageManifest, StoreError> {
        let m: ImageManifest =
            serde_json::from_slice(data).map_err(|e| StoreError::BadManifest {
                origin: origin.to_string(),
                reason: e.to_string(),
            })?;
        m.validate(origin)?;
        Ok(m)
    }

    /// Checks what the store relies on: v2, a usable name and version, exactly one
    /// file with a well-formed checksum.
    pub fn validate(&self, origin: &str) -> Result<(), StoreError> {
        let bad = |reason: String| StoreError::BadManifest {
            origin: origin.to_string(),
            reason,
        };
        if self.v != 2 {
            return Err(bad(format!(
                "manifest version v={} (only v=2 is supported)",
                self.v
            )));
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 512
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+~".contains(c))
        };
        if !name_ok(&self.name) {
            return Err(bad(format!(
                "name {:?} must be 1-512 characters of [A-Za-z0-9-_.+~]",
                self.name
            )));
        }
        if !name_ok(&self.version) {
            return Err(bad(format!(
                "version {:?} must be 1-512 characters of [A-Za-z0-9-_.+~]",
                self.version
            )));
        }
        let file = match self.files.as_slice() {
            [f] => f,
            fs => return Err(bad(format!("has {} files, expected exactly 1", fs.len()))),
        };
        let hex_ok = |s: &str, len: usize| {
            s.len() == len
                && s.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        };
        match (&file.sha256, &file.sha1) {
            (None, None) => return Err(bad("files[0] has neither sha256 nor sha1".into())),
            (Some(s), _) if !hex_ok(s, 64) => {
                return Err(bad(format!(
                    "files[0].sha256 {s:?} is not 64 lowercase hex digits"
                )))
            }
            (_, Some(s)) if !hex_ok(s, 40) => {
                return Err(bad(format!(
                    "files[0].sha1 {s:?} is not 40 lowercase hex digits"
                )))
            }
            _ => {}
        }
        Ok(())
    }

    /// The image's single file (validated manifests have exactly one).
    pub fn file(&self) -> &ImageFile {
        &self.files[0]
    }

    /// `name@version`.
    pub fn name_version(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Orders versions of one image name: newer `published_at` wins, then a numeric-aware
/// comparison of the version strings (`1.10` > `1.9`).
pub fn newer(a: &ImageManifest, b: &ImageManifest) -> std::cmp::Ordering {
    a.published_at
        .cmp(&b.published_at)
        .then_with(|| compare_versions(&a.version, &b.version))
        .then_with(|| a.uuid.cmp(&b.uuid))
}

/// Compares dotted versions part by part, numerically where both parts are numbers.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let mut pa = a.split(['.', '-', '+']);
    let mut pb = b.split(['.', '-', '+']);
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"v":2,"uuid":"0e7f2a2c-83c4-4c1e-9a0e-0a1b2c3d4e5f","name":"busybox",
        "version":"1.36","type":"zone-dataset","os":"other","published_at":"2026-01-01T00:00:00Z",
        "files":[{"sha1":"79f391d3877f5527a8d4a6aaa37ae0bb726846b1","size":10,"compression":"gzip","dataset_guid":"123"}],
        "tags":{"k":"v"},"image_size":1024}"#;

    #[test]
    fn parses_and_keeps_unknown_members() {
        let m = ImageManifest::from_json(GOOD.as_bytes(), "t.json").unwrap();
        assert_eq!(m.kind, ImageKind::ZoneDataset);
        assert_eq!(m.file().compression, Compression::Gzip);
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["tags"]["k"], "v");
        assert_eq!(back["image_size"], 1024);
        assert_eq!(back["type"], "zone-dataset");
        assert_eq!(back["files"][0]["dataset_guid"], "123");
    }

    #[test]
    fn rejects_bad_manifests_naming_origin() {
        let no_sum = GOOD.replace(r#""sha1":"79f391d3877f5527a8d4a6aaa37ae0bb726846b1","#, "");
        let e = ImageManifest::from_json(no_sum.as_bytes(), "x.json").unwrap_err();
        assert!(e.to_string().contains("x.json") && e.to_string().contains("neither"));
        let bad_type = GOOD.replace("zone-dataset", "docker");
        let e = ImageManifest::from_json(bad_type.as_bytes(), "y.json").unwrap_err();
        assert!(e.to_string().contains("y.json"), "{e}");
        let bad_name = GOOD.replace("busybox", "../etc");
        assert!(ImageManifest::from_json(bad_name.as_bytes(), "z").is_err());
    }

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.10", "1.9"), Greater);
        assert_eq!(compare_versions("12", "12.1"), Less);
        assert_eq!(compare_versions("1.36", "1.36"), Equal);
    }
}
