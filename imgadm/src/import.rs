//! Streaming, verified, resumable, atomic import.
//!
//! Bytes go from the source (HTTP body or local file) through the hashers into
//! `<pool>/images/.partial/<uuid>/file` in one pass with a fixed buffer, so memory use
//! does not grow with the image. A transfer cut short keeps that partial file; the
//! next import of the same image re-hashes it and asks the server only for the rest
//! (HTTP Range). Once size and checksum match the manifest, the image directory is
//! assembled beside it and renamed into place: the only moment it becomes visible.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::StoreError;
use crate::manifest::{Compression, ImageFile, ImageKind, ImageManifest};
use crate::progress::Progress;
use crate::sources::{error_chain, SourceClient, TimeBoxed};
use crate::store::{sync_dir, Image, ImageStore, FILE_NAME, MANIFEST_NAME, ROOT_DIR};

/// Read/write chunk: large enough for full-speed loopback, small enough to keep the
/// resident set tiny.
const CHUNK: usize = 256 * 1024;

/// The running checksums of one image file: sha256 when the manifest has it, else
/// sha1 (what SmartOS manifests carry), and the byte count.
pub(crate) struct Digests {
    sha256: Option<Sha256>,
    sha1: Option<Sha1>,
    size: u64,
}

impl Digests {
    pub(crate) fn for_file(f: &ImageFile) -> Digests {
        let sha256 = f.sha256.as_ref().map(|_| Sha256::new());
        let sha1 = if sha256.is_none() {
            Some(Sha1::new())
        } else {
            None
        };
        Digests {
            sha256,
            sha1,
            size: 0,
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        self.size += data.len() as u64;
    }

    /// Compares with the manifest; the error names both values.
    pub(crate) fn verify(self, m: &ImageManifest, origin: &str) -> Result<(), StoreError> {
        let f = m.file();
        if self.size != f.size {
            return Err(StoreError::SizeMismatch {
                uuid: m.uuid,
                expected: f.size,
                actual: self.size,
                origin: origin.to_string(),
            });
        }
        let (algorithm, expected, actual) = match (self.sha256, self.sha1) {
            (Some(h), _) => ("sha256", f.sha256.clone(), hex::encode(h.finalize())),
            (None, Some(h)) => ("sha1", f.sha1.clone(), hex::encode(h.finalize())),
            (None, None) => unreachable!("Digests always hashes with one algorithm"),
        };
        let expected = expected.unwrap_or_default();
        if expected != actual {
            return Err(StoreError::ChecksumMismatch {
                uuid: m.uuid,
                algorithm,
                expected,
                actual,
                origin: origin.to_string(),
            });
        }
        Ok(())
    }
}

/// The work area of one import, held under an exclusive lock so that two importers
/// of one image (init and an operator) never interleave. The lock file is removed
/// when the import ends, however it ends (see [`lock`]).
pub(crate) struct Partial {
    pub(crate) dir: PathBuf,
    lock_path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        // Still holding the lock (fields drop after this): whoever waits for it finds
        // the file unlinked and takes a fresh one.
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Takes the exclusive lock at `path`. Its holder unlinks the file when done, so a
/// lock won on a file no longer at `path` guards nothing: take the one there now.
fn lock(path: &Path) -> Result<Flock<File>, StoreError> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(StoreError::io(path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| StoreError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        let held = lock.metadata().map_err(StoreError::io(path))?;
        match fs::metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(lock),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(path)(e)),
        }
    }
}

