//! The metadata one instance sees: its customer metadata (manifest + guest writes, with
//! bounds and crash-safe persistence) and its read-only `sdc:` keys.
//!
//! Precedence between the manifest and the guest: every guest write (a put, or a
//! delete of a manifest key) is recorded together with the manifest's value of that
//! key at the time of the write (its *base*). While the manifest still says what it
//! said then, the guest's write wins. When the manifest's value of that key changes
//! (added, edited or removed), the operator's newer intent wins and the guest's write
//! of that key is forgotten. Keys the manifest never names belong to the guest.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sdc::InstanceInfo;

/// Size bounds that keep one guest from growing its monitor's memory or the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key name, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most customer keys (manifest and guest together) a guest put may leave.
    pub max_keys: usize,
    /// Most bytes (keys + values) of customer metadata a guest put may leave.
    pub max_total_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 256,
            max_value_bytes: spec::customer::MAX_VALUE_BYTES,
            max_keys: 512,
            max_total_bytes: 4 << 20,
        }
    }
}

impl Limits {
    /// The longest request line a server must accept to let a guest put the largest
    /// key and value: a V2 PUT base64-encodes both, then the frame encodes them again.
    pub fn max_line_bytes(&self) -> usize {
        let b64 = |n: usize| n.div_ceil(3) * 4;
        b64(b64(self.max_key_bytes) + 1 + b64(self.max_value_bytes)) + 128
    }
}

/// Why a store operation failed. The `Display` text is what the guest reads in the
/// FAILURE answer, so the refusals use SmartOS's words where SmartOS has some.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The metadata file could not be read.
    #[error("cannot read metadata file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The metadata file is not what this version writes.
    #[error("metadata file {path} is damaged ({source}); move it aside to start afresh")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The metadata file could not be written; the change was not made.
    #[error("could not save metadata to {path}: {source}")]
    Save {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The guest tried to change a read-only namespace.
    #[error("Cannot update the \"{0}\" Namespace.")]
    ReadOnly(String),
    /// A key name past [`Limits::max_key_bytes`].
    #[error("key is {len} bytes, more than the limit of {max}")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A value past [`Limits::max_value_bytes`].
    #[error("value is {len} bytes, more than the limit of {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The put would pass [`Limits::max_keys`].
    #[error("too many metadata keys (limit {max})")]
    TooManyKeys {
        /// The bound.
        max: usize,
    },
    /// The put would pass [`Limits::max_total_bytes`].
    #[error("metadata would exceed {max} bytes in total")]
    TooManyBytes {
        /// The bound.
        max: usize,
    },
}

/// One guest write: the value it left (`None`: it deleted the key) and the manifest's
/// value of the key when it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct GuestWrite {
    value: Option<String>,
    base: Option<String>,
}

/// The persisted part: only the guest's writes (the manifest lives in the manifest).
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    guest: BTreeMap<String, GuestWrite>,
}

const FILE_VERSION: u32 = 1;

/// One instance's metadata.
#[derive(Debug)]
pub struct MetadataStore {
    info: InstanceInfo,
    manifest: BTreeMap<String, String>,
    guest: BTreeMap<String, GuestWrite>,
    path: Option<PathBuf>,
    limits: Limits,
}

impl MetadataStore {
    /// A store that keeps guest writes only in memory (tests, throwaway instances).
    pub fn in_memory(
        info: InstanceInfo,
        manifest: BTreeMap<String, String>,
        limits: Limits,
    ) -> Self {
        MetadataStore {
            info,
            manifest,
            guest: BTreeMap::new(),
            path: None,
            limits,
        }
    }

    /// Opens the store persisted at `path` (created on the first guest write), applying
    /// the current manifest's customer metadata with the precedence of the module doc.
    pub fn open(
        path: &Path,
        info: InstanceInfo,
        manifest: BTreeMap<String, String>,
        limits: Limits,
    ) -> Result<Self, StoreError> {
        let file = read_file(path, &limits)?;
        let mut store = MetadataStore {
            info,
            manifest: BTreeMap::new(),
            guest: file.guest,
            path: Some(path.to_owned()),
            limits,
        };
        store.set_manifest(manifest)?;
        Ok(store)
    }

