//! One pull: reference -> (index ->) manifest -> config + layers -> a `zone-dataset`
//! image in the store, or nothing at all.

use std::fs;

use serde::Deserialize;

use super::registry::{Fetched, Registry};
use super::{
    auth, uuid_for, ContainerDefaults, Descriptor, OciOrigin, OciReference, DOCKER_LIST, OCI_INDEX,
    ORIGIN_KEY,
};
use crate::error::StoreError;
use crate::manifest::{Compression, ImageFile, ImageKind, ImageManifest};
use crate::store::{Image, ImageStore, ROOT_DIR};
use crate::unpack::{apply_layer, Budget};

/// Most layers one image may have (Docker's own limit is 127).
const MAX_LAYERS: usize = 256;
/// Largest image config blob.
const MAX_CONFIG: u64 = 1 << 20;

#[derive(Deserialize)]
struct IndexDoc {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ManifestDoc {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ConfigDoc {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<ConfigInner>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigInner {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

fn connect(store: &ImageStore, r: &OciReference) -> Result<Registry, StoreError> {
    let scheme = crate::sources::registry_scheme(store.pool(), &r.registry)?;
    let creds = auth::credentials(store.pool(), &r.registry)?;
    Registry::new(r, scheme, creds, Default::default())
}

/// The image manifest `r` names for linux/amd64, and the digest `r` resolved to.
fn resolve(reg: &Registry, r: &OciReference) -> Result<(Fetched, String), StoreError> {
    let top = reg.manifest(r.manifest_ref())?;
    let resolved = top.digest.clone();
    if top.media_type != OCI_INDEX && top.media_type != DOCKER_LIST {
        return Ok((top, resolved));
    }
    let index: IndexDoc = serde_json::from_slice(&top.bytes)
        .map_err(|e| reg.err(Some(&resolved), format!("not an image index: {e}")))?;
    let pick = index
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .ok_or_else(|| reg.err(Some(&resolved), "the index has no linux/amd64 image"))?;
    if pick.sha256_hex().is_none() {
        return Err(reg.err(Some(&pick.digest), "not a sha256 digest"));
    }
    let chosen = reg.manifest(&pick.digest)?;
    if chosen.media_type == OCI_INDEX || chosen.media_type == DOCKER_LIST {
        return Err(reg.err(Some(&pick.digest), "an index inside an index"));
    }
    Ok((chosen, resolved))
}

/// The installed image `r` names: same registry and repository, and the digest it
/// pins or the tag it names. No network: a tag that moved is found by [`tag_moved`].
pub fn installed(store: &ImageStore, r: &OciReference) -> Result<Option<Image>, StoreError> {
    Ok(store
        .list()?
        .into_iter()
        .filter(|i| {
            i.manifest.oci().is_some_and(|o| {
                o.reference.name() == r.name()
                    && match &r.digest {
                        Some(d) => &o.digest == d || &o.resolved == d,
                        None => o.reference.tag == r.tag,
                    }
            })
        })
        .max_by(|a, b| crate::manifest::newer(&a.manifest, &b.manifest)))
}

/// Pulls `r` into the store (a digest already installed is returned as it is).
pub fn pull(store: &ImageStore, r: &OciReference) -> Result<Image, StoreError> {
    let reg = connect(store, r)?;
    let (chosen, resolved) = resolve(&reg, r)?;
    let digest = chosen.digest.clone();
    let uuid = uuid_for(&digest);
    if let Some(img) = store.get(&uuid)? {
        return Ok(img);
    }
    let doc: ManifestDoc = serde_json::from_slice(&chosen.bytes)
        .map_err(|e| reg.err(Some(&digest), format!("not an image manifest: {e}")))?;
    if doc.layers.len() > MAX_LAYERS {
        return Err(reg.err(Some(&digest), format!("more than {MAX_LAYERS} layers")));
    }
    let compressions = doc
        .layers
        .iter()
        .map(|l| {
            layer_compression(&l.media_type).ok_or_else(|| {
                reg.err(
                    Some(&l.digest),
                    format!("layer media type {:?} is not a tar layer", l.media_type),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if doc.config.size > MAX_CONFIG {
        return Err(reg.err(Some(&doc.config.digest), "the image config is over 1 MiB"));
    }
    let mut cfg_bytes = Vec::new();
    reg.blob(&doc.config, &mut cfg_bytes)?;
    let cfg: ConfigDoc = serde_json::from_slice(&cfg_bytes).map_err(|e| {
        reg.err(
            Some(&doc.config.digest),
            format!("not an image config: {e}"),
        )
    })?;
    if (cfg.os.as_str(), cfg.architecture.as_str()) != ("linux", "amd64") {
        return Err(reg.err(
            Some(&doc.config.digest),
            format!(
                "the image is for {}/{}, this node runs linux/amd64",
                cfg.os, cfg.architecture
            ),
        ));
    }
    let m = store_manifest(r, &chosen, resolved, uuid, &cfg);
    let p = crate::import::begin(store, &m)?;
    if let Some(img) = store.get(&uuid)? {
        p.discard();
        return Ok(img);
    }
    let file = p.file();
    if let Err(e) = fs::write(&file, &chosen.bytes) {
        p.discard();
        return Err(StoreError::io(&file)(e));
    }
    // Each layer is applied as it streams (no copy of it lands on disk), downloaded
    // and hashed on a second thread (`fetch.rs`), then its size and digest are
    // checked; any failure discards the whole work area.
    crate::import::commit_with(store, &p, &m, |_, stage| {
        let root = stage.join(ROOT_DIR);
        fs::create_dir(&root).map_err(StoreError::io(&root))?;
        let limits = store.unpack_limits();
        // One bound for the whole image, as for a zone-dataset file: a layer that
        // is small on the wire may still inflate without end.
        let budget = Budget::new(limits.rootfs_bytes);
        super::fetch::with_layers(&reg, &doc.layers, |layers| {
            for (l, c) in doc.layers.iter().zip(compressions) {
                let applied = apply_layer(&mut *layers, c, &root, uuid, &limits, &budget);
                if let Err(e) = applied {
                    if let Some(download) = layers.failure() {
                        return Err(download);
                    }
                    let reason = e.to_string();
                    return Err(reg.err(
                        Some(&l.digest),
                        reason.trim_end_matches("; nothing installed"),
                    ));
                }
                layers.finish()?;
            }
            Ok(())
        })
    })
}

/// How a layer of `media_type` is compressed (its magic bytes are checked again when
/// it is opened), or None for what is not a tar layer.
fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// The IMGAPI manifest of the pulled image: its file is the image manifest (so its
/// sha256 is the digest), its origin and container defaults under `oci`.
fn store_manifest(
    r: &OciReference,
    chosen: &Fetched,
    resolved: String,
    uuid: uuid::Uuid,
    cfg: &ConfigDoc,
) -> ImageManifest {
    let inner = cfg.config.as_ref();
    let defaults = ContainerDefaults {
        entrypoint: inner.and_then(|c| c.entrypoint.clone()).unwrap_or_default(),
        cmd: inner.and_then(|c| c.cmd.clone()).unwrap_or_default(),
        env: inner.and_then(|c| c.env.clone()).unwrap_or_default(),
        working_dir: inner
            .and_then(|c| c.working_dir.clone())
            .unwrap_or_default(),
        user: inner.and_then(|c| c.user.clone()).unwrap_or_default(),
    };
    let hex = chosen.digest.trim_start_matches("sha256:").to_string();
    let origin = OciOrigin {
        reference: r.clone(),
        digest: chosen.digest.clone(),
        resolved,
        config: defaults,
    };
    let mut extra = serde_json::Map::new();
    extra.insert(
        ORIGIN_KEY.into(),
        serde_json::to_value(&origin).unwrap_or_default(),
    );
    ImageManifest {
        v: 2,
        uuid,
        owner: uuid::Uuid::nil(),
        name: r.repository.replace('/', "-"),
        version: r
            .tag
            .clone()
            .unwrap_or_else(|| format!("sha256-{}", &hex[..12])),
        state: "active".into(),
        disabled: false,
        public: true,
        // When it was pulled: of two pulls of one tag, the later is what the tag means
        // here (a config's `created` may be anything, or the same for both).
        published_at: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        kind: ImageKind::ZoneDataset,
        os: "linux".into(),
        description: r.to_string(),
        files: vec![ImageFile {
            sha1: None,
            sha256: Some(hex),
            size: chosen.bytes.len() as u64,
            compression: Compression::None,
            extra: Default::default(),
        }],
        requirements: serde_json::Value::Object(Default::default()),
        extra,
    }
}

/// A tag whose registry digest is no longer the installed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagMove {
    /// The reference as installed.
    pub reference: OciReference,
    /// Digest installed.
    pub installed: String,
    /// Digest the registry has for the tag now.
    pub now: String,
}

/// Asks the registry where `img`'s tag points now; None when it did not move (or the
/// image is not a tagged OCI image).
pub fn tag_moved(store: &ImageStore, img: &Image) -> Result<Option<TagMove>, StoreError> {
    let Some(o) = img.manifest.oci() else {
        return Ok(None);
    };
    if o.reference.digest.is_some() {
        return Ok(None);
    }
    // Only the image the tag means here (its latest pull) can have moved.
    if installed(store, &o.reference)?.is_some_and(|cur| cur.uuid != img.uuid) {
        return Ok(None);
    }
    let reg = connect(store, &o.reference)?;
    let now = reg.manifest(o.reference.manifest_ref())?.digest;
    Ok((now != o.resolved).then_some(TagMove {
        reference: o.reference,
        installed: o.resolved,
        now,
    }))
}
