//! Pulls from a real OCI registry: Debian's `docker-registry` (distribution) on
//! loopback, fed with images built here with `umoci` and pushed with `skopeo`, two
//! layers with a whiteout, an opaque directory, a symlink and a hard link. The zone
//! runtime then runs the image's entrypoint from the imported rootfs.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{tarball, Entry};
use imgadm::sources::{add_kind, SourceKind};
use imgadm::{ImageKind, ImageStore};
use testkit::registry::{push, run, start as start_registry};

/// An OCI layout `dir:v1` with two layers: the first made by `umoci repack` from a
/// rootfs (busybox, a symlink, a hard link, a file and a directory the second layer
/// hides), the second a hand-made layer with a whiteout and an opaque directory.
pub fn build_image(dir: &Path) -> PathBuf {
    let layout = testkit::registry::busybox_layout(dir, |rootfs| {
        for d in ["etc", "opq", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/cat")).unwrap();
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/ls")).unwrap();
        std::fs::write(rootfs.join("etc/hello.txt"), "hello from layer 1\n").unwrap();
        std::fs::hard_link(rootfs.join("etc/hello.txt"), rootfs.join("etc/hello-link")).unwrap();
        std::fs::write(rootfs.join("gone.txt"), "deleted by layer 2\n").unwrap();
        std::fs::write(rootfs.join("opq/old.txt"), "hidden by layer 2\n").unwrap();
    });
    let image = format!("{}:v1", layout.display());
    let layer2 = tarball(
        &[
            Entry::File(".wh.gone.txt", b"", 0o644),
            Entry::Dir("opq", 0o755),
            Entry::File("opq/.wh..wh..opq", b"", 0o644),
            Entry::File("opq/new.txt", b"from layer 2\n", 0o644),
        ],
        (0, 0),
    );
    let l2 = dir.join("layer2.tar");
    std::fs::write(&l2, layer2).unwrap();
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image", &image])
        .arg(&l2));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        "/bin/sh",
        "--config.entrypoint",
        "-c",
        "--config.cmd",
        "echo entrypoint ran; cat /etc/hello-link; ls /opq; echo $GREETING",
        "--config.env",
        "GREETING=hi",
        "--config.workingdir",
        "/opq",
    ]));
    layout
}

fn zone_binary() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/zone");
    assert!(
        p.exists(),
        "{}: run `cargo build -p zone` first",
        p.display()
    );
    p
}

/// init in host mode over `pool` on a private permissive bus, its log in `log`.
fn host_init(pool: &Path, run_dir: &Path, log: &Path) -> (testkit::Bus, testkit::init::HostInit) {
    use testkit::init::{sibling_bin, HostInit, InitOptions};
    let bus = testkit::Bus::permissive();
    let address = bus.address.clone();
    let init = HostInit::start(
        &bus,
        InitOptions {
            binary: sibling_bin("init"),
            pool,
            run_dir,
            zone: sibling_bin("zone"),
            stderr: std::fs::File::create(log).unwrap().into(),
            configure: Box::new(move |cmd| {
                cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &address);
            }),
        },
    );
    (bus, init)
}

/// The text of `path` in the writable layer of the pool's zone, once it is there.
fn zone_file(pool: &Path, path: &str) -> String {
    testkit::wait_for(
        &format!("the zone's /{path}"),
        Duration::from_secs(60),
        || {
            std::fs::read_dir(pool)
                .ok()?
                .flatten()
                .map(|e| e.path().join("upper").join(path))
                .find(|p| p.exists())
                .and_then(|p| std::fs::read_to_string(p).ok())
                .filter(|t| !t.is_empty())
        },
    )
}

