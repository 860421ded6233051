//! Decompression and safe unpacking of image files.
//!
//! A zone dataset tarball is unpacked with owners, modes, mtimes, xattrs and hard links
//! kept, and never writes outside the target directory: absolute paths and `..` are
//! refused, nothing is ever written through a symlink (a symlink may point anywhere:
//! inside the zone it is resolved against the zone's root, but the unpacker never
//! follows one), hard links must name a file inside the tree, and device nodes are
//! skipped (the zone runtime builds a minimal /dev itself).
//!
//! Nothing an image file decompresses to is trusted to be small ([`UnpackLimits`]):
//! the xz decoder runs under a memory limit, a zvol stops at the disk size its manifest
//! declares (`image_size`, MiB) or a bound, a zone dataset at a bound on its bytes and
//! one on its entries (inodes). A file past a bound is refused whole: the import
//! fails and leaves nothing in the store.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;
use uuid::Uuid;

use crate::error::StoreError;
use crate::manifest::Compression;

/// Bounds on what an image file may decompress to (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Bytes a zone dataset's tar stream may decompress to.
    pub rootfs_bytes: u64,
    /// Entries (files, directories, links: inodes) a zone dataset may hold.
    pub rootfs_entries: u64,
    /// Bytes a zvol may decompress to when its manifest declares no `image_size`.
    pub disk_bytes: u64,
    /// Memory the xz decoder may use (`xz -9` needs 65 MiB to decompress).
    pub xz_memory: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            rootfs_bytes: 16 << 30,
            rootfs_entries: 2_000_000,
            disk_bytes: 1 << 40,
            xz_memory: 256 << 20,
        }
    }
}

/// A reader that fails once more than `cap` bytes came through, and remembers that it
/// did (a tar error around it may not carry the reason).
struct Capped<'b, R> {
    inner: R,
    budget: &'b Budget,
}

/// Decompressed bytes an image may still produce, shared by all its layers; `tripped`
/// records that a read went past it (the tar reader reports only an I/O error).
#[derive(Debug)]
pub struct Budget {
    left: std::cell::Cell<u64>,
    tripped: std::cell::Cell<bool>,
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Budget {
        Budget {
            left: std::cell::Cell::new(bytes),
            tripped: std::cell::Cell::new(false),
        }
    }
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let left = self.budget.left.get();
        if n as u64 > left {
            self.budget.tripped.set(true);
            return Err(std::io::Error::other("decompressed past its bound"));
        }
        self.budget.left.set(left - n as u64);
        Ok(n)
    }
}

fn bound_error(uuid: Uuid, what: &str, cap: u64) -> StoreError {
    StoreError::Unpack {
        uuid,
        reason: format!(
            "decompresses to more than {cap} bytes, the bound for {what}: refused as a \
             decompression bomb"
        ),
    }
}

/// What the first bytes of a file say its compression is.
pub fn sniff(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else if head.starts_with(b"BZh") {
        Some(Compression::Bzip2)
    } else {
        None
    }
}

/// A decompressing reader over `path`. The file's magic bytes win over the manifest's
/// `compression` (manifests in the wild get it wrong); plain data is passed through.
pub fn open_decoder(
    path: &Path,
    declared: Compression,
    uuid: Uuid,
    xz_memory: u64,
) -> Result<Box<dyn Read>, StoreError> {
    let mut f = File::open(path).map_err(StoreError::io(path))?;
    let mut head = [0u8; 6];
    let n = f.read(&mut head).map_err(StoreError::io(path))?;
    f.seek(SeekFrom::Start(0)).map_err(StoreError::io(path))?;
    let actual = sniff(&head[..n]).unwrap_or(Compression::None);
    if actual != declared {
        log::warn!("image {uuid}: manifest says compression {declared:?}, file is {actual:?}");
    }
    decoder(
        BufReader::with_capacity(128 * 1024, f),
        actual,
        uuid,
        xz_memory,
    )
}

/// A decompressing reader over a stream (an OCI layer as it arrives): its first bytes
/// win over `declared` when there are enough of them to tell.
fn stream_decoder<'a, R: Read + 'a>(
    inner: R,
    declared: Compression,
    uuid: Uuid,
    xz_memory: u64,
) -> Result<Box<dyn Read + 'a>, StoreError> {
    use std::io::BufRead;
    let mut r = BufReader::with_capacity(128 * 1024, inner);
    let head = r.fill_buf().map_err(|e| StoreError::Unpack {
        uuid,
        reason: e.to_string(),
    })?;
    let actual = match head.len() {
        0..6 => declared,
        _ => sniff(head).unwrap_or(Compression::None),
    };
    decoder(r, actual, uuid, xz_memory)
}

fn decoder<'a, R: std::io::BufRead + 'a>(
    r: R,
    actual: Compression,
    uuid: Uuid,
    xz_memory: u64,
) -> Result<Box<dyn Read + 'a>, StoreError> {
    Ok(match actual {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| {
                StoreError::Unpack {
                    uuid,
                    reason: format!("zstd: {e}"),
                }
            })?)
        }
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                xz_memory,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|e| StoreError::Unpack {
                uuid,
                reason: format!("xz: {e}"),
            })?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(r, stream))
        }
        // SmartOS's own images are often bzip2 (libbz2-rs-sys: the pure-Rust libbz2).
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
    })
}

