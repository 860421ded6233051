//! Real Linux guests under nested KVM: a QEMU TCG "host" VM (Debian's cloud kernel,
//! kvm-amd on QEMU's emulated SVM) runs our `vmm` binary against Debian's stock kernel
//! with (a) an initramfs that prints a marker and powers off, (b) a virtio-blk ext4
//! disk the guest reads and writes, plus a read-only one it cannot write, (c) a
//! virtio-net interface pinging the host side of a tap, (d) SIGTERM to the VMM
//! pressing the ACPI power button, which the guest answers by powering off, (e)
//! `vmm monitor` on a pool with a GPT boot disk (kernel + initrd found in its /boot),
//! jailed, in a cgroup v2 like on a node.
//!
//! One host boot runs every scenario; the tests share it and each checks its part.
//! QEMU or the kernel missing is a failure with a clear message, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SCENARIOS: &str = "marker,blk,net,stop,instance";
const HOST_TIMEOUT: Duration = Duration::from_secs(420);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Boots the TCG host once and returns its serial output (or why it could not).
fn host_output() -> &'static Result<String, String> {
    static OUTPUT: OnceLock<Result<String, String>> = OnceLock::new();
    OUTPUT.get_or_init(|| testkit::tcg::retry_on_host_flaw("the nested TCG host", boot_host))
}

