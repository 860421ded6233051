//! Decompression bombs: what an image file decompresses to is bounded by the manifest's
//! declared disk size (zvol `image_size`) or the store's [`UnpackLimits`] (zone dataset
//! bytes and entries, xz decoder memory). A bomb is refused with the bound named, and
//! leaves nothing in the store. Bounds are set small here so the bombs stay small; the
//! code path is the one every import takes.

mod common;

use common::*;
use imgadm::unpack::UnpackLimits;
use imgadm::{Compression, ImageKind, ImageManifest, ImageStore, StoreError};
use std::path::Path;

fn limits() -> UnpackLimits {
    UnpackLimits {
        rootfs_bytes: 8 << 20,
        rootfs_entries: 100,
        disk_bytes: 8 << 20,
        xz_memory: UnpackLimits::default().xz_memory,
    }
}

fn install(
    store: &ImageStore,
    m: &ImageManifest,
    data: &[u8],
) -> Result<imgadm::Image, StoreError> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("image");
    std::fs::write(&f, data).unwrap();
    store.install_file(m, &f)
}

/// Nothing of a refused image in the store: no image, no partial, no lock.
fn assert_store_empty(store: &ImageStore) {
    assert!(store.list().unwrap().is_empty());
    let names = |p: &Path| -> Vec<String> {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(names(&store.images_dir().join(".partial")).is_empty());
    assert_eq!(names(store.images_dir()), vec![".partial".to_string()]);
}

fn assert_bomb(err: StoreError, what: &str) {
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unpack { .. }), "{text}");
    assert!(
        text.contains("decompression bomb") && text.contains(what),
        "{text}"
    );
}

/// A tarball holding one file of `mib` MiB of zeros.
fn zero_tree(mib: usize) -> Vec<u8> {
    let zeros = vec![0u8; mib << 20];
    tarball(
        &[
            Entry::Dir("./", 0o755),
            Entry::File("./zeros", &zeros, 0o644),
        ],
        (0, 0),
    )
}

#[test]
fn a_zone_dataset_bomb_is_refused_in_gzip_and_xz() {
    let tree = zero_tree(64);
    for (c, data) in [
        (Compression::Gzip, gzip(&tree)),
        (Compression::Xz, xz(&tree)),
    ] {
        assert!(data.len() < 1 << 20, "{c:?}: {} bytes", data.len());
        let pool = pool();
        let store = ImageStore::open(pool.path())
            .unwrap()
            .with_unpack_limits(limits());
        let m = manifest_for(&data, "bomb", "1", ImageKind::ZoneDataset, c);
        assert_bomb(install(&store, &m, &data).unwrap_err(), "a zone dataset");
        assert_store_empty(&store);
    }
    // Below the bound, the same kind of image installs.
    let small = gzip(&zero_tree(4));
    let pool = pool();
    let store = ImageStore::open(pool.path())
        .unwrap()
        .with_unpack_limits(limits());
    let m = manifest_for(
        &small,
        "fine",
        "1",
        ImageKind::ZoneDataset,
        Compression::Gzip,
    );
    install(&store, &m, &small).unwrap();
}

#[test]
fn a_zone_dataset_with_too_many_entries_is_refused() {
    let names: Vec<String> = (0..200).map(|i| format!("./f{i}")).collect();
    let mut entries = vec![Entry::Dir("./", 0o755)];
    entries.extend(names.iter().map(|n| Entry::File(n, b"", 0o644)));
    let data = gzip(&tarball(&entries, (0, 0)));
    let pool = pool();
    let store = ImageStore::open(pool.path())
        .unwrap()
        .with_unpack_limits(limits());
    let m = manifest_for(
        &data,
        "many",
        "1",
        ImageKind::ZoneDataset,
        Compression::Gzip,
    );
    let err = install(&store, &m, &data).unwrap_err().to_string();
    assert!(err.contains("more than 100 entries"), "{err}");
    assert_store_empty(&store);
}

#[test]
fn a_zvol_stops_at_its_declared_size_or_the_bound() {
    // A boot filesystem (8 MiB) and zeros: 32 MiB.
    let (disk, _) = boot_disk_then(&vec![0u8; 24 << 20]);
    assert_eq!(disk.len(), 32 << 20);
    let disk = xz(&disk);
    let first = pool();
    let store = ImageStore::open(first.path())
        .unwrap()
        .with_unpack_limits(UnpackLimits {
            disk_bytes: 1 << 40,
            ..limits()
        });
    // Declares a 16 MiB disk, decompresses to 32 MiB.
    let mut m = manifest_for(&disk, "disk", "1", ImageKind::Zvol, Compression::Xz);
    m.extra.insert("image_size".into(), 16.into());
    assert_bomb(install(&store, &m, &disk).unwrap_err(), "this disk image");
    assert_store_empty(&store);
    // Declaring its real size, it installs.
    m.extra.insert("image_size".into(), 32.into());
    install(&store, &m, &disk).unwrap();

    // No declared size: the store's bound.
    let second = pool();
    let store = ImageStore::open(second.path())
        .unwrap()
        .with_unpack_limits(limits());
    let m = manifest_for(&disk, "disk", "2", ImageKind::Zvol, Compression::Xz);
    assert_bomb(install(&store, &m, &disk).unwrap_err(), "this disk image");
    assert_store_empty(&store);
}

#[test]
fn an_xz_stream_needing_more_memory_than_allowed_is_refused() {
    // xz -9 (64 MiB dictionary) needs 65 MiB to decompress.
    let mut data = Vec::new();
    std::io::Read::read_to_end(
        &mut liblzma::read::XzEncoder::new(&zero_tree(1)[..], 9),
        &mut data,
    )
    .unwrap();
    let pool = pool();
    let store = ImageStore::open(pool.path())
        .unwrap()
        .with_unpack_limits(UnpackLimits {
            xz_memory: 16 << 20,
            ..limits()
        });
    let m = manifest_for(
        &data,
        "greedy",
        "1",
        ImageKind::ZoneDataset,
        Compression::Xz,
    );
    let err = install(&store, &m, &data).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("memory"), "{err}");
    assert_store_empty(&store);
    // With the default limit it unpacks.
    let store = ImageStore::open(pool.path()).unwrap();
    install(&store, &m, &data).unwrap();
}
