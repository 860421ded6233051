//! The jailed VMM's cgroup opens only the devices a VMM needs (`vmm::jail::VMM_DEVICES`):
//! a guest still boots and runs under it on this machine's /dev/kvm, and a host root
//! process put into that cgroup may open /dev/kvm and /dev/null but not /dev/kmsg or
//! /dev/mem. /dev/kvm missing is a failure, not a skip.

mod common;
use common::{print, tiny_elf, HALT_FOREVER};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The cgroup directory of `pid` that controls devices: the v1 `devices` hierarchy,
/// or the cgroup2 one on a pure v2 host.
fn device_cgroup(pid: u32) -> PathBuf {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let line = |ctrl: &str| {
        own.lines().find_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (ctrls, path) = rest.split_once(':')?;
            (ctrls.split(',').any(|c| c == ctrl)).then(|| path.trim_start_matches('/').to_owned())
        })
    };
    match line("devices") {
        Some(path) => Path::new("/sys/fs/cgroup/devices").join(path),
        None => Path::new("/sys/fs/cgroup").join(line("").expect("a cgroup2 line")),
    }
}

/// Kills the VMM (its jailed child follows by its parent-death signal) and removes
/// its cgroup, also when the test fails.
struct Vmm(Child, String);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        vmm::jail::remove_cgroup(&self.1);
    }
}

#[test]
fn the_jailed_vmm_opens_kvm_but_no_other_host_device() {
    assert!(Path::new("/dev/kvm").exists(), "/dev/kvm is missing");
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    std::fs::write(
        &kernel,
        tiny_elf(&[print(b"up\n"), HALT_FOREVER.to_vec()].concat()),
    )
    .unwrap();
    // Unique per run: the cgroup skerry/<name> is host-wide.
    let name = format!("vmm-devtest-{}", std::process::id());
    let (uid, gid) = vmm::jail::instance_ids(&name, 0);
    let child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "64M", "--cgroup", &name, "--jail"])
        .args([
            "--jail-uid",
            &uid.to_string(),
            "--jail-gid",
            &gid.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running vmm --jail");
    let mut vmm = Vmm(child, name);
    // The guest runs under the policy: it reached the serial port through /dev/kvm.
    let mut line = String::new();
    BufReader::new(vmm.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "up\n", "the jailed guest did not come up");
    let cgroup = device_cgroup(vmm.0.id());
    // A host root shell put into the VMM's cgroup: capabilities do not matter to the
    // device cgroup, only the device.
    let mut probe = Command::new("sh")
        .args([
            "-c",
            "read go; (: < /dev/kmsg) && echo KMSG; (: < /dev/mem) && echo MEM; \
             (: < /dev/kvm) && echo KVM; (: > /dev/null) && echo NULL",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let joined = std::fs::write(cgroup.join("cgroup.procs"), probe.id().to_string());
    probe.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = probe.wait_with_output().unwrap();
    joined.unwrap_or_else(|e| panic!("joining {}: {e}", cgroup.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains("KMSG") && !said.contains("MEM"), "{said}");
    assert!(said.contains("Operation not permitted"), "{said}");
    assert!(said.contains("KVM") && said.contains("NULL"), "{said}");
    drop(vmm);
}

#[test]
fn a_disk_that_is_a_block_device_is_allowed_and_nothing_else_is_added() {
    let plain = tempfile::NamedTempFile::new().unwrap();
    let rules = vmm::jail::device_rules([plain.path(), Path::new("/nonexistent/disk")]);
    assert_eq!(rules, vmm::jail::VMM_DEVICES.to_vec());
    // /dev/loop0's node exists on any host with the loop driver (no loop set up needed).
    let loop0 = Path::new("/dev/loop0");
    assert!(loop0.exists(), "/dev/loop0 is missing (modprobe loop)");
    let rules = vmm::jail::device_rules([loop0]);
    assert_eq!(rules.len(), vmm::jail::VMM_DEVICES.len() + 1);
    assert_eq!(
        rules.last().unwrap().v1_line(),
        "b 7:0 rw",
        "loop0 is block 7:0"
    );
}