/// Decompresses a zvol image file into a sparse raw disk file of at most `max_bytes`
/// (the manifest's declared disk size, or the bound).
pub fn decompress_to_file(
    src: &Path,
    compression: Compression,
    dst: &Path,
    uuid: Uuid,
    max_bytes: u64,
    limits: &UnpackLimits,
) -> Result<(), StoreError> {
    let mut r = open_decoder(src, compression, uuid, limits.xz_memory)?;
    let mut out = File::create(dst).map_err(StoreError::io(dst))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut r, &mut buf).map_err(|e| StoreError::Unpack {
            uuid,
            reason: format!("{}: {e}", src.display()),
        })?;
        if n == 0 {
            break;
        }
        if total + n as u64 > max_bytes {
            return Err(bound_error(uuid, "this disk image", max_bytes));
        }
        // Zero blocks become holes: a mostly empty disk costs little space.
        if buf[..n].iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(n as i64))
                .map_err(StoreError::io(dst))?;
        } else {
            out.write_all(&buf[..n]).map_err(StoreError::io(dst))?;
        }
        total += n as u64;
    }
    out.set_len(total).map_err(StoreError::io(dst))?;
    out.sync_all().map_err(StoreError::io(dst))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Unpacks the rootfs tarball `src` into the new directory `root`.
pub fn unpack_rootfs(
    src: &Path,
    compression: Compression,
    root: &Path,
    uuid: Uuid,
    limits: &UnpackLimits,
) -> Result<(), StoreError> {
    let budget = Budget::new(limits.rootfs_bytes);
    let reader = Capped {
        inner: open_decoder(src, compression, uuid, limits.xz_memory)?,
        budget: &budget,
    };
    fs::create_dir(root).map_err(StoreError::io(root))?;
    let r = unpack_tar(reader, root, uuid, Layering::Rootfs, limits.rootfs_entries);
    if budget.tripped.get() {
        return Err(bound_error(uuid, "a zone dataset", limits.rootfs_bytes));
    }
    r
}

/// Applies one OCI layer, compressed as `declared` says (or as its first bytes say),
/// over `root`, within the image's decompressed `budget` and the entry bound.
pub fn apply_layer(
    blob: impl Read,
    declared: Compression,
    root: &Path,
    uuid: Uuid,
    limits: &UnpackLimits,
    budget: &Budget,
) -> Result<(), StoreError> {
    let reader = Capped {
        inner: stream_decoder(blob, declared, uuid, limits.xz_memory)?,
        budget,
    };
    let r = unpack_tar(
        reader,
        root,
        uuid,
        Layering::OciLayer,
        limits.rootfs_entries,
    );
    if budget.tripped.get() {
        return Err(bound_error(uuid, "a zone dataset", limits.rootfs_bytes));
    }
    r
}

/// How a tarball meets what is already in the target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layering {
    /// A whole rootfs into an empty directory: `.wh.` names are ordinary files.
    Rootfs,
    /// An OCI layer over the layers below it: `.wh.NAME` deletes `NAME`,
    /// `.wh..wh..opq` empties its directory of what lower layers put there, and an
    /// entry replaces whatever a lower layer had at its path (a directory included).
    OciLayer,
}

/// OCI's marker for "this directory hides everything lower layers put in it".
const OPAQUE: &str = ".wh..wh..opq";
/// OCI's prefix for "the lower layers' file of this name is deleted".
const WHITEOUT: &str = ".wh.";