impl Partial {
    pub(crate) fn file(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Throws away everything of this import (the lock file stays).
    pub(crate) fn discard(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Takes the import lock of `m.uuid` and prepares its partial directory. A partial
/// download left by an earlier attempt is kept only if it was for the same file.
pub(crate) fn begin(store: &ImageStore, m: &ImageManifest) -> Result<Partial, StoreError> {
    let root = store.partial_root();
    fs::create_dir_all(&root).map_err(StoreError::io(&root))?;
    let lock_path = root.join(format!("{}.lock", m.uuid));
    let lock = lock(&lock_path)?;
    let dir = root.join(m.uuid.to_string());
    let p = Partial {
        dir,
        lock_path,
        _lock: lock,
    };
    let mpath = p.dir.join(MANIFEST_NAME);
    let same = fs::read(&mpath)
        .ok()
        .and_then(|d| serde_json::from_slice::<ImageManifest>(&d).ok())
        .is_some_and(|old| old.files == m.files);
    if !same {
        p.discard();
    }
    fs::create_dir_all(&p.dir).map_err(StoreError::io(&p.dir))?;
    let stage = p.dir.join("image");
    if stage.exists() {
        fs::remove_dir_all(&stage).map_err(StoreError::io(&stage))?;
    }
    spec::atomic::write_json_atomic(&mpath, m).map_err(StoreError::io(&mpath))?;
    Ok(p)
}

/// Imports `m` from `client`, resuming an earlier partial download.
pub(crate) fn import_from_source(
    store: &ImageStore,
    client: &SourceClient,
    m: &ImageManifest,
) -> Result<Image, StoreError> {
    let p = begin(store, m)?;
    if let Some(img) = store.get(&m.uuid)? {
        // Another importer finished while we waited for the lock.
        p.discard();
        return Ok(img);
    }
    let path = p.file();
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(StoreError::io(&path))?;
    let mut have = file.metadata().map_err(StoreError::io(&path))?.len();
    if have > m.file().size {
        have = 0;
    }
    let mut digests = Digests::for_file(m.file());
    if have > 0 {
        rehash(&mut file, have, &mut digests).map_err(StoreError::io(&path))?;
        log::info!("image {}: resuming download at byte {have}", m.uuid);
    }
    let resp = match client.open_file(&m.uuid, have) {
        Ok(r) => r,
        // A refusal (a 4xx/5xx, a 416 even from byte 0, a bad answer) makes the partial
        // download worthless; a network failure keeps it to resume.
        Err(e @ StoreError::Network { .. }) => return Err(e),
        Err(e) => {
            p.discard();
            return Err(e);
        }
    };
    if resp.offset != have {
        // The server ignored the Range request: start from scratch.
        have = 0;
        digests = Digests::for_file(m.file());
    }
    file.set_len(have).map_err(StoreError::io(&path))?;
    file.seek(SeekFrom::Start(have))
        .map_err(StoreError::io(&path))?;
    let url = resp.url.clone();
    let until = Instant::now() + client.limits().file_time(m.file().size - have);
    let copied = copy_showing_progress(
        store,
        m,
        have,
        TimeBoxed::new(resp.body, until),
        &mut file,
        &path,
        &mut digests,
    );
    let sync = file.sync_all().map_err(StoreError::io(&path));
    match copied {
        Err(CopyError::Read(e)) => {
            sync?;
            return Err(StoreError::Network {
                url,
                reason: format!(
                    "{} after {} of {} bytes; the partial download is kept: run the import again to resume",
                    error_chain(&e),
                    digests.size,
                    m.file().size
                ),
            });
        }
        Err(CopyError::Write(e)) => return Err(e),
        Ok(()) => sync?,
    }
    if let Err(e) = digests.verify(m, &url) {
        p.discard();
        return Err(e);
    }
    commit(store, &p, m)
}

/// Installs `m` from a local file (`imgadm install -m M -f F`).
pub(crate) fn install_local(
    store: &ImageStore,
    m: &ImageManifest,
    src: &Path,
) -> Result<Image, StoreError> {
    if store.get(&m.uuid)?.is_some() {
        return Err(StoreError::AlreadyInstalled(m.uuid));
    }
    let input = File::open(src).map_err(StoreError::io(src))?;
    let p = begin(store, m)?;
    if store.get(&m.uuid)?.is_some() {
        p.discard();
        return Err(StoreError::AlreadyInstalled(m.uuid));
    }
    let path = p.file();
    let mut file = File::create(&path).map_err(StoreError::io(&path))?;
    let mut digests = Digests::for_file(m.file());
    let copied = copy_showing_progress(store, m, 0, input, &mut file, &path, &mut digests);
    let result = match copied {
        Err(CopyError::Read(e)) => Err(StoreError::io(src)(e)),
        Err(CopyError::Write(e)) => Err(e),
        Ok(()) => file
            .sync_all()
            .map_err(StoreError::io(&path))
            .and_then(|_| digests.verify(m, &src.display().to_string())),
    };
    if let Err(e) = result {
        p.discard();
        return Err(e);
    }
    commit(store, &p, m)
}

enum CopyError {
    Read(std::io::Error),
    Write(StoreError),
}

/// [`copy_hashing`] of image `m`'s file (resumed at byte `have`) behind a progress
/// bar, which is cleared however the copy ends.
fn copy_showing_progress(
    store: &ImageStore,
    m: &ImageManifest,
    have: u64,
    src: impl Read,
    dst: &mut File,
    dst_path: &Path,
    digests: &mut Digests,
) -> Result<(), CopyError> {
    let progress = Progress::new(store, m, have);
    let copied = copy_hashing(src, dst, dst_path, digests, m.file().size, &progress);
    progress.finish_and_clear();
    copied
}

/// Copies `src` to `dst`, hashing as it goes, stopping as soon as more than `limit`
/// bytes arrive (a wrong-size file never fills the disk). Runs of zeros become holes:
/// a raw disk image is mostly empty. A cut transfer may so leave the file shorter
/// than what was received; resuming from its length is still exact.
fn copy_hashing(
    mut src: impl Read,
    dst: &mut File,
    dst_path: &Path,
    digests: &mut Digests,
    limit: u64,
    progress: &Progress,
) -> Result<(), CopyError> {
    let write_err = |e| CopyError::Write(StoreError::io(dst_path)(e));
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => {
                let end = dst.stream_position().map_err(write_err)?;
                return dst.set_len(end).map_err(write_err);
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64)).map_err(write_err)?;
        } else {
            dst.write_all(&buf[..n]).map_err(write_err)?;
        }
        digests.update(&buf[..n]);
        progress.set_position(digests.size);
        if digests.size > limit {
            // Already too big: stop here, verify() reports the size mismatch.
            return Ok(());
        }
    }
}

