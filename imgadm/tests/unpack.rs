//! Zone dataset unpacking: what is kept (owners, modes, xattrs, hard links, symlinks)
//! and what is refused (paths escaping the image directory), through `install` and
//! through an HTTP import.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use imgadm::{parse_ref, Compression, ImageKind, ImageStore, StoreError};

fn install(
    store: &ImageStore,
    tar: &[u8],
    compression: Compression,
) -> Result<imgadm::Image, StoreError> {
    let m = manifest_for(tar, "t", "1", ImageKind::ZoneDataset, compression);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("image");
    fs::write(&f, tar).unwrap();
    store.install_file(&m, &f)
}

fn good_tree() -> Vec<u8> {
    tarball(
        &[
            Entry::Dir("./", 0o755),
            Entry::Dir("./bin/", 0o755),
            Entry::File("./bin/busybox", b"#!fake busybox", 0o4755),
            Entry::Symlink("./bin/sh", "/bin/busybox"),
            Entry::Symlink("./bin/up", "../../../../etc"),
            Entry::HardLink("./bin/ash", "./bin/busybox"),
            Entry::Dir("./etc/", 0o700),
            Entry::File("./etc/shadow", b"root::0:0:::::\n", 0o640),
            Entry::CharDev("./dev-null"),
        ],
        (1234, 5678),
    )
}

fn check_good_tree(root: &Path) {
    let bb = fs::metadata(root.join("bin/busybox")).unwrap();
    assert_eq!(bb.permissions().mode() & 0o7777, 0o4755, "setuid mode kept");
    assert_eq!(
        (bb.uid(), bb.gid()),
        (1234, 5678),
        "owners kept (tests run as root)"
    );
    assert_eq!(bb.mtime(), 1_700_000_000);
    let ash = fs::metadata(root.join("bin/ash")).unwrap();
    assert_eq!(ash.ino(), bb.ino(), "hard link kept as a hard link");
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::read_link(root.join("bin/up")).unwrap(),
        Path::new("../../../../etc")
    );
    assert_eq!(
        fs::metadata(root.join("etc")).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(!root.join("dev-null").exists(), "device nodes are skipped");
}

#[test]
fn unpacks_keeping_owners_modes_links_in_every_compression() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test checks owners: run the suite as root"
    );
    let tar = good_tree();
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap();
    for (c, data) in [
        (Compression::None, tar.clone()),
        (Compression::Gzip, gzip(&tar)),
        (Compression::Zstd, zstd(&tar)),
        (Compression::Xz, xz(&tar)),
        (Compression::Bzip2, bzip2(&tar)),
    ] {
        let img = install(&store, &data, c).unwrap();
        assert!(img.path.ends_with("root"));
        check_good_tree(&img.path);
    }
    assert_eq!(store.list().unwrap().len(), 5);
}

#[test]
fn keeps_xattrs() {
    // Build the tarball with GNU tar from a real tree carrying a user xattr.
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), b"x").unwrap();
    nix_setxattr(&src.path().join("f"));
    let tarfile = src.path().join("t.tar");
    let st = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-cf"])
        .arg(&tarfile)
        .arg("-C")
        .arg(src.path())
        .arg("f")
        .status()
        .expect("GNU tar is needed for this test");
    assert!(st.success());
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap();
    let img = install(&store, &fs::read(&tarfile).unwrap(), Compression::None).unwrap();
    let v = getxattr(&img.path.join("f"), "user.skerry");
    assert_eq!(v.as_deref(), Some(&b"kept"[..]));
}