    /// Opens the store of the instance `spec` declares, known as `uuid` (see
    /// [`InstanceInfo::from_spec`] for `macs`): its customer metadata is the spec's
    /// SmartOS `customer_metadata`, so `user-script`, `user-data` and
    /// `root_authorized_keys` are served from their properties.
    pub fn open_spec(
        path: &Path,
        spec: &spec::InstanceSpec,
        uuid: &str,
        macs: &[String],
        limits: Limits,
    ) -> Result<Self, StoreError> {
        let info = InstanceInfo::from_spec(spec, uuid, macs);
        Self::open(path, info, spec.customer_metadata(), limits)
    }

    /// The customer metadata a guest of `spec` sees now (the spec's, with the guest's
    /// writes persisted at `path` applied), read without changing the file: what
    /// `vmadm get` shows while a monitor owns the store.
    pub fn peek_spec(
        path: &Path,
        spec: &spec::InstanceSpec,
        limits: Limits,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let file = read_file(path, &limits)?;
        let manifest = spec.customer_metadata();
        let mut guest = file.guest;
        // Writes the operator has since overridden no longer count (see the module doc).
        guest.retain(|key, write| manifest.get(key) == write.base.as_ref());
        Ok(overlay(manifest, &guest))
    }

    /// Applies an edited spec without a restart: its `sdc:` facts and its customer
    /// metadata ([`MetadataStore::set_manifest`]'s precedence applies).
    pub fn set_spec(
        &mut self,
        spec: &spec::InstanceSpec,
        uuid: &str,
        macs: &[String],
    ) -> Result<(), StoreError> {
        self.set_info(InstanceInfo::from_spec(spec, uuid, macs));
        self.set_manifest(spec.customer_metadata())
    }

