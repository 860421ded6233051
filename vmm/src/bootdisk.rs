//! pygrub-style kernel discovery: find the ext4 filesystem on a boot disk (GPT, MBR
//! or a bare filesystem), then the newest `/boot/vmlinuz-*` and its matching
//! `initrd.img-*`, and copy them out for direct boot. Pure Rust, no loop mounts.

use ext4_view::{Ext4, Ext4Read};
use std::cmp::Ordering;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Why no kernel could be taken from the disk.
#[derive(Debug, thiserror::Error)]
pub enum BootDiskError {
    /// Reading the disk failed.
    #[error("boot disk {path}: {source}")]
    Io {
        /// The disk.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No ext4 filesystem with a kernel.
    #[error("boot disk {path}: {reason}")]
    NoKernel {
        /// The disk.
        path: PathBuf,
        /// What was looked at.
        reason: String,
    },
}

/// A partition (or the whole disk) holding an ext4 filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based partition number (0 for a whole-disk filesystem).
    pub number: u32,
    /// Byte offset on the disk.
    pub offset: u64,
}

/// What was found on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// The kernel, copied out.
    pub kernel: PathBuf,
    /// The matching initrd, if there is one.
    pub initrd: Option<PathBuf>,
    /// Kernel version (the `vmlinuz-` suffix).
    pub version: String,
    /// The partition it came from.
    pub partition: Partition,
}

impl BootFiles {
    /// The `root=` argument for this disk as the guest's first virtio disk.
    pub fn root_arg(&self) -> String {
        match self.partition.number {
            0 => "root=/dev/vda".into(),
            n => format!("root=/dev/vda{n}"),
        }
    }
}

struct OffsetReader {
    file: File,
    offset: u64,
}

impl Ext4Read for OffsetReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.file.seek(SeekFrom::Start(self.offset + start_byte))?;
        self.file.read_exact(dst)?;
        Ok(())
    }
}

fn read_at(file: &mut File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap_or_default())
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or_default())
}

/// Candidate filesystem locations: GPT entries, MBR entries, or the whole disk.
pub fn partitions(file: &mut File) -> std::io::Result<Vec<Partition>> {
    const SECTOR: u64 = 512;
    let mbr = read_at(file, 0, 512)?;
    let mut parts = Vec::new();
    if mbr[510] == 0x55 && mbr[511] == 0xaa {
        let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[446 + i * 16..462 + i * 16]).collect();
        if entries.iter().any(|e| e[4] == 0xee) {
            let hdr = read_at(file, SECTOR, 92)?;
            if &hdr[0..8] == b"EFI PART" {
                let lba = le64(&hdr, 72);
                let count = le32(&hdr, 80).min(256);
                let size = le32(&hdr, 84).clamp(128, 4096) as usize;
                let table = read_at(file, lba * SECTOR, count as usize * size)?;
                for i in 0..count as usize {
                    let e = &table[i * size..(i + 1) * size];
                    if e[0..16].iter().any(|b| *b != 0) {
                        parts.push(Partition {
                            number: i as u32 + 1,
                            offset: le64(e, 32) * SECTOR,
                        });
                    }
                }
            }
        } else {
            for (i, e) in entries.iter().enumerate() {
                if e[4] != 0 && e[4] != 0x05 && e[4] != 0x0f {
                    parts.push(Partition {
                        number: i as u32 + 1,
                        offset: u64::from(le32(e, 8)) * SECTOR,
                    });
                }
            }
        }
    }
    parts.push(Partition {
        number: 0,
        offset: 0,
    });
    Ok(parts)
}

fn is_ext4(file: &mut File, offset: u64) -> bool {
    read_at(file, offset + 1024 + 56, 2).is_ok_and(|m| m == [0x53, 0xef])
}

/// Compares version strings the way `sort -V` does: digit runs numerically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (tx, ty) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                tx.len().cmp(&ty.len()).then(tx.cmp(ty))
            }
            _ => x.1.cmp(y.1),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Picks the newest `vmlinuz-<ver>` among `names`, with `initrd.img-<ver>` if present.
pub fn pick_kernel(names: &[String]) -> Option<(String, Option<String>)> {
    let newest = names
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-"))
        .max_by(|a, b| compare_versions(a, b))?;
    let initrd = format!("initrd.img-{newest}");
    Some((newest.to_owned(), names.contains(&initrd).then_some(initrd)))
}