fn nix_setxattr(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings and a live buffer of the given length.
    let r = unsafe {
        libc_setxattr(
            c.as_ptr(),
            c"user.skerry".as_ptr(),
            b"kept".as_ptr().cast(),
            4,
            0,
        )
    };
    assert_eq!(r, 0, "setxattr failed: {}", std::io::Error::last_os_error());
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a live buffer of the given length.
    let r = unsafe { libc_getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

extern "C" {
    #[link_name = "setxattr"]
    fn libc_setxattr(
        path: *const std::ffi::c_char,
        name: *const std::ffi::c_char,
        value: *const std::ffi::c_void,
        size: usize,
        flags: i32,
    ) -> i32;
    #[link_name = "getxattr"]
    fn libc_getxattr(
        path: *const std::ffi::c_char,
        name: *const std::ffi::c_char,
        value: *mut std::ffi::c_void,
        size: usize,
    ) -> isize;
}

#[test]
fn refuses_entries_escaping_the_image_directory() {
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_str().unwrap().to_string();
    let target = format!("{out}/victim");
    fs::write(&target, b"untouched").unwrap();
    let out_mode = fs::metadata(&out).unwrap().permissions().mode();
    let victim_rel = format!("../../../../../../../..{target}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            tarball(&[Entry::File("../escape", b"x", 0o644)], (0, 0)),
        ),
        (
            "deep dotdot",
            tarball(
                &[
                    Entry::Dir("./a/", 0o755),
                    Entry::File("./a/../../escape", b"x", 0o644),
                ],
                (0, 0),
            ),
        ),
        (
            "absolute",
            tarball(&[Entry::File(&target, b"pwned", 0o644)], (0, 0)),
        ),
        (
            "through symlink",
            tarball(
                &[
                    Entry::Symlink("./link", &out),
                    Entry::File("./link/victim", b"pwned", 0o644),
                ],
                (0, 0),
            ),
        ),
        (
            "dir over symlink",
            tarball(
                &[Entry::Symlink("./link", &out), Entry::Dir("./link/", 0o777)],
                (0, 0),
            ),
        ),
        (
            "hard link out",
            tarball(&[Entry::HardLink("./h", &victim_rel)], (0, 0)),
        ),
        (
            "hard link absolute",
            tarball(&[Entry::HardLink("./h", &target)], (0, 0)),
        ),
        (
            "hard link via symlink",
            tarball(
                &[
                    Entry::Symlink("./link", &out),
                    Entry::HardLink("./h", "./link/victim"),
                ],
                (0, 0),
            ),
        ),
    ];
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap();
    for (what, tar) in cases {
        let err = install(&store, &gzip(&tar), Compression::Gzip).unwrap_err();
        assert!(
            matches!(err, StoreError::UnsafeEntry { .. }),
            "{what}: {err}"
        );
        assert!(
            err.to_string().contains("nothing installed"),
            "{what}: {err}"
        );
        assert!(store.list().unwrap().is_empty(), "{what}: installed anyway");
        assert_eq!(
            fs::read(&target).unwrap(),
            b"untouched",
            "{what}: wrote outside"
        );
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode(),
            out_mode,
            "{what}: chmod outside"
        );
        assert_eq!(
            fs::metadata(&target).unwrap().nlink(),
            1,
            "{what}: linked outside"
        );
        assert_eq!(
            fs::read_dir(&out).unwrap().count(),
            1,
            "{what}: created outside"
        );
    }
    assert!(!pool.path().join("escape").exists() && !pool.path().join("images/escape").exists());
}

#[test]
fn path_escape_over_http_installs_nothing() {
    let tar = zstd(&tarball(
        &[
            Entry::File("./ok", b"1", 0o644),
            Entry::File("../../evil", b"x", 0o644),
        ],
        (0, 0),
    ));
    let m = manifest_for(&tar, "evil", "1", ImageKind::ZoneDataset, Compression::Zstd);
    let srv = TestServer::start(vec![(m.clone(), tar)], Behaviour::default());
    let pool = pool();
    let store = ImageStore::open_with_sources(pool.path(), std::slice::from_ref(&srv.url)).unwrap();
    let err = store.import_ref(&parse_ref("evil@1")).unwrap_err();
    assert!(err.to_string().contains("../../evil"), "{err}");
    assert!(store.list().unwrap().is_empty());
    assert!(!store.image_dir(&m.uuid).exists());
    let left: Vec<_> = fs::read_dir(store.images_dir().join(".partial"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "debris: {left:?}");
}

#[test]
fn garbage_instead_of_a_tarball_is_an_unpack_error() {
    let junk = gzip(&noise(10_000, 3));
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap();
    let err = install(&store, &junk, Compression::Gzip).unwrap_err();
    assert!(matches!(err, StoreError::Unpack { .. }), "{err}");
    assert!(store.list().unwrap().is_empty());
}