#[test]
fn pulls_layers_with_whiteouts_from_a_real_registry_and_a_zone_runs_the_entrypoint() {
    assert!(nix::unistd::geteuid().is_root(), "run as root");
    let reg = start_registry();
    let work = tempfile::tempdir().unwrap();
    let layout = build_image(work.path());
    push(&layout, "v1", &reg.addr, "test/app");
    let pool = common::pool();
    let store = ImageStore::open(pool.path()).unwrap();
    let r = imgadm::parse_checked_ref(&format!("oci:{}/test/app:v1", reg.addr)).unwrap();

    // HTTPS by default: the registry speaks plain HTTP, so without a docker source
    // that says http:// the pull fails, naming the reference, leaving nothing.
    let err = store.import_ref(&r).unwrap_err().to_string();
    assert!(
        err.contains(&format!("oci:{}/test/app:v1", reg.addr)),
        "{err}"
    );
    assert!(err.contains("https://"), "{err}");
    assert!(store.list().unwrap().is_empty());

    add_kind(
        pool.path(),
        &format!("http://{}", reg.addr),
        SourceKind::Docker,
    )
    .unwrap();
    let img = store.import_ref(&r).unwrap();
    assert_eq!(img.kind, ImageKind::ZoneDataset);
    let root = &img.path;
    // Layer 1: busybox, symlinks, a hard link.
    assert!(root.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let (a, b) = (
        std::fs::metadata(root.join("etc/hello.txt")).unwrap(),
        std::fs::metadata(root.join("etc/hello-link")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "the hard link is one inode");
    // Layer 2: the whiteout deleted gone.txt; the opaque dir hides opq/old.txt.
    assert!(!root.join("gone.txt").exists(), "whiteout not applied");
    assert!(!root.join(".wh.gone.txt").exists());
    assert!(!root.join("opq/old.txt").exists(), "opaque dir not applied");
    assert!(!root.join("opq/.wh..wh..opq").exists());
    assert!(root.join("opq/new.txt").is_file());
    // The config's defaults, and the reference and digest, are in the manifest.
    let o = img.manifest.oci().expect("oci origin");
    assert_eq!(o.config.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(o.config.working_dir, "/opq");
    assert!(o.config.env.contains(&"GREETING=hi".to_string()));
    assert!(o.digest.starts_with("sha256:"));
    assert_eq!(img.uuid, imgadm::oci::uuid_for(&o.digest));
    assert_eq!(
        imgadm::output::field(&img.manifest, "ref").unwrap(),
        r.to_string()
    );

    // The same digest again is a no-op: same image, untouched.
    let before = std::fs::metadata(root).unwrap().mtime_nsec();
    let again = store.import_ref(&r).unwrap();
    assert_eq!(again.uuid, img.uuid);
    assert_eq!(std::fs::metadata(root).unwrap().mtime_nsec(), before);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(store.resolve(&r).unwrap().unwrap().uuid, img.uuid);
    assert_eq!(imgadm::oci::tag_moved(&store, &img).unwrap(), None);

    // A zone from the image runs its entrypoint.
    let out = Command::new(zone_binary())
        .arg("run")
        .arg("--rootfs")
        .arg(root)
        .arg("--")
        .args(o.config.command())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("entrypoint ran\nhello from layer 1\nnew.txt\n"),
        "{text}"
    );

    // The tag moves: reported, and the new digest pulls as a new image.
    let l3 = work.path().join("layer3.tar");
    std::fs::write(
        &l3,
        tarball(&[Entry::File("etc/v2", b"2\n", 0o644)], (0, 0)),
    )
    .unwrap();
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&l3));
    push(&layout, "v1", &reg.addr, "test/app");
    let mv = imgadm::oci::tag_moved(&store, &img)
        .unwrap()
        .expect("moved");
    assert_eq!(mv.installed, o.resolved);
    assert_ne!(mv.now, mv.installed);
    let newer = store.import_ref(&r).unwrap();
    assert_ne!(newer.uuid, img.uuid);
    assert!(newer.path.join("etc/v2").is_file());

    // By digest, too.
    let pinned = imgadm::parse_checked_ref(&format!(
        "oci:{}/test/app@{}",
        reg.addr,
        newer.manifest.oci().unwrap().digest
    ))
    .unwrap();
    assert_eq!(store.import_ref(&pinned).unwrap().uuid, newer.uuid);
}

#[test]
fn the_cli_adds_a_docker_source_imports_lists_and_updates_a_moved_tag() {
    let reg = start_registry();
    let work = tempfile::tempdir().unwrap();
    let layout = build_image(work.path());
    push(&layout, "v1", &reg.addr, "test/cli");
    let pool = common::pool();
    let p = pool.path();
    let source = format!("http://{}", reg.addr);
    let out = common::ok(p, &["sources", "-a", &source, "-t", "docker"]);
    assert!(out.contains("docker"), "{out}");
    assert!(common::ok(p, &["sources"]).contains(&format!("{source} docker")));
    let r = format!("oci:{}/test/cli:v1", reg.addr);
    assert!(common::ok(p, &["import", &r]).starts_with("Imported image"));
    assert!(common::ok(p, &["import", &r]).contains("already installed"));
    let list = common::ok(p, &["list"]);
    let img = ImageStore::open(p).unwrap().list().unwrap().remove(0);
    let digest = img.manifest.oci().unwrap().digest;
    assert!(list.contains("REF") && list.contains("DIGEST"), "{list}");
    assert!(list.contains(&r) && list.contains(&digest), "{list}");

    // Move the tag: avail says so, update pulls it.
    let l3 = work.path().join("layer3.tar");
    std::fs::write(
        &l3,
        tarball(&[Entry::File("etc/v2", b"2\n", 0o644)], (0, 0)),
    )
    .unwrap();
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&l3));
    push(&layout, "v1", &reg.addr, "test/cli");
    let avail = common::ok(p, &["avail"]);
    assert!(avail.contains(&format!("{r} moved")), "{avail}");
    let up = common::ok(p, &["update"]);
    assert!(up.starts_with(&format!("Updated {r}")), "{up}");
    assert_eq!(ImageStore::open(p).unwrap().list().unwrap().len(), 2);
    assert!(!common::ok(p, &["avail"]).contains("moved"));
}

