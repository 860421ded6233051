//! The recipes in images/: each image builds (or comes from the cache), installs with
//! the store, and works: the busybox and Debian rootfs run their shell under chroot,
//! the Debian HVM disk boots to a login prompt on ttyS0 in QEMU.
//!
//! busybox builds in seconds and is part of the default run. The Debian images need
//! debootstrap (minutes on first build), so their tests are `#[ignore]`d: run them with
//! `cargo test -p imgadm --test images -- --ignored`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgadm::{ImageManifest, ImageStore};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `images/build NAME` and returns the output directory it prints.
fn build(name: &str) -> PathBuf {
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
    assert!(
        dir.join("manifest.json").is_file(),
        "{} has no manifest.json",
        dir.display()
    );
    dir
}

/// Installs the image in `dir` into a fresh pool; returns the pool and the image.
fn install(dir: &Path) -> (tempfile::TempDir, imgadm::Image) {
    let m = ImageManifest::from_json(
        &fs::read(dir.join("manifest.json")).unwrap(),
        "manifest.json",
    )
    .unwrap();
    let file = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap() != "manifest.json")
        .expect("image file beside the manifest");
    let pool = tempfile::Builder::new()
        .prefix("imgadm-images-")
        .tempdir()
        .unwrap();
    let img = ImageStore::open(pool.path())
        .unwrap()
        .install_file(&m, &file)
        .unwrap();
    (pool, img)
}

fn chroot(root: &Path, cmd: &str) -> String {
    let out = Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chroot {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn busybox_image_builds_installs_and_runs() {
    let dir = build("busybox");
    let (_pool, img) = install(&dir);
    assert_eq!(
        (img.name.as_str(), img.version.as_str()),
        ("busybox", "1.36")
    );
    let root = &img.path;
    assert_eq!(
        fs::read_link(root.join("sbin/init")).unwrap(),
        Path::new("/bin/busybox")
    );
    let inittab = fs::read_to_string(root.join("etc/inittab")).unwrap();
    assert!(
        inittab.contains("::sysinit:/etc/init.d/rcS") && inittab.contains("respawn"),
        "{inittab}"
    );
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0:"));
    assert!(root.join("usr/share/udhcpc/default.script").is_file());
    assert_eq!(chroot(root, "echo $((6 * 7)); id -u"), "42\n0\n");
    // A second build is served from the cache: same image, same UUID.
    assert_eq!(build("busybox"), dir);
}

#[test]
#[ignore = "needs images/build debian (debootstrap, minutes when not cached); run with --ignored"]
fn debian_zone_image_builds_installs_and_runs() {
    let (_pool, img) = install(&build("debian"));
    assert_eq!((img.name.as_str(), img.version.as_str()), ("debian", "12"));
    assert!(img.path.join("sbin/init").is_file());
    assert!(chroot(&img.path, "cat /etc/debian_version").starts_with("12."));
    assert!(
        fs::read_dir(img.path.join("dev")).unwrap().next().is_none(),
        "/dev must be empty"
    );
}

#[test]
#[ignore = "needs images/build debian-hvm (debootstrap, minutes when not cached) and QEMU; run with --ignored"]
fn debian_hvm_image_boots_to_a_login_prompt() {
    let (pool, img) = install(&build("debian-hvm"));
    assert_eq!(img.kind, imgadm::ImageKind::Zvol);
    let kver = img.manifest.extra["tags"]["kernel_version"]
        .as_str()
        .unwrap()
        .to_string();
    let work = pool.path();
    // Pull kernel and initrd out of the disk's ext4 partition without mounting it, the
    // way a VMM reads /boot (pygrub-style).
    let part = work.join("part.img");
    let st = Command::new("dd")
        .arg(format!("if={}", img.path.display()))
        .arg(format!("of={}", part.display()))
        .args(["bs=1M", "skip=1", "conv=sparse", "status=none"])
        .status()
        .unwrap();
    assert!(st.success());
    for f in [format!("vmlinuz-{kver}"), format!("initrd.img-{kver}")] {
        let st = Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump /boot/{f} {}", work.join(&f).display()))
            .arg(&part)
            .stderr(Stdio::null())
            .status()
            .expect("debugfs (e2fsprogs) is needed");
        assert!(
            st.success() && work.join(&f).metadata().unwrap().len() > 0,
            "/boot/{f} missing"
        );
    }
    fs::remove_file(&part).unwrap();
    // Boot a clone made bigger, as init does for `disk root size=...`: the guest grows
    // its root to fill it.
    let disk = work.join("disk.raw");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&img.path)
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success());
    fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(work.join(format!("vmlinuz-{kver}")))
        .arg("-initrd")
        .arg(work.join(format!("initrd.img-{kver}")))
        .args([
            "-append",
            "console=ttyS0 ip=10.0.2.15::10.0.2.2:255.255.255.0:skerrytest::off",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            img.path.display()
        ))
        .args([
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 is needed");
    let mut out = qemu.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut console = String::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !console.contains("skerrytest login:") && Instant::now() < deadline {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_secs(1)) {
            console.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    assert!(
        console.contains("skerrytest login:"),
        "no login prompt within 240 s:\n{console}"
    );
    assert!(
        console.contains("skerry-net: eth0 10.0.2.15/24 via 10.0.2.2"),
        "nic not configured:\n{console}"
    );
}