/// Finds the kernel on `disk` and copies it (and its initrd) into `out_dir`.
pub fn extract(disk: &Path, out_dir: &Path) -> Result<BootFiles, BootDiskError> {
    let io = |source| BootDiskError::Io {
        path: disk.to_owned(),
        source,
    };
    let mut file = File::open(disk).map_err(io)?;
    let mut looked = Vec::new();
    for part in partitions(&mut file).map_err(io)? {
        if !is_ext4(&mut file, part.offset) {
            continue;
        }
        let reader = OffsetReader {
            file: file.try_clone().map_err(io)?,
            offset: part.offset,
        };
        let fs = match Ext4::load(Box::new(reader)) {
            Ok(fs) => fs,
            Err(e) => {
                looked.push(format!("partition {}: {e}", part.number));
                continue;
            }
        };
        // /boot on the root filesystem, or a separate /boot partition.
        for dir in ["/boot", "/"] {
            let Ok(entries) = fs.read_dir(dir) else {
                continue;
            };
            let names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().as_str().ok().map(str::to_owned))
                .collect();
            let Some((version, initrd)) = pick_kernel(&names) else {
                continue;
            };
            let copy = |name: &str| -> Result<PathBuf, BootDiskError> {
                let src = format!("{}/{name}", dir.trim_end_matches('/'));
                let data = fs.read(src.as_str()).map_err(|e| BootDiskError::NoKernel {
                    path: disk.to_owned(),
                    reason: format!("reading {src} from partition {}: {e}", part.number),
                })?;
                let dest = out_dir.join(name);
                std::fs::write(&dest, data).map_err(|source| BootDiskError::Io {
                    path: dest.clone(),
                    source,
                })?;
                Ok(dest)
            };
            let kernel = copy(&format!("vmlinuz-{version}"))?;
            let initrd = initrd.as_deref().map(copy).transpose()?;
            return Ok(BootFiles {
                kernel,
                initrd,
                version,
                partition: part,
            });
        }
        looked.push(format!("partition {}: no /boot/vmlinuz-*", part.number));
    }
    Err(BootDiskError::NoKernel {
        path: disk.to_owned(),
        reason: if looked.is_empty() {
            "no ext4 filesystem found (GPT, MBR or whole disk)".into()
        } else {
            looked.join("; ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_sort_v() {
        assert_eq!(
            compare_versions("6.1.0-9-amd64", "6.1.0-10-amd64"),
            Ordering::Less
        );
        assert_eq!(compare_versions("6.10.0", "6.9.0"), Ordering::Greater);
        assert_eq!(compare_versions("5.10", "5.10"), Ordering::Equal);
    }

    #[test]
    fn newest_kernel_with_its_initrd() {
        let names: Vec<String> = [
            "vmlinuz-6.1.0-9-cloud-amd64",
            "vmlinuz-6.1.0-10-cloud-amd64",
            "initrd.img-6.1.0-9-cloud-amd64",
            "initrd.img-6.1.0-10-cloud-amd64",
            "config-6.1.0-10-cloud-amd64",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            pick_kernel(&names),
            Some((
                "6.1.0-10-cloud-amd64".into(),
                Some("initrd.img-6.1.0-10-cloud-amd64".into())
            ))
        );
        assert_eq!(pick_kernel(&["System.map".to_string()]), None);
    }

    fn mkfs(image: &Path, root: &Path, offset_sectors: u64) {
        // mkfs.ext4 -E offset= writes the filesystem at a byte offset inside the image.
        let status = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E"])
            .arg(format!("offset={}", offset_sectors * 512))
            .arg("-d")
            .arg(root)
            .arg(image)
            .arg("16M")
            .status()
            .expect("mkfs.ext4 (e2fsprogs) must be installed");
        assert!(status.success());
    }

    fn boot_tree(dir: &Path) -> PathBuf {
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(
            root.join("boot/vmlinuz-6.1.0-10-cloud-amd64"),
            b"new kernel",
        )
        .unwrap();
        std::fs::write(
            root.join("boot/initrd.img-6.1.0-10-cloud-amd64"),
            b"new initrd",
        )
        .unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1.0-9-cloud-amd64"), b"old kernel").unwrap();
        root
    }

    #[test]
    fn extracts_from_an_mbr_partition() {
        let dir = tempfile::tempdir().unwrap();
        let root = boot_tree(dir.path());
        let image = dir.path().join("disk.raw");
        std::fs::write(&image, []).unwrap();
        mkfs(&image, &root, 2048);
        // One MBR entry: Linux (0x83) from sector 2048.
        let mut mbr = vec![0u8; 512];
        mbr[446 + 4] = 0x83;
        mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&32768u32.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &mbr, 0).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let found = extract(&image, &out).unwrap();
        assert_eq!(found.version, "6.1.0-10-cloud-amd64");
        assert_eq!(found.partition.number, 1);
        assert_eq!(found.root_arg(), "root=/dev/vda1");
        assert_eq!(std::fs::read(&found.kernel).unwrap(), b"new kernel");
        assert_eq!(std::fs::read(found.initrd.unwrap()).unwrap(), b"new initrd");
    }

    #[test]
    fn extracts_from_a_gpt_partition() {
        let dir = tempfile::tempdir().unwrap();
        let root = boot_tree(dir.path());
        let image = dir.path().join("gpt.raw");
        std::fs::write(&image, vec![0u8; 20 << 20]).unwrap();
        let mut sfdisk = std::process::Command::new("sfdisk")
            .arg("--quiet")
            .arg(&image)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sfdisk (fdisk package) must be installed");
        use std::io::Write;
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\nstart=2048, size=32768, type=linux\n")
            .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        mkfs(&image, &root, 2048);
        let found = extract(&image, dir.path()).unwrap();
        assert_eq!(
            found.partition,
            Partition {
                number: 1,
                offset: 2048 * 512
            }
        );
        assert_eq!(std::fs::read(&found.kernel).unwrap(), b"new kernel");
    }

    #[test]
    fn a_disk_without_a_kernel_says_what_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("blank.raw");
        std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
        let err = extract(&image, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("blank.raw") && err.contains("no ext4"),
            "{err}"
        );
    }
}
