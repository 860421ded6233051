//! `imgadm create` on a real pool: a stopped zone's image plus its overlay upper
//! layer (a changed file, a new one, a whiteout, an opaque directory, owners in the
//! zone's host id range) becomes one zone-dataset; a stopped HVM's boot disk becomes a
//! zvol; both carry `origin`, list, and are served by `imgadm serve` to another pool.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use imgadm::{Compression, ImageKind, ImageStore};
use uuid::Uuid;

const SHIFT: u32 = 200_000;

/// Records instance `name` of `image` in state `state`; returns its directory.
fn record(
    pool: &Path,
    name: &str,
    image: Uuid,
    state: spec::State,
    hvm: bool,
) -> std::path::PathBuf {
    let uuid = Uuid::new_v4().to_string();
    let dir = spec::pool::instance_dir(pool, &uuid);
    fs::create_dir(&dir).unwrap();
    let mut s = spec::InstanceSpec::zone(name, spec::ImageRef::Uuid(image));
    if hvm {
        s.kind = spec::Kind::Hvm(spec::HvmSpec {
            vcpus: 1,
            cpu_cap: 100,
            disks: vec![spec::Disk {
                name: "root".into(),
                boot: true,
                size: None,
            }],
            cmdline: None,
        });
    }
    let rec = spec::pool::InstanceRecord {
        image_uuid: image.to_string(),
        state,
        id_range_start: if hvm { 0 } else { SHIFT },
        ..spec::pool::InstanceRecord::provisioning(uuid.clone(), s)
    };
    fs::write(
        spec::pool::state_path(pool, &uuid),
        serde_json::to_string(&rec).unwrap(),
    )
    .unwrap();
    dir
}