#[test]
fn a_manifest_naming_an_oci_image_runs_its_entrypoint_with_its_env_under_host_mode_init() {
    let reg = start_registry();
    let work = tempfile::tempdir().unwrap();
    let layout = build_image(work.path());
    // The entrypoint leaves proof in its writable layer, then waits to be stopped.
    run(Command::new("umoci").args([
        "config",
        "--image",
        &format!("{}:v1", layout.display()),
        "--config.cmd",
        "echo \"$GREETING from $(cat /etc/hello-link)\" > /proof; \
         trap 'exit 0' TERM; while :; do sleep 1; done",
    ]));
    push(&layout, "v1", &reg.addr, "test/host");
    let pool = work.path().join("pool");
    let run_dir = work.path().join("run");
    std::fs::create_dir_all(pool.join("manifests")).unwrap();
    std::fs::create_dir_all(&run_dir).unwrap();
    add_kind(&pool, &format!("http://{}", reg.addr), SourceKind::Docker).unwrap();
    std::fs::write(
        pool.join("manifests/app.kdl"),
        format!(
            "zone ociapp {{\n    image \"oci:{}/test/host:v1\"\n    memory \"64M\"\n}}\n",
            reg.addr
        ),
    )
    .unwrap();
    let (_bus, mut init) = host_init(&pool, &run_dir, &work.path().join("init.log"));
    let proof = zone_file(&pool, "proof");
    let _ = init.terminate(Duration::from_secs(30));
    // Entrypoint+Cmd ran as the zone's init, with the image's Env.
    assert_eq!(proof, "hi from hello from layer 1\n");
}

#[test]
fn an_images_working_directory_and_user_are_where_and_as_whom_its_entrypoint_runs() {
    let reg = start_registry();
    let work = tempfile::tempdir().unwrap();
    let layout = build_image(work.path());
    let image = format!("{}:v1", layout.display());
    // The image's own users: `app` (1000, primary group 1001) is also in `staff`.
    let users = work.path().join("users.tar");
    let passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n";
    let group = b"root:x:0:\napp:x:1001:\nstaff:x:50:app\n";
    std::fs::write(
        &users,
        tarball(
            &[
                Entry::File("etc/passwd", passwd, 0o644),
                Entry::File("etc/group", group, 0o644),
            ],
            (0, 0),
        ),
    )
    .unwrap();
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image", &image])
        .arg(&users));
    // WorkingDir is not in the image: the zone makes it, for its user. The proof
    // lands there, which only that user may write.
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.workingdir",
        "/srv/app",
        "--config.user",
        "app:staff",
        "--config.cmd",
        "echo \"$(pwd) $(busybox id -u) $(busybox id -g) $(busybox id -G) $HOME\" > proof; \
         trap 'exit 0' TERM; while :; do sleep 1; done",
    ]));
    push(&layout, "v1", &reg.addr, "test/user");
    // The same image whose User names nobody in it.
    run(Command::new("umoci").args(["config", "--image", &image, "--config.user", "ghost"]));
    push(&layout, "v1", &reg.addr, "test/ghost");
    let pool = work.path().join("pool");
    let run_dir = work.path().join("run");
    std::fs::create_dir_all(pool.join("manifests")).unwrap();
    std::fs::create_dir_all(&run_dir).unwrap();
    add_kind(&pool, &format!("http://{}", reg.addr), SourceKind::Docker).unwrap();
    let zone = |name: &str, repo: &str| {
        format!(
            "zone {name} {{\n    image \"oci:{}/{repo}:v1\"\n    memory \"64M\"\n}}\n",
            reg.addr
        )
    };
    std::fs::write(pool.join("manifests/app.kdl"), zone("userapp", "test/user")).unwrap();
    std::fs::write(
        pool.join("manifests/ghost.kdl"),
        zone("ghostapp", "test/ghost"),
    )
    .unwrap();
    let (_bus, mut init) = host_init(&pool, &run_dir, &work.path().join("init.log"));
    let proof = zone_file(&pool, "srv/app/proof");
    // uid, gid (the named group), groups (the named one, then those listing app).
    assert_eq!(proof, "/srv/app 1000 50 50 /home/app\n");
    // The zone whose user is not in its image fails, and its status says why.
    let ghost = init.wait_line(
        "instance ghostapp zone failed (zone ghostapp",
        Duration::from_secs(60),
    );
    let _ = init.terminate(Duration::from_secs(30));
    assert!(ghost.contains("ghostapp"), "{ghost}");
    assert!(
        ghost.contains("user \"ghost\" is not in the image's /etc/passwd"),
        "{ghost}"
    );
}
