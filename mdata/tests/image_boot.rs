//! The HVM images boot under QEMU with their COM2 connected to our metadata server (a
//! unix socket QEMU's second serial port connects to, as the VMM's COM2 will carry
//! it) and configure themselves from it: debian-hvm through `skerry-net` and
//! `mdata-firstboot`, debian-cloudinit-hvm through Debian's cloud-init, which needs
//! QEMU's SMBIOS system product `SmartDC HVM` to try its SmartOS datasource.
//!
//! The cloud-init boot runs by default: it is what proves that cloud-init itself, at a
//! real boot, provisions the guest from our server (static network from `sdc:nics`
//! applied by `networking`, hostname, root's SSH key, the user-script run by
//! cloud-final, all visible on the console). It builds `images/build
//! debian-cloudinit-hvm` when not cached (1.5-3.5 minutes, then cached by content)
//! and boots under TCG (70-100 s). The debian-hvm boot stays `#[ignore]`d (run with
//! `cargo test -p mdata --test image_boot -- --ignored`): the node end-to-end test
//! boots that image under the VMM in the default run.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `images/build NAME`: the output directory.
fn build(name: &str) -> PathBuf {
    let out = Command::new(repo().join("images/build"))
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .expect("running images/build");
    assert!(out.status.success(), "images/build {name} failed");
    let dir = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(
        dir.lines()
            .last()
            .expect("images/build printed nothing")
            .trim(),
    )
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Boots image NAME with a metadata server on COM2 until the console shows every
/// string of `wanted` (or `limit` passes); returns the console.
fn boot(name: &str, wanted: &[&str], limit: Duration) -> String {
    let dir = build(name);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let kver = manifest["tags"]["kernel_version"].as_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let disk = w.join("disk.raw");
    run(Command::new("zstd")
        .args(["-dq", "-o"])
        .arg(&disk)
        .arg(dir.join(format!("{name}-12.raw.zst"))));
    run(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", w.join("part.img").display()))
        .args(["bs=1M", "skip=1", "status=none"]));
    for f in [format!("vmlinuz-{kver}"), format!("initrd.img-{kver}")] {
        run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump /boot/{f} {}", w.join(&f).display()))
            .arg(w.join("part.img")));
    }
    let store = store_at(&w.join("metadata.json"));
    store
        .lock()
        .unwrap()
        .put(
            "user-script",
            "#!/bin/sh\necho \"USER-SCRIPT-RAN $(ip -o -4 addr show | grep -o '10.88.0.10/24')\"\n\
             echo \"ROOT-KEY $(cat /root/.ssh/authorized_keys)\"\n",
        )
        .unwrap();
    let sock = w.join("com2.sock");
    serve_socket_at(&sock, store);
    // TCG, as imgadm's boot test: QEMU's KVM dies on an MSR in this nested host.
    let (accel, cpu) = ("tcg", "max");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel", accel, "-cpu", cpu, "-m", "512", "-display", "none",
        ])
        .args(["-no-reboot", "-serial", "stdio"])
        .arg("-chardev")
        .arg(format!("socket,id=md,path={}", sock.display()))
        .args(["-serial", "chardev:md"])
        .args([
            "-smbios",
            &format!("type=1,product=SmartDC HVM,uuid={UUID}"),
        ])
        .arg("-kernel")
        .arg(w.join(format!("vmlinuz-{kver}")))
        .arg("-initrd")
        .arg(w.join(format!("initrd.img-{kver}")))
        .args(["-append", "console=ttyS0 root=LABEL=skerry-root"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .args([
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "virtio-net-pci,netdev=n0,mac=02:08:20:6a:1c:2f",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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
    let start = Instant::now();
    let mut console = Vec::new();
    while start.elapsed() < limit {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(chunk) => console.extend_from_slice(&chunk),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break, // QEMU exited
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        let text = String::from_utf8_lossy(&console);
        if wanted.iter().all(|w| text.contains(w)) {
            break;
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    String::from_utf8_lossy(&console).into_owned()
}

#[test]
#[ignore = "needs images/build debian-hvm and QEMU; run with --ignored"]
fn debian_hvm_boots_with_its_metadata_network_hostname_and_user_script() {
    let wanted = [
        "mdata-boot: configuring this instance from its metadata",
        "USER-SCRIPT-RAN 10.88.0.10/24",
        "web01 login:",
    ];
    let console = boot("debian-hvm", &wanted, Duration::from_secs(240));
    for w in wanted {
        assert!(console.contains(w), "no {w:?} on the console:\n{console}");
    }
}

/// Default run: cloud-init's SmartOS datasource (QEMU's SMBIOS says `SmartDC HVM`)
/// reads our server on COM2; the user-script it runs sees the static address and
/// root's key, and getty shows the hostname.
#[test]
fn debian_cloudinit_image_boots_and_cloud_init_provisions_it() {
    let wanted = [
        "USER-SCRIPT-RAN 10.88.0.10/24",
        "ROOT-KEY ssh-ed25519 AAAAC3Nz test@skerry",
        "web01 login:",
    ];
    let console = boot("debian-cloudinit-hvm", &wanted, Duration::from_secs(400));
    for w in wanted {
        assert!(console.contains(w), "no {w:?} on the console:\n{console}");
    }
}
