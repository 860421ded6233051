//! Import against a real HTTP server on loopback (the independent one in
//! tests/common): good files, corrupt files, wrong sizes, a connection cut half way
//! and resumed with Range, 404s, and the store operations around them.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::AtomicUsize;

use common::*;
use imgadm::{parse_ref, Compression, ImageKind, ImageStore, StoreError};

fn store_with_source(pool: &std::path::Path, url: &str) -> ImageStore {
    let store = ImageStore::open(pool).unwrap();
    store.add_source(url).unwrap();
    store
}

fn partial_entries(store: &ImageStore) -> Vec<String> {
    fs::read_dir(store.images_dir().join(".partial"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect()
}

#[test]
fn imports_zvol_by_name_and_version_and_verifies() {
    let (data, _) = boot_disk_then(&noise(3 << 20, 1));
    let m = manifest_for(&data, "disk", "1.0", ImageKind::Zvol, Compression::None);
    let srv = TestServer::start(vec![(m.clone(), data.clone())], Behaviour::default());
    let pool = pool();
    let store = store_with_source(pool.path(), &srv.url);
    assert!(store.resolve(&parse_ref("disk@1.0")).unwrap().is_none());
    let img = store.import_ref(&parse_ref("disk@1.0")).unwrap();
    assert_eq!(img.uuid, m.uuid);
    assert_eq!(img.kind, ImageKind::Zvol);
    assert_eq!(fs::read(&img.path).unwrap(), data);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(
        store.resolve(&parse_ref("disk")).unwrap().unwrap().uuid,
        m.uuid
    );
    assert_eq!(store.get(&m.uuid).unwrap().unwrap().path, img.path);
    assert!(partial_entries(&store).is_empty(), "work area left behind");
    // A second import is a no-op that returns the same image.
    assert_eq!(
        store
            .import_ref(&parse_ref(&m.uuid.to_string()))
            .unwrap()
            .uuid,
        m.uuid
    );
    assert_eq!(srv.file_ranges().len(), 1);
}

#[test]
fn corrupt_file_installs_nothing_and_names_both_checksums() {
    let data = noise(1 << 20, 2);
    let m = manifest_for(&data, "bad", "1", ImageKind::Zvol, Compression::None);
    let b = Behaviour {
        corrupt: true,
        ..Default::default()
    };
    let srv = TestServer::start(vec![(m.clone(), data)], b);
    let pool = pool();
    let store = store_with_source(pool.path(), &srv.url);
    let err = store.import_ref(&parse_ref("bad")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{msg}");
    let want = m.file().sha256.clone().unwrap();
    assert!(msg.contains(&want), "expected sum missing: {msg}");
    assert!(msg.contains(&m.uuid.to_string()), "{msg}");
    if let StoreError::ChecksumMismatch { actual, .. } = &err {
        assert!(msg.contains(actual.as_str()) && actual != &want);
    }
    assert!(store.list().unwrap().is_empty());
    assert!(!store.image_dir(&m.uuid).exists());
    assert!(
        partial_entries(&store).is_empty(),
        "a bad download must not be kept for resume"
    );
}

#[test]
fn wrong_size_installs_nothing_and_names_both_sizes() {
    let data = noise(100_000, 3);
    for claimed in [data.len() as u64 + 10, data.len() as u64 - 10] {
        let mut m = manifest_for(&data, "sized", "1", ImageKind::Zvol, Compression::None);
        m.files[0].size = claimed;
        let srv = TestServer::start(vec![(m.clone(), data.clone())], Behaviour::default());
        let pool = pool();
        let store = store_with_source(pool.path(), &srv.url);
        let err = store.import_ref(&parse_ref("sized@1")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::SizeMismatch { .. }), "{msg}");
        assert!(msg.contains(&claimed.to_string()), "{msg}");
        assert!(store.list().unwrap().is_empty());
        assert!(partial_entries(&store).is_empty());
    }
}

#[test]
fn dropped_connection_leaves_nothing_listed_then_resumes_with_range() {
    let (data, _) = boot_disk_then(&noise(4 << 20, 4));
    let m = manifest_for(&data, "big", "2", ImageKind::Zvol, Compression::None);
    let cut = 1_500_000;
    let b = Behaviour {
        drop_after: Some(cut),
        drops: AtomicUsize::new(1),
        ..Default::default()
    };
    let srv = TestServer::start(vec![(m.clone(), data.clone())], b);
    let pool = pool();
    let store = store_with_source(pool.path(), &srv.url);
    let err = store.import_ref(&parse_ref("big@2")).unwrap_err();
    assert!(matches!(err, StoreError::Network { .. }), "{err}");
    assert!(err.to_string().contains("resume"), "{err}");
    assert!(
        store.list().unwrap().is_empty(),
        "a partial import must not be listed"
    );
    assert!(store.get(&m.uuid).unwrap().is_none());
    let part = store
        .images_dir()
        .join(".partial")
        .join(m.uuid.to_string())
        .join("file");
    let kept = fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept <= cut as u64, "kept {kept} bytes");

    let img = store.import_ref(&parse_ref("big@2")).unwrap();
    assert_eq!(fs::read(&img.path).unwrap(), data);
    assert_eq!(
        srv.file_ranges(),
        vec![String::new(), format!("bytes={kept}-")]
    );
    assert!(partial_entries(&store).is_empty());
}

#[test]
fn resume_against_a_server_ignoring_range_starts_over() {
    let (data, _) = boot_disk_then(&noise(2 << 20, 5));
    let m = manifest_for(&data, "norange", "1", ImageKind::Zvol, Compression::None);
    let b = Behaviour {
        drop_after: Some(700_000),
        drops: AtomicUsize::new(1),
        ignore_range: true,
        ..Default::default()
    };
    let srv = TestServer::start(vec![(m.clone(), data.clone())], b);
    let pool = pool();
    let store = store_with_source(pool.path(), &srv.url);
    assert!(store.import_ref(&parse_ref("norange")).is_err());
    let img = store.import_ref(&parse_ref("norange")).unwrap();
    assert_eq!(fs::read(&img.path).unwrap(), data);
    assert_eq!(srv.file_ranges().len(), 2);
}

#[test]
fn not_found_in_sources_and_missing_file_are_clear_errors() {
    let data = noise(1000, 6);
    let m = manifest_for(&data, "here", "1", ImageKind::Zvol, Compression::None);
    let srv = TestServer::start(vec![(m.clone(), data)], Behaviour::default());
    let pool = pool();
    let store = store_with_source(pool.path(), &srv.url);
    let uuid = uuid::Uuid::new_v4();
    let err = store.import_ref(&parse_ref(&uuid.to_string())).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(err.to_string().contains(&uuid.to_string()));
    let err = store.import_ref(&parse_ref("nothere@1")).unwrap_err();
    assert!(err.to_string().contains("nothere@1"), "{err}");

    // The manifest exists but the file answers 404: an HTTP error naming the URL.
    let client = imgadm::SourceClient::new(&srv.url).unwrap();
    let e = client.open_file(&uuid, 0).err().unwrap();
    assert!(
        matches!(e, StoreError::HttpStatus { status: 404, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("/images/{uuid}/file")),
        "{e}"
    );

    let empty = common::pool();
    let err = ImageStore::open(empty.path())
        .unwrap()
        .import_ref(&parse_ref("x"))
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSources), "{err}");
}