    /// Applies a new manifest `metadata` without a restart: guest writes of keys whose
    /// manifest value changed are forgotten (and the file rewritten if so).
    pub fn set_manifest(&mut self, manifest: BTreeMap<String, String>) -> Result<(), StoreError> {
        let before = self.guest.len();
        self.guest
            .retain(|key, write| manifest.get(key) == write.base.as_ref());
        self.manifest = manifest;
        if self.guest.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Replaces the facts the `sdc:` keys are computed from.
    pub fn set_info(&mut self, info: InstanceInfo) {
        self.info = info;
    }

    /// The bounds this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The value of `key`: an `sdc:` key, or customer metadata.
    pub fn get(&self, key: &str) -> Option<String> {
        match key.strip_prefix("sdc:") {
            Some(name) => self.info.get(name),
            None => match self.guest.get(key) {
                Some(write) => write.value.clone(),
                None => self.manifest.get(key).cloned(),
            },
        }
    }

    /// The customer metadata the guest sees, as `vmadm get` should show it.
    pub fn customer_metadata(&self) -> BTreeMap<String, String> {
        overlay(self.manifest.clone(), &self.guest)
    }

    /// The customer keys, as KEYS lists them (no `sdc:` keys, as on SmartOS).
    pub fn keys(&self) -> Vec<String> {
        self.customer_metadata().into_keys().collect()
    }

    /// The keys the guest has written (put or deleted) and that still win.
    pub fn guest_written(&self) -> Vec<String> {
        self.guest.keys().cloned().collect()
    }

    /// A guest PUT. An empty value deletes the key, as SmartOS's agent does.
    pub fn put(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.check_writable(key)?;
        if value.is_empty() {
            return self.delete(key);
        }
        let max = self.limits.max_value_bytes;
        if value.len() > max {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                max,
            });
        }
        let all = self.customer_metadata();
        let old = all.get(key);
        if old.is_none() && all.len() >= self.limits.max_keys {
            return Err(StoreError::TooManyKeys {
                max: self.limits.max_keys,
            });
        }
        let total: usize = all.iter().map(|(k, v)| k.len() + v.len()).sum();
        let after = total - old.map_or(0, |v| key.len() + v.len()) + key.len() + value.len();
        if after > self.limits.max_total_bytes && after > total {
            return Err(StoreError::TooManyBytes {
                max: self.limits.max_total_bytes,
            });
        }
        self.write(key, Some(value.to_string()))
    }

    /// A guest DELETE; deleting an absent key succeeds, as on SmartOS.
    pub fn delete(&mut self, key: &str) -> Result<(), StoreError> {
        self.check_writable(key)?;
        self.write(key, None)
    }

    fn check_writable(&self, key: &str) -> Result<(), StoreError> {
        if key.starts_with("sdc:") {
            return Err(StoreError::ReadOnly("sdc".into()));
        }
        let max = self.limits.max_key_bytes;
        if key.len() > max {
            return Err(StoreError::KeyTooLong {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    /// Records a write and saves it; on a failed save the store is left as it was.
    fn write(&mut self, key: &str, value: Option<String>) -> Result<(), StoreError> {
        let base = self.manifest.get(key).cloned();
        let entry = if value.is_none() && base.is_none() {
            // Deleting a key the manifest does not name: nothing to remember.
            None
        } else {
            Some(GuestWrite { value, base })
        };
        let previous = match entry {
            Some(e) => self.guest.insert(key.to_string(), e),
            None => self.guest.remove(key),
        };
        if let Err(e) = self.save() {
            match previous {
                Some(p) => self.guest.insert(key.to_string(), p),
                None => self.guest.remove(key),
            };
            return Err(e);
        }
        Ok(())
    }

    fn save(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = StoreFile {
            version: FILE_VERSION,
            guest: self.guest.clone(),
        };
        spec::atomic::write_json_atomic(path, &file).map_err(|source| StoreError::Save {
            path: path.clone(),
            source,
        })
    }
}

/// `manifest` with the guest's `writes` applied.
fn overlay(
    mut manifest: BTreeMap<String, String>,
    writes: &BTreeMap<String, GuestWrite>,
) -> BTreeMap<String, String> {
    for (key, write) in writes {
        match &write.value {
            Some(v) => manifest.insert(key.clone(), v.clone()),
            None => manifest.remove(key),
        };
    }
    manifest
}

/// Reads the persisted guest writes, bounded: a file can hold no more than the store
/// lets guests write (JSON escaping at most sextuples a byte), so anything larger was
/// not written by a store and is refused rather than read whole.
fn read_file(path: &Path, limits: &Limits) -> Result<StoreFile, StoreError> {
    use std::io::Read;
    let max = limits
        .max_total_bytes
        .saturating_mul(6)
        .saturating_add(64 << 10);
    let read_err = |source| StoreError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StoreFile::default()),
        Err(e) => return Err(read_err(e)),
    };
    let mut data = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() > max {
        return Err(read_err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {max} bytes a store writes"),
        )));
    }
    serde_json::from_slice(&data).map_err(|source| StoreError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_spec_serves_its_script_data_and_keys_under_smartos_names() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPTlaXfXGmWO0/kUFKX0YQX/QTGxiNTFhEFN+D8Kgst1 op@desk";
        let kdl = format!(
            "hvm v {{ image \"debian-hvm@12\"; user-script \"#!/bin/sh\\ntouch /ok\\n\"; user-data \"hello\"; ssh-key \"{key}\"; ssh-key \"{key}2\"; metadata {{ role \"web\"; }} }}"
        );
        // "...2" changes the comment only: the same key material under two comments.
        let spec = spec::parse_str("v.kdl", &kdl).unwrap().remove(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        let mut s = MetadataStore::open_spec(&path, &spec, "u-1", &[], Limits::default()).unwrap();
        assert_eq!(
            s.get("user-script").as_deref(),
            Some("#!/bin/sh\ntouch /ok\n")
        );
        assert_eq!(s.get("user-data").as_deref(), Some("hello"));
        assert_eq!(
            s.get("root_authorized_keys").unwrap(),
            format!("{key}\n{key}2\n")
        );
        assert_eq!(s.get("sdc:uuid").as_deref(), Some("u-1"));
        assert_eq!(
            s.keys(),
            vec!["role", "root_authorized_keys", "user-data", "user-script"]
        );
        let mut edited = spec.clone();
        edited.user_script = None;
        edited.ssh_keys.truncate(1);
        s.set_spec(&edited, "u-1", &[]).unwrap();
        assert_eq!(s.get("user-script"), None);
        assert_eq!(s.get("root_authorized_keys").unwrap(), format!("{key}\n"));
    }

    #[test]
    fn guest_writes_persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        let m = manifest(&[("role", "web")]);
        let mut s =
            MetadataStore::open(&path, InstanceInfo::default(), m.clone(), Limits::default())
                .unwrap();
        s.put("color", "blue").unwrap();
        s.delete("role").unwrap();
        drop(s);
        let s = MetadataStore::open(&path, InstanceInfo::default(), m, Limits::default()).unwrap();
        assert_eq!(s.get("color").as_deref(), Some("blue"));
        assert_eq!(s.get("role"), None);
        assert_eq!(s.keys(), vec!["color"]);
        assert_eq!(s.guest_written(), vec!["color", "role"]);
    }

    #[test]
    fn a_peek_shows_the_guests_writes_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        let spec = |role: &str| {
            let kdl = format!(
                "zone z {{ image \"busybox\"; metadata {{ role \"{role}\"; tier \"1\"; }} }}"
            );
            spec::parse_str("z.kdl", &kdl).unwrap().remove(0)
        };
        let web = spec("web");
        let limits = Limits::default();
        assert_eq!(
            MetadataStore::peek_spec(&path, &web, limits).unwrap(),
            manifest(&[("role", "web"), ("tier", "1")])
        );
        let mut s = MetadataStore::open_spec(&path, &web, "u-1", &[], limits).unwrap();
        s.put("color", "blue").unwrap();
        s.put("role", "db").unwrap();
        s.delete("tier").unwrap();
        let saved = std::fs::read(&path).unwrap();
        assert_eq!(
            MetadataStore::peek_spec(&path, &web, limits).unwrap(),
            manifest(&[("color", "blue"), ("role", "db")])
        );
        // An operator's newer value wins over the guest's write of that key, and the
        // peek leaves the file to the store's owner.
        assert_eq!(
            MetadataStore::peek_spec(&path, &spec("cache"), limits).unwrap(),
            manifest(&[("color", "blue"), ("role", "cache")])
        );
        assert_eq!(std::fs::read(&path).unwrap(), saved);
        // A file no store could have written is refused, not read whole.
        let small = Limits {
            max_total_bytes: 16,
            ..limits
        };
        std::fs::write(&path, vec![b' '; 200 << 10]).unwrap();
        let err = MetadataStore::peek_spec(&path, &web, small).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn a_changed_manifest_value_wins_over_the_guest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        let mut s = MetadataStore::open(
            &path,
            InstanceInfo::default(),
            manifest(&[("a", "1"), ("b", "1")]),
            Limits::default(),
        )
        .unwrap();
        s.put("a", "guest").unwrap();
        s.put("b", "guest").unwrap();
        s.put("c", "guest").unwrap();
        // The operator edits b and starts naming c; a is untouched.
        s.set_manifest(manifest(&[("a", "1"), ("b", "2"), ("c", "op")]))
            .unwrap();
        assert_eq!(s.get("a").as_deref(), Some("guest"));
        assert_eq!(s.get("b").as_deref(), Some("2"));
        assert_eq!(s.get("c").as_deref(), Some("op"));
        // The same holds after a restart with that manifest.
        let s = MetadataStore::open(
            &path,
            InstanceInfo::default(),
            manifest(&[("a", "1"), ("b", "2"), ("c", "op")]),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(
            s.customer_metadata(),
            manifest(&[("a", "guest"), ("b", "2"), ("c", "op")])
        );
    }

    #[test]
    fn sdc_keys_are_read_only_and_bounds_hold() {
        let limits = Limits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_keys: 2,
            max_total_bytes: 30,
        };
        let info = InstanceInfo {
            uuid: "u1".into(),
            ..Default::default()
        };
        let mut s = MetadataStore::in_memory(info, BTreeMap::new(), limits);
        assert!(matches!(
            s.put("sdc:uuid", "x"),
            Err(StoreError::ReadOnly(_))
        ));
        assert!(matches!(s.delete("sdc:uuid"), Err(StoreError::ReadOnly(_))));
        assert_eq!(s.get("sdc:uuid").as_deref(), Some("u1"));
        assert!(matches!(
            s.put("123456789", "x"),
            Err(StoreError::KeyTooLong { .. })
        ));
        assert!(matches!(
            s.put("k", &"x".repeat(17)),
            Err(StoreError::ValueTooLarge { .. })
        ));
        s.put("k1", &"x".repeat(16)).unwrap();
        assert!(matches!(
            s.put("k2", &"x".repeat(16)),
            Err(StoreError::TooManyBytes { .. })
        ));
        s.put("k2", "y").unwrap();
        assert!(matches!(
            s.put("k3", "z"),
            Err(StoreError::TooManyKeys { .. })
        ));
        // Replacing an existing key is not a new key.
        s.put("k2", "w").unwrap();
        // An empty value deletes, as on SmartOS.
        s.put("k2", "").unwrap();
        assert_eq!(s.keys(), vec!["k1"]);
    }

    #[test]
    fn a_failed_save_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("metadata.json");
        let mut s = MetadataStore::open(
            &path,
            InstanceInfo::default(),
            BTreeMap::new(),
            Limits::default(),
        )
        .unwrap();
        assert!(matches!(s.put("a", "b"), Err(StoreError::Save { .. })));
        assert_eq!(s.get("a"), None);
    }
}