fn boot_host() -> Result<String, String> {
    let qemu = "qemu-system-x86_64";
    if Command::new(qemu).arg("--version").output().is_err() {
        return Err(format!(
            "{qemu} not found: install qemu-system-x86 (tests/deps/vmm.txt)"
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("vmm-nested-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .map_err(|e| format!("temp dir: {e}"))?;
    let config = dir.path().join("instance.json");
    std::fs::write(&config, instance_config()).map_err(|e| format!("{}: {e}", config.display()))?;
    let build = repo_root().join("vmm/nested/build");
    let built = Command::new(&build)
        .env("NESTED_INSTANCE_CONFIG", &config)
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_vmm"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", build.display()))?;
    if !built.status.success() {
        return Err(format!("{} failed ({})", build.display(), built.status));
    }
    let log_path = dir.path().join("serial.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut child = Command::new(qemu)
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2G", "-smp", "2"])
        .args([
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(dir.path().join("vmlinuz"))
        .arg("-initrd")
        .arg(dir.path().join("host.cpio.gz"))
        .arg("-append")
        // loglevel=5, not quiet: an oops's `CPU: … Comm: …` line (KERN_DEFAULT) must
        // reach the serial for testkit::tcg to tell the known flaw from other panics.
        .arg(format!(
            "console=ttyS0 loglevel=5 panic=-1 skerry.scenarios={SCENARIOS}"
        ))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {qemu}: {e}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if started.elapsed() > HOST_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text =
        String::from_utf8_lossy(&std::fs::read(&log_path).map_err(|e| e.to_string())?).into_owned();
    eprintln!(
        "---- nested host serial ({:.0?}) ----\n{text}\n---- end ----",
        started.elapsed()
    );
    match status {
        None => Err(format!(
            "the TCG host did not finish within {HOST_TIMEOUT:?}:\n{text}"
        )),
        Some(_) if !text.contains("SKERRY-HOST-DONE") => Err(format!(
            "the TCG host stopped before finishing its scenarios:\n{text}"
        )),
        Some(_) => Ok(text),
    }
}

const INSTANCE_UUID: &str = "5e1f0b0e-0000-4000-8000-00000000c0de";

/// config.json for scenario (e): pool /pool, run dir /run/skerry inside the host.
fn instance_config() -> String {
    let spec = spec::manifest::parse_str(
        "nested.kdl",
        "hvm nested {\n image \"debian-hvm@12\"\n memory \"256M\"\n vcpus 1\n \
         disk root boot=#true\n cmdline \"quiet panic=-1 skerry.test=marker\"\n}\n",
    )
    .expect("instance manifest")
    .remove(0);
    let cfg = monitor::InstanceConfig {
        uuid: INSTANCE_UUID.into(),
        pool: "/pool".into(),
        run_dir: "/run/skerry".into(),
        spec,
        image_path: "/instance/root.raw".into(),
        id_range_start: 0,
        bridges: Default::default(),
        image_defaults: None,
    };
    serde_json::to_string(&cfg).expect("config json")
}

/// The serial output between a scenario's BEGIN and END lines, and its exit code.
fn scenario(name: &str) -> (String, i32) {
    let text = match host_output() {
        Ok(t) => t,
        Err(e) => panic!("nested environment: {e}"),
    };
    let begin = format!("SKERRY-SCENARIO-BEGIN {name}");
    let end = format!("SKERRY-SCENARIO-END {name} rc=");
    let start = text
        .find(&begin)
        .unwrap_or_else(|| panic!("scenario {name} never started:\n{text}"));
    let rest = &text[start..];
    let stop = rest
        .find(&end)
        .unwrap_or_else(|| panic!("scenario {name} never ended:\n{rest}"));
    let rc: i32 = rest[stop + end.len()..]
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1);
    (rest[..stop].to_owned(), rc)
}

fn assert_line(out: &str, needle: &str, name: &str) {
    assert!(
        out.contains(needle),
        "scenario {name}: expected {needle:?} in the output:\n{out}"
    );
}

#[test]
fn nested_a_initramfs_marker_and_power_off() {
    let (out, rc) = scenario("marker");
    assert_line(&out, "SKERRY-GUEST-MARKER", "marker");
    assert_line(&out, "vmm: boot marker 1 at", "marker");
    assert_line(&out, "vmm: guest PowerOff", "marker");
    assert_eq!(rc, 0, "vmm must exit 0 on guest power-off:\n{out}");
}

#[test]
fn nested_b_virtio_blk_read_write_and_read_only_on_two_vcpus() {
    let (out, rc) = scenario("blk");
    // This guest has two vCPUs: the second came up through the MADT and INIT/SIPI.
    assert_line(&out, "SKERRY-GUEST-UP blk cpus=2", "blk");
    assert_line(&out, "SKERRY-BLK-READ hello-from-the-host", "blk");
    assert_line(&out, "SKERRY-BLK-REREAD written-by-guest", "blk");
    assert_line(&out, "SKERRY-HOST-DISK written-by-guest", "blk");
    assert_line(&out, "SKERRY-HOST-RODISK unchanged", "blk");
    assert!(
        !out.contains("SKERRY-GUEST-FAIL"),
        "guest reported a failure:\n{out}"
    );
    assert_eq!(rc, 0, "vmm exit code:\n{out}");
}

#[test]
fn nested_c_virtio_net_pings_the_tap() {
    let (out, rc) = scenario("net");
    assert_line(&out, "SKERRY-NET-OK", "net");
    assert_eq!(rc, 0, "vmm exit code:\n{out}");
}

#[test]
fn nested_d_sigterm_presses_the_power_button() {
    let (out, rc) = scenario("stop");
    assert_line(&out, "SKERRY-GUEST-IDLE /dev/input/event", "stop");
    assert_line(&out, "pressed the power button", "stop");
    assert_line(&out, "SKERRY-POWER-BUTTON", "stop");
    assert_line(&out, "vmm: guest PowerOff", "stop");
    assert_eq!(rc, 0, "vmm exit code:\n{out}");
}

#[test]
fn nested_e_monitor_mode_boots_from_the_disk_and_stops() {
    let (out, rc) = scenario("instance");
    assert_line(&out, "SKERRY-CONSOLE-LOG SKERRY-GUEST-MARKER", "instance");
    // SMBIOS: the platform SmartOS guests (and cloud-init) recognise, and the
    // instance UUID as the system UUID.
    assert_line(
        &out,
        &format!("SKERRY-CONSOLE-LOG SKERRY-DMI SmartDC HVM|{INSTANCE_UUID}"),
        "instance",
    );
    assert_line(&out, "\"state\":\"stopped\"", "instance");
    assert!(
        !out.contains("SKERRY-HOST-FAIL"),
        "host reported a failure:\n{out}"
    );
    assert_eq!(rc, 0, "monitor exit code:\n{out}");
}
