//! The image store in the pool: `<pool>/images/<uuid>/` holds `manifest.json`, the
//! verified `file`, and the payload instances use (`root/` for a zone dataset,
//! `disk.raw` or `file` for a zvol).
//!
//! Only complete images live under a UUID name. Work in progress lives in
//! `<pool>/images/.partial/<uuid>/` and becomes visible by one `rename`, so a crash at
//! any instant leaves either no image or a whole one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use spec::ImageRef;
use uuid::Uuid;

use crate::error::StoreError;
use crate::manifest::{newer, Compression, ImageKind, ImageManifest};
use crate::sources::{self, SourceClient};

/// An installed image.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The IMGAPI manifest it was installed with.
    pub manifest: ImageManifest,
    /// Its UUID.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Payload type.
    pub kind: ImageKind,
    /// Zone dataset: the unpacked rootfs directory. Zvol: the raw disk file.
    pub path: PathBuf,
}

impl Image {
    fn from_manifest(dir: &Path, manifest: ImageManifest) -> Image {
        let path = payload_path(dir, &manifest);
        Image {
            uuid: manifest.uuid,
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            kind: manifest.kind,
            path,
            manifest,
        }
    }
}

/// Where the payload of an image lives inside its directory `dir`.
pub(crate) fn payload_path(dir: &Path, m: &ImageManifest) -> PathBuf {
    match (m.kind, m.file().compression) {
        (ImageKind::ZoneDataset, _) => dir.join(ROOT_DIR),
        // A qcow2 file was converted to a raw disk at import.
        (ImageKind::Zvol, Compression::None) if dir.join(DISK_NAME).exists() => dir.join(DISK_NAME),
        (ImageKind::Zvol, Compression::None) => dir.join(FILE_NAME),
        (ImageKind::Zvol, _) => dir.join(DISK_NAME),
    }
}

/// Name of the verified image file inside an image directory.
pub(crate) const FILE_NAME: &str = "file";
/// Name of the unpacked rootfs of a zone dataset.
pub(crate) const ROOT_DIR: &str = "root";
/// Name of a decompressed zvol disk.
pub(crate) const DISK_NAME: &str = "disk.raw";
/// Name of the manifest inside an image directory.
pub(crate) const MANIFEST_NAME: &str = "manifest.json";
/// Work area for imports, deletes and resumable downloads.
pub(crate) const PARTIAL_DIR: &str = ".partial";

/// The image store of one pool.
#[derive(Debug, Clone)]
pub struct ImageStore {
    pool: PathBuf,
    images: PathBuf,
    extra_sources: Vec<String>,
    progress: bool,
    unpack: crate::unpack::UnpackLimits,
}

impl ImageStore {
    /// Opens the store of `pool`, creating `<pool>/images` if missing.
    pub fn open(pool: &Path) -> Result<ImageStore, StoreError> {
        Self::open_with_sources(pool, &[])
    }

