//! What the sandboxed reader sends the monitor: frames of a tag byte, a 32-bit
//! little-endian length and at most [`CHUNK`] bytes. The monitor trusts none of it:
//! [`receive`] caps every file and every frame, checks names, and writes only into
//! the output directory.

use super::{BootDiskError, BootFiles, Limits, Partition};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Largest frame payload.
pub const CHUNK: usize = 64 << 10;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// `NUMBER OFFSET HAS_INITRD VERSION`: where the kernel is; first.
    Found = b'P' as isize,
    /// A piece of the kernel.
    Kernel = b'K' as isize,
    /// A piece of the initrd.
    Initrd = b'I' as isize,
    /// Everything was sent.
    Done = b'D' as isize,
    /// `kernel|initrd PATH`: over its cap.
    TooLarge = b'L' as isize,
    /// No kernel: the reason.
    NoKernel = b'E' as isize,
}

impl Tag {
    fn from_byte(b: u8) -> Option<Tag> {
        [
            Tag::Found,
            Tag::Kernel,
            Tag::Initrd,
            Tag::Done,
            Tag::TooLarge,
            Tag::NoKernel,
        ]
        .into_iter()
        .find(|t| *t as u8 == b)
    }
}

/// Writes one frame (`payload` at most [`CHUNK`] bytes; longer is cut).
pub fn write(out: &mut dyn Write, tag: Tag, payload: &[u8]) -> io::Result<()> {
    let payload = &payload[..payload.len().min(CHUNK)];
    let mut head = [tag as u8, 0, 0, 0, 0];
    head[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out.write_all(&head)?;
    out.write_all(payload)
}

struct Output {
    path: PathBuf,
    file: File,
    written: u64,
    limit: u64,
    what: &'static str,
}

/// Reads the reader's frames from `input` and writes the kernel and initrd into
/// `out_dir`. `disk` only names the disk in errors.
pub fn receive(
    input: &mut dyn Read,
    disk: &Path,
    out_dir: &Path,
    limits: &Limits,
) -> Result<BootFiles, BootDiskError> {
    let bad = |reason: String| BootDiskError::Reader {
        path: disk.to_owned(),
        reason,
    };
    let mut found: Option<BootFiles> = None;
    let mut kernel: Option<Output> = None;
    let mut initrd: Option<Output> = None;
    let mut payload = vec![0u8; CHUNK];
    loop {
        let mut head = [0u8; 5];
        if let Err(e) = input.read_exact(&mut head) {
            return Err(bad(match e.kind() {
                io::ErrorKind::UnexpectedEof => "stopped before it was done".into(),
                _ => format!("could not be read: {e}"),
            }));
        }
        let tag = Tag::from_byte(head[0]).ok_or_else(|| bad(format!("sent tag {}", head[0])))?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > CHUNK {
            return Err(bad(format!("sent a {len}-byte frame")));
        }
        input
            .read_exact(&mut payload[..len])
            .map_err(|e| bad(format!("stopped in a frame: {e}")))?;
        let data = &payload[..len];
        let text = || String::from_utf8_lossy(data).into_owned();
        match tag {
            Tag::Found if found.is_none() => {
                let files = parse_found(&text(), out_dir)
                    .ok_or_else(|| bad(format!("sent {:?}", text())))?;
                let open = |path: &Path, limit, what| {
                    File::create(path)
                        .map(|file| Output {
                            path: path.to_owned(),
                            file,
                            written: 0,
                            limit,
                            what,
                        })
                        .map_err(|source| BootDiskError::Io {
                            path: path.to_owned(),
                            source,
                        })
                };
                kernel = Some(open(&files.kernel, limits.kernel, "kernel")?);
                if let Some(p) = &files.initrd {
                    initrd = Some(open(p, limits.initrd, "initrd")?);
                }
                found = Some(files);
            }
            Tag::Kernel | Tag::Initrd => {
                let out = if tag == Tag::Kernel {
                    kernel.as_mut()
                } else {
                    initrd.as_mut()
                };
                let out = out.ok_or_else(|| bad(format!("sent {tag:?} data out of order")))?;
                out.written = out.written.saturating_add(len as u64);
                if out.written > out.limit {
                    return Err(BootDiskError::TooLarge {
                        path: disk.to_owned(),
                        file: out.path.display().to_string(),
                        what: out.what,
                        limit: out.limit,
                    });
                }
                out.file
                    .write_all(data)
                    .map_err(|source| BootDiskError::Io {
                        path: out.path.clone(),
                        source,
                    })?;
            }
            Tag::Done => {
                let files = found.ok_or_else(|| bad("was done before finding".into()))?;
                return Ok(files);
            }
            Tag::TooLarge => {
                let t = text();
                let (what, file) = t.split_once(' ').unwrap_or(("kernel", &t));
                let (what, limit) = if what == "initrd" {
                    ("initrd", limits.initrd)
                } else {
                    ("kernel", limits.kernel)
                };
                return Err(BootDiskError::TooLarge {
                    path: disk.to_owned(),
                    file: file.to_owned(),
                    what,
                    limit,
                });
            }
            Tag::NoKernel => {
                return Err(BootDiskError::NoKernel {
                    path: disk.to_owned(),
                    reason: text(),
                })
            }
            Tag::Found => return Err(bad("found two kernels".into())),
        }
    }
}

/// `NUMBER OFFSET HAS_INITRD VERSION` -> where the files go. The version comes from a
/// directory entry on the guest's disk: it must be a plain file name suffix.
fn parse_found(text: &str, out_dir: &Path) -> Option<BootFiles> {
    let mut f = text.splitn(4, ' ');
    let number = f.next()?.parse().ok()?;
    let offset = f.next()?.parse().ok()?;
    let has_initrd = match f.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let version = f.next()?;
    if version.is_empty() || version.len() > 200 || version.contains(['/', '\0']) {
        return None;
    }
    Some(BootFiles {
        kernel: out_dir.join(format!("vmlinuz-{version}")),
        initrd: has_initrd.then(|| out_dir.join(format!("initrd.img-{version}"))),
        version: version.to_owned(),
        partition: Partition { number, offset },
    })
}