/// Feeds the first `len` bytes of `file` to `digests` (resuming a download).
fn rehash(file: &mut File, len: u64, digests: &mut Digests) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        file.read_exact(&mut buf[..want])?;
        digests.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(())
}

/// Assembles the image directory from the verified file and renames it into place.
fn commit(store: &ImageStore, p: &Partial, m: &ImageManifest) -> Result<Image, StoreError> {
    commit_with(store, p, m, |file, stage| {
        let compression = m.file().compression;
        let limits = store.unpack_limits();
        match m.kind {
            ImageKind::ZoneDataset => {
                let root = stage.join(ROOT_DIR);
                crate::unpack::unpack_rootfs(file, compression, &root, m.uuid, &limits)
            }
            ImageKind::Zvol if compression != Compression::None => {
                let disk = crate::store::payload_path(stage, m);
                let max = m.declared_disk_size().unwrap_or(limits.disk_bytes);
                crate::unpack::decompress_to_file(file, compression, &disk, m.uuid, max, &limits)?;
                crate::bootcheck::require_boot_kernel(&disk, m.uuid)
            }
            // A qcow2 file is checked once converted; a raw one as it is.
            ImageKind::Zvol if !crate::qcow2::convert_if_qcow2(file, stage, m.uuid)? => {
                crate::bootcheck::require_boot_kernel(file, m.uuid)
            }
            ImageKind::Zvol => Ok(()),
        }
    })
}

