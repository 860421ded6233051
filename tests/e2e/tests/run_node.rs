//! `build-image/run-node` itself, with a stand-in for QEMU that prints a console and
//! exits 0 (no node is booted): a kernel panic on the console fails the run. The node
//! boots with `panic=5` and QEMU with `-no-reboot`, so a panicking init ends QEMU
//! with status 0, exactly like a clean power-off.

use e2e::repo_root;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// Runs run-node with a fake `qemu-system-x86_64` printing `console` and exiting 0;
/// returns its exit code and stderr.
fn run_node_with_console(console: &str) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("out");
    let bin = tmp.path().join("bin");
    for d in [&image, &bin] {
        std::fs::create_dir(d).unwrap();
    }
    for f in ["vmlinuz", "initramfs", "boot.ipxe"] {
        std::fs::write(image.join(f), "stand-in").unwrap();
    }
    let qemu = bin.join("qemu-system-x86_64");
    std::fs::write(
        &qemu,
        format!("#!/bin/sh\ncat <<'EOF'\n{console}EOF\nexit 0\n"),
    )
    .unwrap();
    std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(repo_root().join("build-image/run-node"))
        .args(["--images", "none", "--timeout", "120", "--image-dir"])
        .arg(&image)
        .env("PATH", path)
        .env("TMPDIR", tmp.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

const BOOT: &str = "[    0.000000] Linux version 6.1.0-stand-in\n\
                    [    1.000000] Run /init as init process\n\
                    skerry: init starting\n";

#[test]
fn a_kernel_panic_fails_the_run() {
    let console = format!(
        "{BOOT}[    2.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n\
         [    2.000001] ---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100 ]---\n"
    );
    let (code, stderr) = run_node_with_console(&console);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "run-node: the node's kernel panicked: Kernel panic - not syncing: Attempted to kill init!"
        ),
        "{stderr}"
    );
}

#[test]
fn a_clean_power_off_is_success() {
    let console = format!("{BOOT}skerry: pool unmounted\nskerry: rebooting\n");
    let (code, stderr) = run_node_with_console(&console);
    assert_eq!(code, 0, "{stderr}");
}
