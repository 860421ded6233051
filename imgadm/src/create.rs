//! `imgadm create`: a new image made from a stopped instance of the pool.
//!
//! A zone becomes a `zone-dataset`: its image's tree with its writable layer
//! (`<pool>/<uuid>/upper`, the overlay's upper directory) applied the way overlayfs
//! shows it (an upper entry hides the lower one, a whiteout (a 0:0 character device)
//! deletes it, an opaque directory hides the lower directory's contents), owners
//! shifted back from the zone's host id range, as one uncompressed tarball. An HVM
//! becomes a `zvol` of its boot disk. Either way the new image gets a new UUID and
//! `origin` naming the source image, and is installed (verified) like any file, so
//! a boot disk without a kernel on an ext4 `/boot` is refused as an import is.

use std::fs::{self, File};
use std::io::{BufWriter, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::StoreError;
use crate::manifest::ImageManifest;
use crate::store::{Image, ImageStore};

/// Deepest directory nesting copied out of a zone.
pub const MAX_DEPTH: usize = 256;
/// Size of a zone's host id range (the zone runtime's `RANGE_SIZE`).
const ID_RANGE: u32 = 65536;

/// Why no image could be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// No instance of that name or UUID in the pool.
    #[error("no instance {0} in the pool")]
    NoInstance(String),
    /// The instance runs (its writable layer or disk is changing).
    #[error("instance {name} is {state}: stop it before making an image of it")]
    NotStopped {
        /// The instance.
        name: String,
        /// Its state.
        state: String,
    },
    /// Its image is not in the store.
    #[error("instance {name}: its image {image:?} is not installed")]
    NoImage {
        /// The instance.
        name: String,
        /// The image UUID its record names.
        image: String,
    },
    /// An HVM without a boot disk.
    #[error("instance {0} has no boot disk")]
    NoBootDisk(String),
    /// The manifest template is not a JSON object, or the result is not valid.
    #[error("manifest {path}: {reason}")]
    Manifest {
        /// The template.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the instance or writing the image failed, or the install refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes an image of the stopped instance `instance` (name or UUID) from the
/// manifest template `template` (its `name`, `version`, `description`, ... are
/// kept; `v`, `uuid`, `type`, `files`, `origin` are set here).
pub fn create(
    store: &ImageStore,
    instance: &str,
    template: &serde_json::Value,
    template_path: &str,
) -> Result<Image, CreateError> {
    let pool = store.pool();
    let (records, _) = spec::pool::load_records(pool);
    let rec = records
        .into_iter()
        .find(|r| r.name == instance || r.uuid == instance)
        .ok_or_else(|| CreateError::NoInstance(instance.to_string()))?;
    if rec.state != spec::State::Stopped {
        return Err(CreateError::NotStopped {
            name: rec.name,
            state: rec.state.to_string(),
        });
    }
    let source = Uuid::parse_str(&rec.image_uuid)
        .ok()
        .and_then(|u| store.get(&u).transpose())
        .transpose()?
        .ok_or_else(|| CreateError::NoImage {
            name: rec.name.clone(),
            image: rec.image_uuid.clone(),
        })?;
    let work = store
        .partial_root()
        .join(format!("create-{}", Uuid::new_v4()));
    fs::create_dir_all(&work).map_err(StoreError::io(&work))?;
    let result = (|| {
        let (kind, file) = match &rec.spec.kind {
            spec::Kind::Zone(_) => {
                let file = work.join("file");
                let upper = spec::pool::instance_dir(pool, &rec.uuid).join("upper");
                write_merged_tar(&source.path, &upper, rec.id_range_start, &file)?;
                ("zone-dataset", file)
            }
            spec::Kind::Hvm(h) => {
                let boot = h
                    .disks
                    .iter()
                    .find(|d| d.boot)
                    .ok_or_else(|| CreateError::NoBootDisk(rec.name.clone()))?;
                ("zvol", monitor::disk_path(pool, &rec.uuid, &boot.name))
            }
        };
        let m = manifest(template, template_path, kind, &file, source.uuid)?;
        Ok(store.install_file(&m, &file)?)
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

/// The new image's manifest: the template plus what this image is.
fn manifest(
    template: &serde_json::Value,
    path: &str,
    kind: &str,
    file: &Path,
    origin: Uuid,
) -> Result<ImageManifest, CreateError> {
    let bad = |reason: String| CreateError::Manifest {
        path: path.to_string(),
        reason,
    };
    let mut m = template
        .as_object()
        .cloned()
        .ok_or_else(|| bad("is not a JSON object".into()))?;
    let (sha256, size) = hash(file)?;
    for (k, v) in [
        ("v", serde_json::json!(2)),
        ("uuid", serde_json::json!(Uuid::new_v4())),
        ("type", serde_json::json!(kind)),
        ("origin", serde_json::json!(origin)),
        (
            "files",
            serde_json::json!([{"sha256": sha256, "size": size, "compression": "none"}]),
        ),
    ] {
        m.insert(k.into(), v);
    }
    let data = serde_json::to_vec(&m).map_err(|e| bad(e.to_string()))?;
    ImageManifest::from_json(&data, path).map_err(|e| bad(e.to_string()))
}

fn hash(file: &Path) -> Result<(String, u64), StoreError> {
    let mut f = File::open(file).map_err(StoreError::io(file))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(StoreError::io(file))?;
        if n == 0 {
            return Ok((hex::encode(h.finalize()), size));
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
}

/// Writes the overlay view of `lower` under `upper` as a tarball at `out`.
fn write_merged_tar(lower: &Path, upper: &Path, shift: u32, out: &Path) -> Result<(), StoreError> {
    let f = File::create(out).map_err(StoreError::io(out))?;
    let mut tar = tar::Builder::new(BufWriter::new(f));
    tar.follow_symlinks(false);
    let upper = upper.is_dir().then(|| upper.to_path_buf());
    walk(
        &mut tar,
        Some(lower.to_path_buf()),
        upper,
        Path::new(""),
        shift,
        0,
    )?;
    tar.into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .map_err(StoreError::io(out))
}

fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|k| xattr::get(dir, k).ok().flatten().as_deref() == Some(b"y"))
}

/// Appends the merged directory `rel` (its `lower` and `upper` sides, either absent).
fn walk<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    lower: Option<PathBuf>,
    upper: Option<PathBuf>,
    rel: &Path,
    shift: u32,
    depth: usize,
) -> Result<(), StoreError> {
    if depth > MAX_DEPTH {
        let at = upper.or(lower).unwrap_or_default();
        return Err(StoreError::io(&at)(std::io::Error::other(format!(
            "nested deeper than {MAX_DEPTH} directories"
        ))));
    }
    let mut names = std::collections::BTreeSet::new();
    for dir in [&lower, &upper].into_iter().flatten() {
        for e in fs::read_dir(dir).map_err(StoreError::io(dir))? {
            names.insert(e.map_err(StoreError::io(dir))?.file_name());
        }
    }
    for name in names {
        let lp = lower.as_ref().map(|d| d.join(&name));
        let up = upper.as_ref().map(|d| d.join(&name));
        let lmd = lp.as_ref().and_then(|p| fs::symlink_metadata(p).ok());
        let umd = up.as_ref().and_then(|p| fs::symlink_metadata(p).ok());
        let rel = rel.join(&name);
        let (path, md, from_upper) = match (umd, lmd) {
            (Some(u), _) if is_whiteout(&u) => continue,
            (Some(u), _) => (up.clone().unwrap_or_default(), u, true),
            (None, Some(l)) => (lp.clone().unwrap_or_default(), l, false),
            (None, None) => continue,
        };
        append(tar, &path, &md, &rel, if from_upper { shift } else { 0 })?;
        if md.is_dir() {
            // The lower directory shows through unless the upper one replaced it.
            let lower_dir = match (from_upper, &lp) {
                (true, Some(l)) if !is_opaque(&path) && l.is_dir() && !l.is_symlink() => {
                    Some(l.clone())
                }
                (true, _) => None,
                (false, l) => l.clone(),
            };
            let upper_dir = if from_upper { Some(path.clone()) } else { None };
            walk(tar, lower_dir, upper_dir, &rel, shift, depth + 1)?;
        }
    }
    Ok(())
}

/// Appends one entry with its mode, mtime and owners (shifted back by `shift` when
/// inside the zone's id range). Devices, fifos and sockets are left out (the zone
/// runtime makes /dev).
fn append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    md: &fs::Metadata,
    rel: &Path,
    shift: u32,
) -> Result<(), StoreError> {
    let unshift = |id: u32| {
        if shift > 0 && id >= shift && id - shift < ID_RANGE {
            id - shift
        } else {
            id
        }
    };
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(md, tar::HeaderMode::Complete);
    h.set_uid(u64::from(unshift(md.uid())));
    h.set_gid(u64::from(unshift(md.gid())));
    let ft = md.file_type();
    let io = StoreError::io(path);
    let r = if ft.is_symlink() {
        let target = fs::read_link(path).map_err(StoreError::io(path))?;
        h.set_size(0);
        tar.append_link(&mut h, rel, target)
    } else if ft.is_dir() {
        h.set_size(0);
        tar.append_data(&mut h, rel, std::io::empty())
    } else if ft.is_file() {
        let f = File::open(path).map_err(StoreError::io(path))?;
        tar.append_data(&mut h, rel, f)
    } else {
        return Ok(());
    };
    r.map_err(io)
}
