//! The busybox image (`images/build busybox`) carries the mdata tools and runs the
//! first-boot agent at boot: its static tools run in a real zone (`zone run`), and its
//! own boot script (`/etc/init.d/rcS`) configures the instance from a metadata server
//! on `/native/.zonecontrol/metadata.sock`.
//!
//! `zone run` cannot hand a socket to the zone: its rootfs is the lower layer of an
//! overlay, and a unix socket cannot be connected to through overlayfs (ECONNREFUSED;
//! the zone monitor will bind-mount it). So the round trip with the server runs the
//! image's rootfs under `chroot`, in new mount, UTS and network namespaces, with a
//! veth link carrying the metadata's MAC.
//!
//! Needs root, `images/build busybox` (cargo builds the static tools; seconds once
//! built), `unshare`, `ip` and `tar`, and the `zone` binary ($SKERRY_ZONE_BIN, else
//! the workspace's: `cargo build -p zone`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `images/build busybox` once per test process: the image's tarball.
fn busybox_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| image_file("busybox"))
}

/// The busybox image's rootfs unpacked (owners kept) into `dir/root`.
fn unpack(dir: &Path) -> PathBuf {
    unpack_file(busybox_image(), dir)
}

/// A zone image's tarball unpacked (owners kept) into `dir/root`.
fn unpack_file(image: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let st = Command::new("tar")
        .args(["--numeric-owner", "-xf"])
        .arg(image)
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success(), "unpacking {}", image.display());
    root
}

/// The zone binary: $SKERRY_ZONE_BIN, else the workspace's built one.
fn zone_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKERRY_ZONE_BIN") {
        return p.into();
    }
    // Same target dir as this test binary: <target>/debug/deps/<test> -> <target>/debug/zone.
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("zone");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p zone) or set SKERRY_ZONE_BIN",
        p.display()
    );
    p
}

#[test]
fn busybox_image_tools_run_in_a_zone() {
    let dir = tempfile::tempdir().unwrap();
    let root = unpack(dir.path());
    // No metadata service in a `zone run` zone: the tool must run (static: the image
    // has no libc), find neither the socket nor /dev/ttyS1 and say so; the boot hook
    // must give up at once so that the zone boots as before.
    let out = Command::new(zone_bin())
        .args(["run", "--rootfs"])
        .arg(&root)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "/usr/sbin/mdata-get sdc:uuid; echo get=$?; \
             /usr/sbin/mdata-list; echo list=$?; \
             /etc/init.d/mdata-boot --zone; echo boot=$?",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "zone run: {stdout}{stderr}");
    assert!(stdout.contains("get=2\n"), "{stdout}{stderr}");
    assert!(stdout.contains("list=2\n"), "{stdout}{stderr}");
    assert!(
        stderr.contains("could not open /dev/ttyS1"),
        "mdata-get did not run in the zone: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("mdata-boot: no metadata service answered") && stdout.contains("boot=1\n"),
        "{stdout}{stderr}"
    );
}

