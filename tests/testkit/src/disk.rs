//! Small real boot disks for tests that import zvol images: imgadm refuses a raw
//! disk unless an ext4 filesystem on it holds its kernel under `/boot`, so a test
//! disk is a whole-disk ext4 made by `mkfs.ext4 -d` (e2fsprogs; no root, no loop
//! mount) from a tree with `boot/vmlinuz-*`.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Size of the filesystem [`boot_disk`] makes.
pub const BOOT_DISK_SIZE: &str = "8M";

/// Writes at `out` a whole-disk ext4 filesystem of [`BOOT_DISK_SIZE`] whose `/boot`
/// holds `vmlinuz-test` (with `kernel`) or nothing (without: a disk imgadm refuses).
/// Returns the disk's bytes, to compare an installed payload with.
pub fn ext4_disk(out: &Path, kernel: bool) -> Vec<u8> {
    let tree = tempfile::Builder::new()
        .prefix("testkit-disk")
        .tempdir()
        .expect("temporary tree");
    fs::create_dir_all(tree.path().join("boot")).expect("boot dir");
    fs::write(tree.path().join("etc-hostname"), "test\n").expect("tree file");
    if kernel {
        fs::write(
            tree.path().join("boot/vmlinuz-test"),
            b"not a kernel, only its name matters to the import check\n",
        )
        .expect("kernel file");
    }
    let out_s = Command::new(crate::program("mkfs.ext4"))
        .args(["-q", "-F", "-d"])
        .arg(tree.path())
        .arg(out)
        .arg(BOOT_DISK_SIZE)
        .output()
        .expect("run mkfs.ext4 (e2fsprogs)");
    assert!(
        out_s.status.success(),
        "mkfs.ext4 {}: {}",
        out.display(),
        String::from_utf8_lossy(&out_s.stderr)
    );
    fs::read(out).expect("read the made disk")
}

/// [`ext4_disk`] with a kernel: a disk imgadm imports as a zvol image.
pub fn boot_disk(out: &Path) -> Vec<u8> {
    ext4_disk(out, true)
}