    /// Like [`ImageStore::open`], with more source URLs (from `SKERRY_SOURCES` or the
    /// `skerry.sources=` boot argument) consulted after the configured ones.
    pub fn open_with_sources(pool: &Path, extra: &[String]) -> Result<ImageStore, StoreError> {
        let images = spec::pool::images_dir(pool);
        fs::create_dir_all(images.join(PARTIAL_DIR)).map_err(StoreError::io(&images))?;
        Ok(ImageStore {
            pool: pool.to_path_buf(),
            images,
            extra_sources: extra
                .iter()
                .map(|s| s.trim().trim_end_matches('/').to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            progress: true,
            unpack: crate::unpack::UnpackLimits::default(),
        })
    }

    /// Bounds what imported image files may decompress to (the defaults are
    /// [`crate::unpack::UnpackLimits::default`]).
    pub fn with_unpack_limits(mut self, limits: crate::unpack::UnpackLimits) -> ImageStore {
        self.unpack = limits;
        self
    }

    /// The bounds on what imported image files may decompress to.
    pub fn unpack_limits(&self) -> crate::unpack::UnpackLimits {
        self.unpack
    }

    /// Never draw import progress bars, even when stderr is a terminal. For daemons
    /// such as init, whose stderr is the node's serial console: a bar redrawn there
    /// floods the console log instead of updating in place.
    pub fn without_progress(mut self) -> ImageStore {
        self.progress = false;
        self
    }

    /// Whether imports may draw a progress bar (on a terminal only).
    pub fn shows_progress(&self) -> bool {
        self.progress
    }

    /// The pool this store lives in.
    pub fn pool(&self) -> &Path {
        &self.pool
    }

    /// `<pool>/images`.
    pub fn images_dir(&self) -> &Path {
        &self.images
    }

    /// The directory of image `uuid` (whether or not it is installed).
    pub fn image_dir(&self, uuid: &Uuid) -> PathBuf {
        self.images.join(uuid.to_string())
    }

    pub(crate) fn partial_root(&self) -> PathBuf {
        self.images.join(PARTIAL_DIR)
    }

    /// Every installed image, oldest first. An image directory with an unreadable
    /// manifest is reported on the log and left alone, never deleted.
    pub fn list(&self) -> Result<Vec<Image>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.images).map_err(StoreError::io(&self.images))? {
            let entry = entry.map_err(StoreError::io(&self.images))?;
            let Some(uuid) = entry
                .file_name()
                .to_str()
                .and_then(|s| Uuid::parse_str(s).ok())
            else {
                continue;
            };
            match self.get(&uuid) {
                Ok(Some(img)) => out.push(img),
                Ok(None) => {}
                Err(e) => log::warn!("skipping image directory: {e}"),
            }
        }
        out.sort_by(|a, b| newer(&a.manifest, &b.manifest));
        Ok(out)
    }

    /// The installed image `uuid`, if any.
    pub fn get(&self, uuid: &Uuid) -> Result<Option<Image>, StoreError> {
        let dir = self.image_dir(uuid);
        let mpath = dir.join(MANIFEST_NAME);
        let data = match fs::read(&mpath) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&mpath)(e)),
        };
        let m = ImageManifest::from_json(&data, &mpath.display().to_string())?;
        if m.uuid != *uuid {
            return Err(StoreError::BadManifest {
                origin: mpath.display().to_string(),
                reason: format!("uuid {} does not match its directory {uuid}", m.uuid),
            });
        }
        Ok(Some(Image::from_manifest(&dir, m)))
    }

    /// Looks an image up by UUID, `name@version`, or `name` (newest version).
    pub fn resolve(&self, r: &ImageRef) -> Result<Option<Image>, StoreError> {
        match r {
            ImageRef::Uuid(u) => self.get(u),
            ImageRef::Oci(o) => crate::oci::installed(self, o),
            ImageRef::Name { name, version } => Ok(self
                .list()?
                .into_iter()
                .filter(|i| &i.name == name && version.as_ref().is_none_or(|v| &i.version == v))
                .max_by(|a, b| newer(&a.manifest, &b.manifest))),
        }
    }

    /// The installed image for `r`, importing it from the sources when missing.
    pub fn ensure(&self, r: &ImageRef) -> Result<Image, StoreError> {
        match self.resolve(r)? {
            Some(img) => Ok(img),
            None => self.import_ref(r),
        }
    }

    /// Resolves `r` against the configured sources and imports it; returns the
    /// installed image (already installed images are returned as they are).
    pub fn import_ref(&self, r: &ImageRef) -> Result<Image, StoreError> {
        if let ImageRef::Oci(o) = r {
            return crate::oci::pull(self, o);
        }
        let (client, manifest) = self.find_in_sources(r)?;
        self.import_with(&client, &manifest)
    }

    /// Imports `manifest` through `client` (and the limits it holds the source to);
    /// an already installed image is returned as it is.
    pub fn import_with(
        &self,
        client: &SourceClient,
        manifest: &ImageManifest,
    ) -> Result<Image, StoreError> {
        if let Some(img) = self.get(&manifest.uuid)? {
            return Ok(img);
        }
        crate::import::import_from_source(self, client, manifest)
    }

    /// The manifest `r` resolves to in the sources (first source that has it; for a
    /// bare name, the newest version across all sources). OCI references are not in
    /// IMGAPI sources: they are pulled from their registry by [`ImageStore::import_ref`].
    pub fn find_in_sources(
        &self,
        r: &ImageRef,
    ) -> Result<(SourceClient, ImageManifest), StoreError> {
        if let ImageRef::Oci(o) = r {
            return Err(StoreError::NotFound(format!(
                "{o} is in a registry, not an IMGAPI source: `imgadm import {o}` pulls it"
            )));
        }
        let urls = self.sources()?;
        if urls.is_empty() {
            return Err(StoreError::NoSources);
        }
        let mut best: Option<(SourceClient, ImageManifest)> = None;
        let mut errors = Vec::new();
        for url in urls {
            let client = SourceClient::new(&url)?;
            let found = match r {
                ImageRef::Uuid(u) => client.get(u),
                ImageRef::Oci(_) => Ok(None),
                ImageRef::Name { name, version } => client.list().map(|all| {
                    all.into_iter()
                        .filter(|m| {
                            &m.name == name && version.as_ref().is_none_or(|v| &m.version == v)
                        })
                        .max_by(newer)
                }),
            };
            match found {
                Ok(Some(m)) => {
                    if matches!(r, ImageRef::Uuid(_)) {
                        return Ok((client, m));
                    }
                    if best.as_ref().is_none_or(|(_, b)| newer(&m, b).is_gt()) {
                        best = Some((client, m));
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        best.ok_or_else(|| {
            let what = r.to_string();
            if errors.is_empty() {
                StoreError::NotFound(format!("{what} (in no configured source)"))
            } else {
                StoreError::NotFound(format!("{what} (source errors: {})", errors.join("; ")))
            }
        })
    }

    /// Deletes image `uuid`. Refused while `in_use_by` names instances using it.
    pub fn delete(&self, uuid: &Uuid, in_use_by: &[String]) -> Result<(), StoreError> {
        if !in_use_by.is_empty() {
            return Err(StoreError::InUse {
                uuid: *uuid,
                by: in_use_by.to_vec(),
            });
        }
        let dir = self.image_dir(uuid);
        if !dir.join(MANIFEST_NAME).exists() {
            return Err(StoreError::NotFound(uuid.to_string()));
        }
        // Out of sight first (one rename), then removed at leisure: a crash midway
        // leaves debris in .partial, never half an image under its UUID.
        let trash = self
            .partial_root()
            .join(format!("deleted-{uuid}-{}", std::process::id()));
        fs::rename(&dir, &trash).map_err(StoreError::io(&dir))?;
        sync_dir(&self.images)?;
        fs::remove_dir_all(&trash).map_err(StoreError::io(&trash))
    }

    /// Removes the work areas and lock files of imports that died without cleaning
    /// up (a killed `imgadm` child); imports running now keep theirs. Returns the
    /// UUIDs whose leftovers went.
    pub fn clean_abandoned(&self) -> Result<Vec<Uuid>, StoreError> {
        crate::import::clean_abandoned(self)
    }

    /// The source URLs: the pool's `config/sources.json`, then the extra ones.
    pub fn sources(&self) -> Result<Vec<String>, StoreError> {
        let mut all = sources::load(&self.pool)?;
        for s in &self.extra_sources {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        Ok(all)
    }

    /// Adds a source URL to the pool's configuration.
    pub fn add_source(&self, url: &str) -> Result<(), StoreError> {
        sources::add(&self.pool, url)
    }

    /// Removes a source URL from the pool's configuration.
    pub fn remove_source(&self, url: &str) -> Result<(), StoreError> {
        sources::remove(&self.pool, url)
    }

    /// Installs an image from a local manifest and file (verified like an import).
    pub fn install_file(&self, manifest: &ImageManifest, file: &Path) -> Result<Image, StoreError> {
        crate::import::install_local(self, manifest, file)
    }

    /// Removes images no instance uses and no stored image has as its origin, and
    /// abandoned import debris. Returns what was
    /// (or, with `dry_run`, would be) removed. Partial downloads younger than a day are
    /// kept: they are what a resumed import continues from.
    pub fn vacuum(&self, dry_run: bool) -> Result<Vec<Image>, StoreError> {
        let unused = crate::vacuum::unused(self)?;
        if dry_run {
            return Ok(unused);
        }
        for img in &unused {
            self.delete(&img.uuid, &[])?;
        }
        crate::import::clean_partials(self, std::time::Duration::from_secs(86400))?;
        Ok(unused)
    }
}

/// Parses `UUID`, `oci:REGISTRY/REPO:TAG`, `name@version` or `name`, refusing an
/// `oci:` text that is not a reference (with the reason).
pub fn parse_checked_ref(s: &str) -> Result<ImageRef, StoreError> {
    if s.starts_with(spec::oci::PREFIX) {
        return s
            .parse()
            .map(ImageRef::Oci)
            .map_err(|e: spec::oci::BadReference| StoreError::NotFound(e.to_string()));
    }
    Ok(parse_ref(s))
}

/// Parses `UUID`, `oci:REGISTRY/REPO:TAG`, `name@version` or `name` (an `oci:` text
/// that is not a reference is taken as a name no image has).
pub fn parse_ref(s: &str) -> ImageRef {
    if let Ok(u) = Uuid::parse_str(s) {
        return ImageRef::Uuid(u);
    }
    if let Ok(r) = s.parse() {
        return ImageRef::Oci(r);
    }
    match s.split_once('@') {
        Some((n, v)) => ImageRef::Name {
            name: n.to_string(),
            version: Some(v.to_string()),
        },
        None => ImageRef::Name {
            name: s.to_string(),
            version: None,
        },
    }
}

/// Which instances of the pool use which image, from each `<pool>/<uuid>/state.json`
/// as init records it ([`spec::pool::InstanceRecord`]). An unreadable record is
/// logged and skipped: it cannot say which image it holds.
pub fn instances_using(pool: &Path) -> Result<BTreeMap<Uuid, Vec<String>>, StoreError> {
    let (records, errors) = spec::pool::load_records(pool);
    for e in errors {
        match e {
            spec::pool::RecordError::Io { path, source } if path == pool => {
                return Err(StoreError::io(pool)(source))
            }
            e => log::warn!("unreadable instance state: {e}"),
        }
    }
    let mut used: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    for rec in records {
        if let Ok(img) = Uuid::parse_str(&rec.image_uuid) {
            used.entry(img).or_default().push(rec.name);
        }
    }
    Ok(used)
}

/// fsync of a directory, so a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse_like_manifests_write_them() {
        let u = Uuid::new_v4();
        assert_eq!(parse_ref(&u.to_string()), ImageRef::Uuid(u));
        assert_eq!(
            parse_ref("busybox@1.36"),
            ImageRef::Name {
                name: "busybox".into(),
                version: Some("1.36".into())
            }
        );
        assert_eq!(
            parse_ref("debian"),
            ImageRef::Name {
                name: "debian".into(),
                version: None
            }
        );
        assert_eq!(
            spec::manifest::image_text(&parse_ref("debian-hvm@12")),
            "debian-hvm@12"
        );
    }

    #[test]
    fn instances_using_reads_init_state_files() {
        let pool = tempfile::tempdir().unwrap();
        let img = Uuid::new_v4();
        for (name, image) in [("web01", img.to_string()), ("db01", String::new())] {
            let uuid = Uuid::new_v4().to_string();
            let dir = spec::pool::instance_dir(pool.path(), &uuid);
            fs::create_dir(&dir).unwrap();
            let state = spec::pool::InstanceRecord {
                image_uuid: image,
                ..spec::pool::InstanceRecord::provisioning(
                    uuid.clone(),
                    spec::InstanceSpec::zone(name, parse_ref("busybox")),
                )
            };
            let path = spec::pool::state_path(pool.path(), &uuid);
            fs::write(path, serde_json::to_string(&state).unwrap()).unwrap();
        }
        fs::create_dir(pool.path().join("images")).unwrap();
        let corrupt = pool.path().join(Uuid::new_v4().to_string());
        fs::create_dir(&corrupt).unwrap();
        fs::write(corrupt.join("state.json"), "{not json").unwrap();
        let used = instances_using(pool.path()).unwrap();
        assert_eq!(used.len(), 1);
        assert_eq!(used[&img], vec!["web01".to_string()]);
    }
}