#[test]
fn busybox_image_configures_itself_from_metadata_at_boot() {
    let dir = tempfile::tempdir().unwrap();
    let root = unpack(dir.path());
    let zonecontrol = root.join("native/.zonecontrol");
    std::fs::create_dir_all(&zonecontrol).unwrap();
    let store = store_at(&dir.path().join("metadata.json"));
    store
        .lock()
        .unwrap()
        .put(
            "user-script",
            "#!/bin/sh\necho \"user-script ran as $(id -u)\" > /root/user-script-ran\n",
        )
        .unwrap();
    let sock = zonecontrol.join("metadata.sock");
    serve_socket_at(&sock, store.clone());
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    // What the zone's init does at boot (rcS), after the tools by hand.
    let guest = "set -e
        echo uuid=$(mdata-get sdc:uuid)
        mdata-list
        printf from-guest | mdata-put note
        mdata-delete role
        /etc/init.d/rcS
        echo hostname=$(hostname)
        ip -o -4 addr show dev eth0
        ip -4 route show";
    let script = format!(
        "set -e
         mount -t proc proc {root}/proc
         mount -t sysfs sysfs {root}/sys
         ip link add eth0 address 02:08:20:6a:1c:2f type veth peer name eth1
         ip link set eth1 up
         chroot {root} /bin/sh -c '{guest}'",
        root = root.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--uts", "--net", "sh", "-c", &script])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    // The tools against the server.
    assert!(
        stdout.contains(&format!("uuid={UUID}\n")),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("role\n"), "mdata-list: {stdout}{stderr}");
    let s = store.lock().unwrap();
    assert_eq!(s.get("note").as_deref(), Some("from-guest"));
    assert_eq!(s.get("role"), None);
    drop(s);
    // The boot: hostname, address and default route from sdc:nics, keys, resolvers,
    // the user-script.
    assert!(
        stdout.contains("configuring this instance from its metadata"),
        "{stdout}"
    );
    assert!(stdout.contains("hostname=web01\n"), "{stdout}{stderr}");
    assert!(stdout.contains("inet 10.88.0.10/24"), "{stdout}{stderr}");
    assert!(
        stdout.contains("default via 10.88.0.1 dev eth0"),
        "{stdout}{stderr}"
    );
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    assert_eq!(read("etc/hostname"), "web01\n");
    assert_eq!(
        read("root/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAC3Nz test@skerry\n"
    );
    let mode = std::fs::metadata(root.join("root/.ssh/authorized_keys"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(read("etc/resolv.conf").contains("nameserver 10.88.0.1"));
    assert_eq!(read("root/user-script-ran"), "user-script ran as 0\n");
    assert!(root
        .join(format!("var/lib/mdata-firstboot/user-script.{UUID}.done"))
        .exists());
}

/// `images/build NAME`: the image's file (the one beside manifest.json).
fn image_file(name: &str) -> PathBuf {
    let out = Command::new(repo().join("images/build"))
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .expect("running images/build");
    assert!(out.status.success(), "images/build {name} failed");
    let dir = String::from_utf8(out.stdout).unwrap();
    let dir = PathBuf::from(
        dir.lines()
            .last()
            .expect("images/build printed nothing")
            .trim(),
    );
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap() != "manifest.json")
        .expect("image file beside the manifest")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HVM image's root filesystem, read from its disk with debugfs (no loop mount),
/// in `dir/root`.
fn hvm_rootfs(name: &str, dir: &Path) -> PathBuf {
    run(Command::new("zstd")
        .args(["-dq", "-o"])
        .arg(dir.join("disk.raw"))
        .arg(image_file(name)));
    run(Command::new("dd")
        .arg(format!("if={}", dir.join("disk.raw").display()))
        .arg(format!("of={}", dir.join("part.img").display()))
        .args(["bs=1M", "skip=1", "status=none"]));
    std::fs::remove_file(dir.join("disk.raw")).unwrap();
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", root.display()))
        .arg(dir.join("part.img")));
    std::fs::remove_file(dir.join("part.img")).unwrap();
    root
}

/// Runs `boot` (a shell command; `{root}` is replaced by `root`) in new mount, UTS and
/// network namespaces where `root` has /proc, /sys, a few /dev nodes, and a pty served
/// by `store` as `/dev/ttyS1` (COM2, as the VMM serves it), and the namespace has a
/// veth `eth0` with the metadata's MAC; then shows hostname, addresses and routes.
/// Returns stdout and stderr; fails on a non-zero exit.
fn boot_on_metadata(
    root: &Path,
    store: std::sync::Arc<std::sync::Mutex<mdata::MetadataStore>>,
    boot: &str,
) -> (String, String) {
    let (tty, _slave) = serve_pty(store);
    let boot = boot.replace("{root}", &root.display().to_string());
    let script = format!(
        "set -e
         mount -t proc proc {root}/proc
         mount -t sysfs sysfs {root}/sys
         mount -t tmpfs tmpfs {root}/dev
         for n in null zero random urandom ttyS1; do touch {root}/dev/$n; done
         for n in null zero random urandom; do mount --bind /dev/$n {root}/dev/$n; done
         mount --bind {tty} {root}/dev/ttyS1
         ip link add eth0 address 02:08:20:6a:1c:2f type veth peer name eth1
         ip link set eth1 up
         {boot}
         echo hostname=$(hostname)
         ip -o -4 addr show
         ip -4 route show",
        root = root.display(),
        tty = tty.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--uts", "--net", "sh", "-c", &script])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

#[test]
#[ignore = "needs images/build debian-hvm (debootstrap, minutes when not cached); run with --ignored"]
fn debian_hvm_network_comes_from_metadata_on_ttys1() {
    let dir = tempfile::tempdir().unwrap();
    let root = hvm_rootfs("debian-hvm", dir.path());
    let store = store_at(&dir.path().join("metadata.json"));
    let (stdout, stderr) = boot_on_metadata(&root, store, "chroot {root} /etc/init.d/skerry-net");
    assert!(
        stdout.contains("configuring this instance from its metadata"),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("hostname=web01\n"), "{stdout}{stderr}");
    assert!(stdout.contains("inet 10.88.0.10/24"), "{stdout}{stderr}");
    assert!(
        stdout.contains("default via 10.88.0.1 dev eth0"),
        "{stdout}{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("root/.ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 AAAAC3Nz test@skerry\n"
    );
}

/// Default run (builds `images/build debian-cloudinit-hvm` when not cached): the
/// image's own cloud-init, stage by stage, against our server; shows each result in
/// the root filesystem (the rendered `eni` file, `authorized_keys`, the user-script's
/// file), which the QEMU boot in `image_boot.rs` can only show on the console.
#[test]
fn debian_cloudinit_image_provisions_itself_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let root = hvm_rootfs("debian-cloudinit-hvm", dir.path());
    let store = store_at(&dir.path().join("metadata.json"));
    store
        .lock()
        .unwrap()
        .put(
            "user-script",
            "#!/bin/sh\necho user-script ran > /root/user-script-ran\n",
        )
        .unwrap();
    // cloud-init's stages as the image's init scripts run them; the datasource
    // recognises SmartOS by DMI, which the VMM's SMBIOS tables give a booted guest.
    // Here /sys is rebuilt from bind mounts of this namespace's sysfs with a
    // class/dmi/id (this host may have none) saying the same.
    let (stdout, stderr) = boot_on_metadata(
        &root,
        store,
        "s={root}/sys
         mkdir -p /run/skerry-image-test && mount -t tmpfs tmpfs /run/skerry-image-test
         mount --move $s /run/skerry-image-test && mount -t tmpfs tmpfs $s
         for e in $(ls /run/skerry-image-test); do
             [ $e = class ] && continue
             mkdir $s/$e && mount --bind /run/skerry-image-test/$e $s/$e
         done
         for e in $(ls /run/skerry-image-test/class); do
             mkdir -p $s/class/$e && mount --bind /run/skerry-image-test/class/$e $s/class/$e
         done
         mkdir -p $s/class/dmi/id
         echo 'SmartDC HVM' > {root}/sys/class/dmi/id/product_name
         echo 6A1C2F4E-3B7D-4E0A-9C61-5F2D8E9A0B13 > {root}/sys/class/dmi/id/product_uuid
         chroot {root} cloud-init init --local
         chroot {root} sh -c 'ifup -a'
         chroot {root} cloud-init init
         chroot {root} cloud-init modules --mode config
         chroot {root} cloud-init modules --mode final",
    );
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let eni = read("etc/network/interfaces.d/50-cloud-init");
    assert!(
        eni.contains("address 10.88.0.10/24"),
        "{eni}\n{stdout}{stderr}"
    );
    assert!(stdout.contains("inet 10.88.0.10/24"), "{stdout}{stderr}");
    assert!(stdout.contains("default via 10.88.0.1"), "{stdout}{stderr}");
    assert!(stdout.contains("hostname=web01\n"), "{stdout}{stderr}");
    assert!(
        read("root/.ssh/authorized_keys").contains("ssh-ed25519 AAAAC3Nz test@skerry"),
        "{stdout}{stderr}"
    );
    assert_eq!(
        read("root/user-script-ran"),
        "user-script ran\n",
        "{stdout}{stderr}"
    );
}

#[test]
#[ignore = "needs images/build debian (debootstrap, minutes when not cached); run with --ignored"]
fn debian_zone_image_runs_the_agent_after_rcs() {
    let dir = tempfile::tempdir().unwrap();
    let root = unpack_file(&image_file("debian"), dir.path());
    let inittab = std::fs::read_to_string(root.join("etc/inittab")).unwrap();
    assert!(
        inittab
            .contains("si::sysinit:/etc/init.d/rcS\nmd::sysinit:/etc/init.d/mdata-boot --zone\n"),
        "{inittab}"
    );
    std::fs::create_dir_all(root.join("native/.zonecontrol")).unwrap();
    let sock = root.join("native/.zonecontrol/metadata.sock");
    serve_socket_at(&sock, store_at(&dir.path().join("metadata.json")));
    let script = format!(
        "set -e
         mount -t proc proc {root}/proc
         mount -t sysfs sysfs {root}/sys
         mount -t tmpfs tmpfs {root}/dev
         for n in null zero random urandom; do
             touch {root}/dev/$n && mount --bind /dev/$n {root}/dev/$n
         done
         ip link add eth0 address 02:08:20:6a:1c:2f type veth peer name eth1
         chroot {root} /etc/init.d/mdata-boot --zone
         echo hostname=$(hostname)
         ip -o -4 addr show dev eth0",
        root = root.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--uts", "--net", "sh", "-c", &script])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("hostname=web01\n"), "{stdout}{stderr}");
    assert!(stdout.contains("inet 10.88.0.10/24"), "{stdout}{stderr}");
    assert_eq!(
        std::fs::read_to_string(root.join("root/.ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 AAAAC3Nz test@skerry\n"
    );
}

/// A recipe made of `images/lib.sh`'s cache helpers, building from `$FAKE_INPUT`.
const FAKE_RECIPE: &str = r#"#!/usr/bin/env bash
recipe=fake
source "$REPO/images/lib.sh"
out="$cache/images/fake-1"
cached_or_lock "$out" "$(content_key "$0" "$FAKE_INPUT")"
mkdir -p "$out.tmp"
cp "$FAKE_INPUT" "$out.tmp/fake.bin"
write_manifest "$out.tmp" fake.bin fake 1 zone-dataset other none "content key test"
finish "$out"
"#;

#[test]
fn image_cache_is_keyed_by_recipe_and_embedded_content() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("build");
    let input = dir.path().join("embedded.bin");
    std::fs::write(&recipe, FAKE_RECIPE).unwrap();
    std::fs::set_permissions(&recipe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&input, "v1").unwrap();
    // (image uuid, embedded content) of a build.
    let build = |force: bool| {
        let mut cmd = Command::new(&recipe);
        cmd.env("REPO", repo())
            .env("SKERRY_CACHE", dir.path().join("cache"))
            .env("FAKE_INPUT", &input)
            .env_remove("FORCE");
        if force {
            cmd.env("FORCE", "1");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let at = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(at.join("manifest.json")).unwrap()).unwrap();
        let content = std::fs::read_to_string(at.join("fake.bin")).unwrap();
        (m["uuid"].as_str().unwrap().to_string(), content)
    };
    let first = build(false);
    assert_eq!(
        build(false),
        first,
        "unchanged inputs: served from the cache"
    );
    std::fs::write(&input, "v2").unwrap();
    let second = build(false);
    assert_eq!(second.1, "v2", "a changed embedded file rebuilds the image");
    assert_ne!(second.0, first.0);
    let mut text = FAKE_RECIPE.to_string();
    text.push_str("# an edit\n");
    std::fs::write(&recipe, text).unwrap();
    let third = build(false);
    assert_ne!(third.0, second.0, "an edited recipe rebuilds the image");
    assert_eq!(build(false), third);
    assert_ne!(build(true).0, third.0, "FORCE rebuilds");
}