struct Serve(Child);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(pool: &Path) -> (Serve, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_imgadm"))
        .arg("--pool")
        .arg(pool)
        .args(["serve", "--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Serve(child), format!("http://{addr}"))
}

#[test]
fn zone_and_hvm_become_images_with_origin_that_list_and_serve() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "whiteouts need root: run as root"
    );
    let pool = pool();
    let p = pool.path();
    let store = ImageStore::open(p).unwrap().without_progress();
    let tar = tarball(
        &[
            Entry::Dir("./", 0o755),
            Entry::File("./kept", b"from the image", 0o644),
            Entry::File("./changed", b"old", 0o644),
            Entry::File("./deleted", b"gone soon", 0o644),
            Entry::Dir("./opaque/", 0o755),
            Entry::File("./opaque/hidden", b"hidden", 0o644),
            Entry::Dir("./merged/", 0o755),
            Entry::File("./merged/lower", b"lower", 0o644),
            Entry::Symlink("./link", "kept"),
        ],
        (0, 0),
    );
    let m = manifest_for(&tar, "base", "1", ImageKind::ZoneDataset, Compression::None);
    let tf = p.join("base.tar");
    fs::write(&tf, &tar).unwrap();
    let base = store.install_file(&m, &tf).unwrap().uuid;

    // The zone's upper layer as overlayfs leaves it.
    let zdir = record(p, "web01", base, spec::State::Running, false);
    let upper = zdir.join("upper");
    fs::create_dir_all(upper.join("opaque")).unwrap();
    fs::create_dir_all(upper.join("merged")).unwrap();
    fs::write(upper.join("changed"), "new").unwrap();
    fs::write(upper.join("added"), "added in the zone").unwrap();
    std::os::unix::fs::chown(upper.join("added"), Some(SHIFT + 1000), Some(SHIFT + 1000)).unwrap();
    fs::write(upper.join("merged/upper"), "upper").unwrap();
    fs::write(upper.join("opaque/new"), "new").unwrap();
    xattr::set(upper.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
    nix::sys::stat::mknod(
        &upper.join("deleted"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    let tmpl = p.join("tmpl.json");
    fs::write(&tmpl, r#"{"name": "web-golden", "version": "2", "os": "linux", "description": "made from web01"}"#).unwrap();

    // A running zone is refused.
    let o = imgadm(p, &["create", "-m", tmpl.to_str().unwrap(), "web01"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stop it"),
        "{o:?}"
    );
    // Stopped, it is made.
    let state = spec::pool::state_path(p, zdir.file_name().unwrap().to_str().unwrap());
    let text = fs::read_to_string(&state)
        .unwrap()
        .replace("\"running\"", "\"stopped\"");
    fs::write(&state, text).unwrap();
    let out = ok(p, &["create", "-m", tmpl.to_str().unwrap(), "web01"]);
    assert!(out.contains("web-golden@2"), "{out}");
    let img = store
        .resolve(&imgadm::parse_ref("web-golden@2"))
        .unwrap()
        .unwrap();
    assert_eq!(img.kind, ImageKind::ZoneDataset);
    assert_ne!(img.uuid, base);
    assert_eq!(img.manifest.extra["origin"], base.to_string());
    let root = &img.path;
    let read = |r: &str| fs::read_to_string(root.join(r)).unwrap();
    assert_eq!(read("kept"), "from the image");
    assert_eq!(read("changed"), "new");
    assert_eq!(read("added"), "added in the zone");
    assert_eq!(
        fs::metadata(root.join("added")).unwrap().uid(),
        1000,
        "owner not shifted back"
    );
    assert!(!root.join("deleted").exists(), "whiteout ignored");
    assert!(
        !root.join("opaque/hidden").exists(),
        "opaque directory ignored"
    );
    assert_eq!(read("opaque/new"), "new");
    assert_eq!(read("merged/lower"), "lower");
    assert_eq!(read("merged/upper"), "upper");
    assert_eq!(fs::read_link(root.join("link")).unwrap(), Path::new("kept"));

    // An HVM's boot disk.
    let (disk, _) = boot_disk_then(&noise(3 << 20, 5));
    let dm = manifest_for(&disk, "vm", "1", ImageKind::Zvol, Compression::None);
    let df = p.join("vm.raw");
    fs::write(&df, &disk).unwrap();
    let vm_base = store.install_file(&dm, &df).unwrap().uuid;
    let vdir = record(p, "vm01", vm_base, spec::State::Stopped, true);
    fs::create_dir(vdir.join("disks")).unwrap();
    let mut grown = disk.clone();
    grown[100..200].copy_from_slice(&[7u8; 100]);
    fs::write(vdir.join("disks/root.raw"), &grown).unwrap();
    fs::write(&tmpl, r#"{"name": "vm-golden", "version": "1"}"#).unwrap();
    ok(p, &["create", "-m", tmpl.to_str().unwrap(), "vm01"]);
    let vimg = store
        .resolve(&imgadm::parse_ref("vm-golden"))
        .unwrap()
        .unwrap();
    assert_eq!(vimg.kind, ImageKind::Zvol);
    assert_eq!(vimg.manifest.extra["origin"], vm_base.to_string());
    assert_eq!(fs::read(&vimg.path).unwrap(), grown);
    // A boot disk without a kernel on an ext4 /boot (zeroed) makes no image.
    let wiped = record(p, "vm02", vm_base, spec::State::Stopped, true);
    fs::create_dir(wiped.join("disks")).unwrap();
    fs::write(wiped.join("disks/root.raw"), vec![0u8; 1 << 20]).unwrap();
    fs::write(&tmpl, r#"{"name": "vm-wiped", "version": "1"}"#).unwrap();
    let o = imgadm(p, &["create", "-m", tmpl.to_str().unwrap(), "vm02"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no kernel on an ext4 /boot"),
        "{err}"
    );
    assert!(store
        .resolve(&imgadm::parse_ref("vm-wiped"))
        .unwrap()
        .is_none());

    let listed = ok(p, &["list", "-H", "-o", "name"]);
    assert!(
        listed.contains("web-golden") && listed.contains("vm-golden"),
        "{listed}"
    );

    // Served to another pool, which imports it by name.
    let (_srv, url) = serve(p);
    let other = common::pool();
    let s2 = ImageStore::open(other.path()).unwrap().without_progress();
    s2.add_source(&url).unwrap();
    let got = s2.import_ref(&imgadm::parse_ref("web-golden@2")).unwrap();
    assert_eq!(got.uuid, img.uuid);
    assert_eq!(fs::read_to_string(got.path.join("changed")).unwrap(), "new");
    assert!(!got.path.join("deleted").exists());
}

/// The `zone` binary built beside this test (`cargo build -p zone`).
fn zone_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("zone");
    assert!(
        bin.is_file(),
        "{} missing: cargo build -p zone",
        bin.display()
    );
    bin
}

#[test]
fn a_zone_runs_from_an_image_made_of_a_zone() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "zones need root: run as root"
    );
    let tree = tempfile::tempdir().unwrap();
    let r = tree.path();
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", r.join("bin/busybox")).expect("busybox-static");
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
    fs::write(r.join("etc/motd"), "from the image\n").unwrap();
    fs::write(r.join("etc/issue"), "deleted in the zone\n").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", r).unwrap();
    let tar = b.into_inner().unwrap();

    let pool = pool();
    let p = pool.path();
    let store = ImageStore::open(p).unwrap().without_progress();
    let m = manifest_for(&tar, "bb", "1", ImageKind::ZoneDataset, Compression::None);
    let tf = p.join("bb.tar");
    fs::write(&tf, &tar).unwrap();
    let base = store.install_file(&m, &tf).unwrap().uuid;
    let zdir = record(p, "tuned", base, spec::State::Stopped, false);
    let upper = zdir.join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/motd"), "tuned in the zone\n").unwrap();
    nix::sys::stat::mknod(
        &upper.join("etc/issue"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    let tmpl = p.join("tmpl.json");
    fs::write(&tmpl, r#"{"name": "tuned", "version": "1"}"#).unwrap();
    ok(p, &["create", "-m", tmpl.to_str().unwrap(), "tuned"]);
    let img = store.resolve(&imgadm::parse_ref("tuned")).unwrap().unwrap();

    let out = Command::new(zone_bin())
        .args(["run", "--rootfs"])
        .arg(&img.path)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "cat /etc/motd; test -e /etc/issue || echo issue gone; echo pid $$",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "zone run: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tuned in the zone")
            && stdout.contains("issue gone")
            && stdout.contains("pid 1"),
        "{stdout}"
    );
}