#[test]
fn unreachable_source_is_a_network_error_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let pool = pool();
    let store = ImageStore::open_with_sources(pool.path(), std::slice::from_ref(&url)).unwrap();
    let err = store.import_ref(&parse_ref("anything")).unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
}

#[test]
fn sha1_only_manifests_are_verified_with_sha1() {
    use sha1::{Digest, Sha1};
    let (data, _) = boot_disk_then(&noise(300_000, 7));
    let mut m = manifest_for(&data, "old", "1", ImageKind::Zvol, Compression::None);
    m.files[0].sha256 = None;
    m.files[0].sha1 = Some(hex::encode(Sha1::digest(&data)));
    let mut bad = manifest_for(&data, "old-bad", "1", ImageKind::Zvol, Compression::None);
    bad.files[0].sha256 = None;
    bad.files[0].sha1 = Some("0".repeat(40));
    let srv = TestServer::start(
        vec![(m.clone(), data.clone()), (bad, data)],
        Behaviour::default(),
    );
    let pool = pool();
    let store = store_with_source(pool.path(), &srv.url);
    store.import_ref(&parse_ref("old")).unwrap();
    let err = store.import_ref(&parse_ref("old-bad")).unwrap_err();
    assert!(err.to_string().contains("sha1 mismatch"), "{err}");
}

