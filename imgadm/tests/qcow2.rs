//! qcow2 cloud images made by Debian's `qemu-img` (qemu-utils) from a raw disk built
//! here, imported as zvol images and converted to sparse raw disks that equal the
//! source byte for byte; hostile qcow2 files (tables outside the file, absurd sizes,
//! features we do not read) fail with a message and install nothing.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use imgadm::{Compression, ImageKind, ImageStore, StoreError};

/// A 24 MiB raw disk: an MBR, an ext4 partition at 1 MiB made by `mkfs.ext4 -d` from
/// a tree with `boot/vmlinuz-6.1` when `kernel`, data outside the partition, zeros
/// elsewhere, an odd tail.
fn raw_disk(dir: &Path, kernel: bool) -> (PathBuf, Vec<u8>) {
    let tree = dir.join(format!("tree-{kernel}"));
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), "cloud\n").unwrap();
    if kernel {
        fs::write(tree.join("boot/vmlinuz-6.1.0-cloud"), noise(100_000, 4)).unwrap();
    }
    let part = dir.join(format!("part-{kernel}.img"));
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&part)
        .arg("16M")
        .output()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fsimg = fs::read(&part).unwrap();
    let mut disk = vec![0u8; (24 << 20) + 4096];
    // MBR: one Linux partition, sectors 2048..2048+32768.
    disk[446 + 4] = 0x83;
    disk[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    disk[446 + 12..446 + 16].copy_from_slice(&32768u32.to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk[4096..65536].copy_from_slice(&noise(61440, 1));
    disk[1 << 20..(1 << 20) + fsimg.len()].copy_from_slice(&fsimg);
    disk[(20 << 20) + 512..(20 << 20) + 8192].copy_from_slice(&noise(7680, 2));
    let tail = disk.len() - 4096;
    disk[tail..].copy_from_slice(&noise(4096, 3));
    let p = dir.join(format!("disk-{kernel}.img"));
    fs::write(&p, &disk).unwrap();
    (p, disk)
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (qemu-utils, tests/deps/imgadm.txt)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn install(store: &ImageStore, file: &Path) -> Result<imgadm::Image, StoreError> {
    let data = fs::read(file).unwrap();
    let m = manifest_for(&data, "cloud", "1", ImageKind::Zvol, Compression::None);
    store.install_file(&m, file)
}

#[test]
fn qcow2_v2_and_v3_become_sparse_raw_equal_to_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, disk) = raw_disk(dir.path(), true);
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap().without_progress();
    for (compat, cluster) in [("0.10", "65536"), ("1.1", "4096"), ("1.1", "2M")] {
        let q = dir.path().join(format!("disk-{compat}-{cluster}.qcow2"));
        let opts = format!("compat={compat},cluster_size={cluster}");
        qemu_img(
            &["convert", "-f", "raw", "-O", "qcow2", "-o", &opts]
                .iter()
                .copied()
                .chain([raw.to_str().unwrap(), q.to_str().unwrap()])
                .collect::<Vec<_>>(),
        );
        let img = install(&store, &q).unwrap();
        assert!(img.path.ends_with("disk.raw"), "{}", img.path.display());
        assert!(
            fs::read(&img.path).unwrap() == disk,
            "{compat} {cluster}: bytes differ"
        );
        let md = fs::metadata(&img.path).unwrap();
        assert!(
            md.blocks() * 512 < 8 << 20,
            "{compat} {cluster}: disk.raw is not sparse: {} blocks",
            md.blocks()
        );
        // The verified download stays as it was, for `imgadm serve`.
        assert_eq!(
            fs::read(store.image_dir(&img.uuid).join("file")).unwrap(),
            fs::read(&q).unwrap()
        );
    }
}

/// Installs `file` and expects a refusal mentioning `want`, with nothing installed.
fn refused(store: &ImageStore, file: &Path, want: &str) {
    let err = install(store, file).unwrap_err().to_string();
    assert!(err.contains(want), "expected {want:?} in: {err}");
    assert!(err.contains("qcow2"), "{err}");
    assert!(
        store.list().unwrap().is_empty(),
        "{err}: something installed"
    );
}

fn patch(src: &Path, dst: &Path, at: usize, bytes: &[u8]) {
    let mut d = fs::read(src).unwrap();
    d[at..at + bytes.len()].copy_from_slice(bytes);
    fs::write(dst, d).unwrap();
}

#[test]
fn hostile_qcow2_files_are_refused_and_install_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = raw_disk(d, true);
    let good = d.join("good.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap().without_progress();
    let bad = d.join("bad.qcow2");

    // L1 table offset far past the end of the file.
    patch(&good, &bad, 40, &(1u64 << 50).to_be_bytes());
    refused(&store, &bad, "outside the");
    // An L2 table pointing past the end of the file: the first L1 entry.
    let l1 = u64::from_be_bytes(fs::read(&good).unwrap()[40..48].try_into().unwrap()) as usize;
    patch(
        &good,
        &bad,
        l1,
        &((1u64 << 63) | (1u64 << 45)).to_be_bytes(),
    );
    refused(&store, &bad, "outside the");
    // An absurd virtual size: refused before any table is allocated.
    patch(&good, &bad, 24, &(1u64 << 62).to_be_bytes());
    refused(&store, &bad, "virtual size");
    // A size the L1 table cannot map.
    patch(&good, &bad, 24, &(1u64 << 45).to_be_bytes());
    refused(&store, &bad, "cannot map");
    // Tiny clusters with a large disk: an L1 table above QEMU's 32 MiB cap.
    let mut d2 = fs::read(&good).unwrap();
    d2[20..24].copy_from_slice(&9u32.to_be_bytes());
    d2[24..32].copy_from_slice(&(1u64 << 40).to_be_bytes());
    d2[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&bad, d2).unwrap();
    refused(&store, &bad, "larger than");
    // Compressed clusters, a backing file, encryption-like header bits.
    let comp = d.join("comp.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        comp.to_str().unwrap(),
    ]);
    refused(&store, &comp, "compressed");
    let child = d.join("child.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        good.to_str().unwrap(),
        child.to_str().unwrap(),
    ]);
    refused(&store, &child, "backing file");
    patch(&good, &bad, 32, &1u32.to_be_bytes());
    refused(&store, &bad, "encrypted");
    patch(&good, &bad, 72, &2u64.to_be_bytes());
    refused(&store, &bad, "incompatible features");
    patch(&good, &bad, 20, &40u32.to_be_bytes());
    refused(&store, &bad, "cluster_bits");
}

fn to_qcow2(raw: &Path) -> PathBuf {
    let q = raw.with_extension("qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    q
}

#[test]
fn a_disk_without_a_kernel_on_an_ext4_boot_is_refused_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap().without_progress();
    let (no_kernel, _) = raw_disk(dir.path(), false);
    let err = install(&store, &to_qcow2(&no_kernel))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no kernel on an ext4 /boot") && err.contains("ext4 at byte 1048576"),
        "{err}"
    );
    assert!(err.contains("firmware boot"), "{err}");
    let junk = dir.path().join("junk.img");
    fs::write(&junk, noise(4 << 20, 7)).unwrap();
    let err = install(&store, &to_qcow2(&junk)).unwrap_err().to_string();
    assert!(err.contains("no ext4 filesystem"), "{err}");
    assert!(store.list().unwrap().is_empty());
    // The same tree with its kernel is taken.
    let (with_kernel, _) = raw_disk(dir.path(), true);
    install(&store, &to_qcow2(&with_kernel)).unwrap();
}
