//! Decompression and safe unpacking of image files.
//!
//! A zone dataset tarball is unpacked with owners, modes, mtimes, xattrs and hard links
//! kept, and never writes outside the target directory: absolute paths and `..` are
//! refused, nothing is ever written through a symlink (a symlink may point anywhere:
//! inside the zone it is resolved against the zone's root, but the unpacker never
//! follows one), hard links must name a file inside the tree, and device nodes are
//! skipped (the zone runtime builds a minimal /dev itself).

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;
use uuid::Uuid;

use crate::error::StoreError;
use crate::manifest::Compression;

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
) -> Result<Box<dyn Read>, StoreError> {
    let mut f = File::open(path).map_err(StoreError::io(path))?;
    let mut head = [0u8; 6];
    let n = f.read(&mut head).map_err(StoreError::io(path))?;
    f.seek(SeekFrom::Start(0)).map_err(StoreError::io(path))?;
    let actual = sniff(&head[..n]).unwrap_or(Compression::None);
    if actual != declared {
        log::warn!("image {uuid}: manifest says compression {declared:?}, file is {actual:?}");
    }
    let r = BufReader::with_capacity(128 * 1024, f);
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
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(r)),
        // Concatenated streams, as pbzip2 and lbzip2 write them.
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
    })
}

/// Decompresses a zvol image file into a sparse raw disk file.
pub fn decompress_to_file(
    src: &Path,
    compression: Compression,
    dst: &Path,
    uuid: Uuid,
) -> Result<(), StoreError> {
    let mut r = open_decoder(src, compression, uuid)?;
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
) -> Result<(), StoreError> {
    let reader = open_decoder(src, compression, uuid)?;
    fs::create_dir(root).map_err(StoreError::io(root))?;
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
    let entries = ar.entries().map_err(|e| unpack_err(e.to_string()))?;
    for entry in entries {
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