/// Assembles the image directory: the verified file moved in, `build(file, stage)`
/// makes the payload beside it, then the manifest; the directory is made durable and
/// renamed into place. On any error the work area is discarded.
pub(crate) fn commit_with(
    store: &ImageStore,
    p: &Partial,
    m: &ImageManifest,
    build: impl FnOnce(&Path, &Path) -> Result<(), StoreError>,
) -> Result<Image, StoreError> {
    let stage = p.dir.join("image");
    let result = (|| {
        fs::create_dir_all(&stage).map_err(StoreError::io(&stage))?;
        let file = stage.join(FILE_NAME);
        fs::rename(p.file(), &file).map_err(StoreError::io(&file))?;
        build(&file, &stage)?;
        let mpath = stage.join(MANIFEST_NAME);
        spec::atomic::write_json_atomic(&mpath, m).map_err(StoreError::io(&mpath))?;
        // One syncfs makes the whole unpacked tree durable before it becomes visible.
        let d = File::open(&stage).map_err(StoreError::io(&stage))?;
        nix::unistd::syncfs(&d).map_err(|e| StoreError::io(&stage)(e.into()))?;
        let dest = store.image_dir(&m.uuid);
        fs::rename(&stage, &dest).map_err(StoreError::io(&dest))?;
        sync_dir(store.images_dir())
    })();
    if let Err(e) = result {
        p.discard();
        return Err(e);
    }
    p.discard();
    store
        .get(&m.uuid)?
        .ok_or_else(|| StoreError::NotFound(m.uuid.to_string()))
}

/// Removes import debris: partial downloads older than `max_age` that no import holds,
/// and leftovers of interrupted deletes. Lock files stay: only their holder removes
/// one (an import that ends does), as [`lock`] requires.
pub(crate) fn clean_partials(store: &ImageStore, max_age: Duration) -> Result<(), StoreError> {
    let root = store.partial_root();
    let now = SystemTime::now();
    for entry in fs::read_dir(&root)
        .map_err(StoreError::io(&root))?
        .flatten()
    {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let age = entry
            .metadata()
            .and_then(|md| md.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        if name.starts_with("deleted-") && age > Duration::from_secs(60) {
            let _ = fs::remove_dir_all(&path);
        } else if let Ok(uuid) = Uuid::parse_str(&name) {
            if age <= max_age {
                continue;
            }
            let lock = root.join(format!("{uuid}.lock"));
            let Ok(f) = File::open(&lock) else {
                let _ = fs::remove_dir_all(&path);
                continue;
            };
            // Only when no import of it is running right now.
            if let Ok(_held) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                let _ = fs::remove_dir_all(&path);
            }
        }
    }
    Ok(())
}

/// Removes what imports that died left in `.partial` (a killed importer cannot clean
/// up after itself): every work area and lock file that no running import holds.
/// Returns the UUIDs of the images whose leftovers were removed.
pub(crate) fn clean_abandoned(store: &ImageStore) -> Result<Vec<Uuid>, StoreError> {
    let root = store.partial_root();
    let mut uuids: Vec<Uuid> = fs::read_dir(&root)
        .map_err(StoreError::io(&root))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Uuid::parse_str(name.strip_suffix(".lock").unwrap_or(&name)).ok()
        })
        .collect();
    uuids.sort_unstable();
    uuids.dedup();
    let mut cleaned = Vec::new();
    for uuid in uuids {
        let lock_path = root.join(format!("{uuid}.lock"));
        let Ok(file) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        else {
            continue;
        };
        // Held: an import of it runs right now. Won: remove the file while holding it,
        // so an importer waiting on it takes a fresh one (see [`lock`]).
        let Ok(_held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        let dir = root.join(uuid.to_string());
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(StoreError::io(&dir))?;
        }
        fs::remove_file(&lock_path).map_err(StoreError::io(&lock_path))?;
        cleaned.push(uuid);
    }
    Ok(cleaned)
}