#[test]
fn concurrent_imports_of_one_image_install_it_once() {
    let (data, _) = boot_disk_then(&noise(2 << 20, 8));
    let m = manifest_for(&data, "shared", "1", ImageKind::Zvol, Compression::None);
    let srv = TestServer::start(vec![(m.clone(), data.clone())], Behaviour::default());
    let pool = pool();
    let store = store_with_source(pool.path(), &srv.url);
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let s = store.clone();
            std::thread::spawn(move || s.import_ref(&parse_ref("shared")).map(|i| i.uuid))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), m.uuid);
    }
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(
        fs::read(store.get(&m.uuid).unwrap().unwrap().path).unwrap(),
        data
    );
    assert!(
        partial_entries(&store).is_empty(),
        "debris: {:?}",
        partial_entries(&store)
    );
}

#[test]
fn compressed_zvol_is_decompressed_sparse() {
    let (mut disk, at) = boot_disk_then(&vec![0u8; 8 << 20]);
    disk[at + 4096..at + 8192].copy_from_slice(&noise(4096, 9));
    let packed = zstd(&disk);
    let m = manifest_for(&packed, "zdisk", "1", ImageKind::Zvol, Compression::Zstd);
    let srv = TestServer::start(vec![(m, packed)], Behaviour::default());
    let pool = pool();
    let store = store_with_source(pool.path(), &srv.url);
    let img = store.import_ref(&parse_ref("zdisk")).unwrap();
    assert!(img.path.ends_with("disk.raw"), "{}", img.path.display());
    assert_eq!(fs::read(&img.path).unwrap(), disk);
    let md = fs::metadata(&img.path).unwrap();
    assert!(
        md.blocks() * 512 < md.len() / 2,
        "disk.raw is not sparse: {} blocks",
        md.blocks()
    );
}

#[test]
fn raw_zvol_zeros_become_holes_and_a_cut_in_them_resumes_exactly() {
    // The boot filesystem, then 6 MiB: data, 4 MiB of zeros, data. The cut falls
    // inside the zeros.
    let mut tail = noise(1 << 20, 12);
    tail.extend(vec![0u8; 4 << 20]);
    tail.extend(noise(1 << 20, 13));
    let (disk, at) = boot_disk_then(&tail);
    let m = manifest_for(&disk, "sparse", "1", ImageKind::Zvol, Compression::None);
    let b = Behaviour {
        drop_after: Some(at + (3 << 20)),
        drops: AtomicUsize::new(1),
        ..Default::default()
    };
    let srv = TestServer::start(vec![(m.clone(), disk.clone())], b);
    let pool = pool();
    let store = store_with_source(pool.path(), &srv.url);
    assert!(store.import_ref(&parse_ref("sparse")).is_err());
    let img = store.import_ref(&parse_ref("sparse")).unwrap();
    assert_eq!(fs::read(&img.path).unwrap(), disk);
    let md = fs::metadata(&img.path).unwrap();
    assert!(
        md.blocks() * 512 < 4 << 20,
        "zeros were written: {} blocks",
        md.blocks()
    );
    let ranges = srv.file_ranges();
    assert_eq!(ranges.len(), 2);
    assert!(
        ranges[1].starts_with("bytes=") && ranges[1] != "bytes=0-",
        "{ranges:?}"
    );
}

#[test]
fn a_raw_zvol_without_a_kernel_on_an_ext4_boot_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let no_kernel = testkit::disk::ext4_disk(&dir.path().join("nokernel.img"), false);
    let zeros = vec![0u8; 4 << 20];
    let cases = [
        (
            "zeros",
            zeros.clone(),
            Compression::None,
            "no ext4 filesystem",
        ),
        (
            "empty-boot",
            no_kernel.clone(),
            Compression::None,
            "no /boot/vmlinuz",
        ),
        (
            "zeros-zst",
            zstd(&zeros),
            Compression::Zstd,
            "no ext4 filesystem",
        ),
        (
            "empty-boot-xz",
            xz(&no_kernel),
            Compression::Xz,
            "no /boot/vmlinuz",
        ),
    ];
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap();
    for (name, data, compression, seen) in cases {
        let m = manifest_for(&data, name, "1", ImageKind::Zvol, compression);
        let file = dir.path().join(name);
        fs::write(&file, &data).unwrap();
        let err = store.install_file(&m, &file).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Unpack { .. }), "{name}: {msg}");
        assert!(
            msg.contains("no kernel on an ext4 /boot")
                && msg.contains(seen)
                && msg.contains(&m.uuid.to_string()),
            "{name}: {msg}"
        );
        assert!(store.get(&m.uuid).unwrap().is_none(), "{name} was stored");
    }
    assert!(store.list().unwrap().is_empty());
    assert!(partial_entries(&store).is_empty());
}