/// Unpacks the tar stream `reader` into the existing directory `root`, with the
/// safety rules of this module, layered as `layering` says.
pub fn unpack_tar(
    reader: impl Read,
    root: &Path,
    uuid: Uuid,
    layering: Layering,
    max_entries: u64,
) -> Result<(), StoreError> {
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    // Owners can only be kept by root; an unprivileged unpack (tests, laptops) keeps
    // the caller as owner rather than failing.
    ar.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    let unpack_err = |reason: String| StoreError::Unpack { uuid, reason };
    let mut skipped_devices = 0usize;
    // What this layer itself wrote: whiteouts hide lower layers only.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let entries = ar.entries().map_err(|e| unpack_err(e.to_string()))?;
    for (n, entry) in entries.enumerate() {
        if n as u64 >= max_entries {
            return Err(unpack_err(format!(
                "more than {max_entries} entries, the bound for a zone dataset"
            )));
        }
        let mut entry = entry.map_err(|e| unpack_err(e.to_string()))?;
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_entry = |reason: &str| StoreError::UnsafeEntry {
            uuid,
            entry: shown.clone(),
            reason: reason.to_string(),
        };
        let path = entry.path().map_err(|e| unpack_err(e.to_string()))?;
        let rel = inside_path(&path).map_err(&unsafe_entry)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::Block | EntryType::Char) {
            skipped_devices += 1;
            continue;
        }
        if rel.as_os_str().is_empty() {
            // "./" itself: give the root its mode and owner.
            if kind.is_dir() {
                apply_root_attrs(&entry, root, uuid)?;
            }
            continue;
        }
        no_symlink_on_the_way(root, &rel).map_err(|r| unsafe_entry(&r.to_string()))?;
        if layering == Layering::OciLayer {
            let name = rel.file_name().unwrap_or_default().to_string_lossy();
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                let parent = rel.parent().unwrap_or(Path::new(""));
                if is_symlink(&root.join(parent)) {
                    return Err(unsafe_entry("whiteout inside a symlink"));
                }
                if name == OPAQUE {
                    make_opaque(root, parent, &written)
                        .map_err(|e| unpack_err(format!("{shown}: {e}")))?;
                } else if !hidden.is_empty() && hidden != "." && hidden != ".." {
                    let gone = parent.join(hidden);
                    if !written.contains(&gone) {
                        remove_any(&root.join(&gone))
                            .map_err(|e| unpack_err(format!("{shown}: {e}")))?;
                    }
                } else {
                    return Err(unsafe_entry("whiteout of no name"));
                }
                continue;
            }
            replace_lower(root, &rel, kind.is_dir())
                .map_err(|e| unpack_err(format!("{shown}: {e}")))?;
            written.insert(rel.clone());
        }
        if kind.is_dir() && is_symlink(&root.join(&rel)) {
            return Err(unsafe_entry("directory entry over an existing symlink"));
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| unpack_err(e.to_string()))?
                .ok_or_else(|| unsafe_entry("hard link without a target"))?;
            let trel =
                inside_path(&target).map_err(|r| unsafe_entry(&format!("hard link target {r}")))?;
            no_symlink_on_the_way(root, &trel)
                .map_err(|r| unsafe_entry(&format!("hard link target: {r}")))?;
        }
        let done = entry
            .unpack_in(root)
            .map_err(|e| unpack_err(format!("{shown}: {e}")))?;
        if !done {
            return Err(unsafe_entry("the tar library refused it as escaping"));
        }
    }
    if skipped_devices > 0 {
        log::warn!(
            "image {uuid}: skipped {skipped_devices} device node(s); zones get a minimal /dev"
        );
    }
    Ok(())
}

/// Removes whatever is at `p` (a file, a symlink, not followed, or a whole tree).
fn remove_any(p: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Empties directory `dir` (relative to `root`) of what lower layers put there.
fn make_opaque(root: &Path, dir: &Path, written: &HashSet<PathBuf>) -> std::io::Result<()> {
    let full = root.join(dir);
    let entries = match fs::read_dir(&full) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if !written.contains(&dir.join(e.file_name())) {
            remove_any(&e.path())?;
        }
    }
    Ok(())
}

/// Before an OCI layer's entry lands at `rel`: a lower layer's directory gives way to
/// a non-directory, and a lower layer's non-directory (a symlink included, which is
/// unlinked, never followed) to anything.
fn replace_lower(root: &Path, rel: &Path, is_dir: bool) -> std::io::Result<()> {
    let p = root.join(rel);
    match fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() && !is_dir => fs::remove_dir_all(&p),
        Ok(m) if !m.is_dir() => fs::remove_file(&p),
        _ => Ok(()),
    }
}

/// The entry path made relative to the root (`./a/b` -> `a/b`), or why it is refused.
fn inside_path(p: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// A tarball path whose parent is a symlink already unpacked (the path is relative to
/// the image root).
#[derive(Debug, thiserror::Error)]
#[error("goes through the symlink {}", .0.display())]
struct ThroughSymlink(PathBuf);

/// Refuses a path whose parent directories (already unpacked) include a symlink:
/// writing there would follow it, possibly out of the tree.
fn no_symlink_on_the_way(root: &Path, rel: &Path) -> Result<(), ThroughSymlink> {
    let mut cur = root.to_path_buf();
    let mut comps = rel.components().peekable();
    while let Some(c) = comps.next() {
        if comps.peek().is_none() {
            break;
        }
        cur.push(c);
        if is_symlink(&cur) {
            return Err(ThroughSymlink(
                cur.strip_prefix(root).unwrap_or(&cur).to_path_buf(),
            ));
        }
    }
    Ok(())
}

fn apply_root_attrs<R: Read>(
    entry: &tar::Entry<'_, R>,
    root: &Path,
    uuid: Uuid,
) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let h = entry.header();
    if let Ok(mode) = h.mode() {
        fs::set_permissions(root, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(StoreError::io(root))?;
    }
    if nix::unistd::geteuid().is_root() {
        let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        let (uid, gid) = (u32::try_from(uid), u32::try_from(gid));
        if let (Ok(uid), Ok(gid)) = (uid, gid) {
            std::os::unix::fs::lchown(root, Some(uid), Some(gid)).map_err(StoreError::io(root))?;
        } else {
            return Err(StoreError::Unpack {
                uuid,
                reason: "root entry owner out of range".into(),
            });
        }
    }
    Ok(())
}
