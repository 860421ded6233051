//! `vmm monitor` on this machine's /dev/kvm: a tiny ELF "kernel" on an ext4 boot
//! disk (found pygrub-style), the monitor socket (status, console fd, stop), console
//! log, monitor.json, and restart of a guest that resets.

use monitor::{self as contract, Client, InstanceConfig, MonitorRequest, MonitorResponse, State};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod common;
use common::{print, tiny_elf, HALT_FOREVER, POWER_OFF};

const RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xfa, 0xf4];

struct Pool {
    _dir: tempfile::TempDir,
    cfg: InstanceConfig,
    config_path: PathBuf,
}

fn pool_with_guest(code: &[u8]) -> Pool {
    pool_with_properties(code, "")
}

/// [`pool_with_guest`] whose manifest also says `extra` (properties, one per line).
fn pool_with_properties(code: &[u8], extra: &str) -> Pool {
    assert!(Path::new("/dev/kvm").exists(), "/dev/kvm is missing");
    let dir = tempfile::tempdir().unwrap();
    // Unique per test and run: the cgroup (skerry/vmm-<uuid>) is host-wide.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Its first 8 hex digits name the taps: apart from another test's.
    let uuid = format!(
        "{:05x}{:03x}-1234-4abc-8def-{:012x}",
        std::process::id() & 0xfffff,
        n & 0xfff,
        n
    );
    let spec = spec::manifest::parse_str(
        "test.kdl",
        &format!("hvm tiny {{\n image \"tiny@1\"\n memory \"64M\"\n disk root boot=#true\n cmdline \"quiet\"\n{extra}}}\n"),
    )
    .expect("manifest")
    .remove(0);
    let cfg = InstanceConfig {
        uuid: uuid.clone(),
        pool: dir.path().join("pool"),
        run_dir: dir.path().join("run"),
        spec,
        image_path: dir.path().join("unused"),
        id_range_start: 0,
        bridges: Default::default(),
        image_defaults: None,
    };
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(root.join("boot/vmlinuz-1.0"), tiny_elf(code)).unwrap();
    let disk = contract::disk_path(&cfg.pool, &uuid, "root");
    std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .stdout(std::process::Stdio::null())
        .arg(&root)
        .arg(&disk)
        .arg("8M")
        .status()
        .expect("mkfs.ext4 (e2fsprogs)")
        .success();
    assert!(ok);
    let config_path = contract::config_path(&cfg.pool, &uuid);
    std::fs::write(&config_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    Pool {
        _dir: dir,
        cfg,
        config_path,
    }
}

/// The monitor process; dropping it (also when a test fails) stops its guest and
/// reaps it, so no VMM outlives the test.
struct Monitor {
    child: Child,
    socket: PathBuf,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Client::new(&self.socket).stop(true, Duration::ZERO);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::ops::Deref for Monitor {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Monitor {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

fn start_monitor(pool: &Pool) -> Monitor {
    let child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["monitor", "--config"])
        .arg(&pool.config_path)
        .spawn()
        .expect("spawning vmm monitor");
    Monitor {
        child,
        socket: contract::socket_path(&pool.cfg.run_dir, &pool.cfg.uuid),
    }
}

fn request(pool: &Pool, req: &MonitorRequest) -> (MonitorResponse, Option<OwnedFd>) {
    Client::for_instance(&pool.cfg.run_dir, &pool.cfg.uuid)
        .request(req)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the monitor behind `client` reports its guest running.
fn wait_running(client: &Client, timeout: Duration) {
    wait_for("the guest runs", timeout, || {
        client
            .request(&MonitorRequest::Status)
            .is_ok_and(|(r, _)| r.status.is_some_and(|s| s.state == State::Running))
    });
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            panic!("monitor did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn console_log(pool: &Pool) -> String {
    std::fs::read_to_string(contract::console_log_path(&pool.cfg.pool, &pool.cfg.uuid))
        .unwrap_or_default()
}

#[test]
fn status_console_and_forced_stop() {
    let pool = pool_with_guest(&[print(b"hello console\n"), HALT_FOREVER.to_vec()].concat());
    let mut monitor = start_monitor(&pool);
    let sock = contract::socket_path(&pool.cfg.run_dir, &pool.cfg.uuid);
    wait_for("the socket", Duration::from_secs(10), || sock.exists());
    wait_for("console output", Duration::from_secs(10), || {
        console_log(&pool).contains("hello console")
    });

    let (resp, _) = request(&pool, &MonitorRequest::Status);
    let status = resp.status.expect("status");
    assert_eq!(status.state, State::Running);
    let guest_pid = status.instance_pid.expect("instance pid");
    assert!(Path::new(&format!("/proc/{guest_pid}")).exists());
    let on_disk: monitor::MonitorStatus = serde_json::from_slice(
        &std::fs::read(contract::status_path(&pool.cfg.pool, &pool.cfg.uuid)).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk.state, State::Running);
    let pidfile = contract::pidfile_path(&pool.cfg.run_dir, &pool.cfg.uuid);
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        monitor.id().to_string()
    );

    // The guest's vmm is jailed: its inner process (PID 1 of a new PID namespace) runs
    // unprivileged, in its own mount namespace, under seccomp, in the memory cgroup.
    let inner: u32 = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // Fields after the parenthesised command: state, ppid, ...
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(guest_pid)
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "the jailed vmm runs as a child of the instance pid {guest_pid}; monitor.log:\n{}",
                std::fs::read_to_string(pool.cfg.pool.join(&pool.cfg.uuid).join("monitor.log"))
                    .unwrap_or_default()
            )
        });
    // The guest crossed to its vmm as a JSON file, not as arguments.
    let argv = std::fs::read_to_string(format!("/proc/{guest_pid}/cmdline")).unwrap();
    let argv: Vec<&str> = argv.split('\0').collect();
    assert!(argv.contains(&"--config-file"), "{argv:?}");
    assert!(
        !argv.contains(&"--kernel") && !argv.contains(&"--memory"),
        "{argv:?}"
    );
    let st = std::fs::read_to_string(format!("/proc/{inner}/status")).unwrap();
    let field = |name: &str| {
        st.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_owned())
            .unwrap_or_default()
    };
    // Its own ids, derived from the instance (not a uid shared by every instance).
    let (uid, gid) = vmm::jail::instance_ids(&pool.cfg.uuid, pool.cfg.id_range_start);
    assert_ne!(uid, 65534);
    assert_eq!(field("Uid:"), format!("{uid}\t{uid}\t{uid}\t{uid}"), "{st}");
    assert_eq!(field("Gid:"), format!("{gid}\t{gid}\t{gid}\t{gid}"), "{st}");
    assert_eq!(field("Seccomp:"), "2", "seccomp filter mode");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    let ns = |pid: &str, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    assert_ne!(ns(&inner.to_string(), "mnt"), ns("self", "mnt"));
    assert_ne!(ns(&inner.to_string(), "pid"), ns("self", "pid"));
    assert_ne!(ns(&inner.to_string(), "net"), ns("self", "net"));
    assert_ne!(ns(&inner.to_string(), "user"), ns("self", "user"));
    let cg = std::fs::read_to_string(format!("/proc/{inner}/cgroup")).unwrap();
    assert!(
        cg.contains(&format!("skerry/vmm-{}", pool.cfg.uuid)),
        "{cg}"
    );
    // Its cgroup caps the tasks (v2: the unified line; v1: the pids hierarchy).
    let pids_dir = cg
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (ctrl, path) = rest.split_once(':')?;
            match ctrl {
                "pids" => Some(format!("/sys/fs/cgroup/pids{path}")),
                "" if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() => {
                    Some(format!("/sys/fs/cgroup{path}"))
                }
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no pids cgroup in {cg}"));
    assert_eq!(
        std::fs::read_to_string(format!("{pids_dir}/pids.max"))
            .unwrap()
            .trim(),
        vmm::jail::pids_max(1, 0).to_string()
    );
    // The vCPU thread, which ran the guest's first lines, stacks its ioctl filter
    // (KVM_RUN and what it needs) on the process's: one filter more than the others.
    let filters = |task: &str| {
        let st = std::fs::read_to_string(format!("/proc/{inner}/task/{task}/status")).unwrap();
        st.lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no Seccomp_filters in {st}"))
    };
    let vcpu = std::fs::read_dir(format!("/proc/{inner}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|t| {
            std::fs::read_to_string(format!("/proc/{inner}/task/{t}/comm"))
                .is_ok_and(|c| c.trim() == "vcpu0")
        })
        .expect("a vcpu0 thread in the jailed vmm");
    assert_eq!(
        filters(&vcpu),
        filters(&inner.to_string()) + 1,
        "the vCPU thread's seccomp filters"
    );

    let (resp, fd) = request(&pool, &MonitorRequest::Console);
    assert!(resp.ok);
    let fd = fd.expect("console fd attached");
    assert!(
        nix::unistd::isatty(&fd).unwrap_or(false),
        "console fd is a pty"
    );

    let (resp, _) = request(
        &pool,
        &MonitorRequest::Stop {
            force: true,
            timeout_secs: 0,
        },
    );
    assert!(resp.ok);
    assert_eq!(wait_exit(&mut monitor, Duration::from_secs(10)), 0);
    let last: monitor::MonitorStatus = serde_json::from_slice(
        &std::fs::read(contract::status_path(&pool.cfg.pool, &pool.cfg.uuid)).unwrap(),
    )
    .unwrap();
    assert_eq!(last.state, State::Stopped);
    assert!(
        !sock.exists() && !pidfile.exists(),
        "socket and pidfile removed"
    );
    // The monitor reaped its guest process before exiting.
    assert!(
        !Path::new(&format!("/proc/{guest_pid}")).exists(),
        "guest vmm {guest_pid} still there"
    );
}

#[test]
fn a_reset_guest_is_restarted_until_stopped() {
    let pool = pool_with_guest(&[print(b"boot\n"), RESET.to_vec()].concat());
    let mut monitor = start_monitor(&pool);
    wait_for("three boots", Duration::from_secs(20), || {
        console_log(&pool).matches("boot").count() >= 3
    });
    // It keeps resetting at once: restarts slow down instead of spinning.
    std::thread::sleep(Duration::from_secs(2));
    let boots = console_log(&pool).matches("boot").count();
    assert!(
        boots < 12,
        "{boots} boots in ~2 s: restarts are not backed off"
    );
    let (resp, _) = request(
        &pool,
        &MonitorRequest::Stop {
            force: false,
            timeout_secs: 5,
        },
    );
    assert!(resp.ok, "{resp:?}");
    assert_eq!(wait_exit(&mut monitor, Duration::from_secs(15)), 0);
    let last: monitor::MonitorStatus = serde_json::from_slice(
        &std::fs::read(contract::status_path(&pool.cfg.pool, &pool.cfg.uuid)).unwrap(),
    )
    .unwrap();
    assert_eq!(last.state, State::Stopped);
}

#[test]
fn a_disk_without_a_kernel_fails_with_the_reason() {
    let pool = pool_with_guest(&[]);
    // Replace the boot disk with a blank one.
    let disk = contract::disk_path(&pool.cfg.pool, &pool.cfg.uuid, "root");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut monitor = start_monitor(&pool);
    assert_eq!(wait_exit(&mut monitor, Duration::from_secs(10)), 1);
    let last: monitor::MonitorStatus = serde_json::from_slice(
        &std::fs::read(contract::status_path(&pool.cfg.pool, &pool.cfg.uuid)).unwrap(),
    )
    .unwrap();
    assert_eq!(last.state, State::Failed);
    assert!(last.reason.contains("no ext4"), "{}", last.reason);
}

#[test]
fn a_second_monitor_of_the_same_instance_is_refused() {
    let pool = pool_with_guest(&[print(b"first\n"), HALT_FOREVER.to_vec()].concat());
    let first = start_monitor(&pool);
    // Running, not only locked: the last check asks the first monitor again, and a
    // loaded host may take seconds from its pidfile to its guest.
    let client = Client::for_instance(&pool.cfg.run_dir, &pool.cfg.uuid);
    wait_running(&client, Duration::from_secs(30));
    let mut second = start_monitor(&pool);
    let code = wait_exit(&mut second, Duration::from_secs(10));
    assert_ne!(code, 0, "a second monitor of a live instance started");
    let log = std::fs::read_to_string(pool.cfg.pool.join(&pool.cfg.uuid).join("monitor.log"))
        .unwrap_or_default();
    assert!(
        log.contains(&format!("another monitor (pid {})", first.id())),
        "the refusal does not name the live monitor; monitor.log:\n{log}"
    );
    // The first one was not disturbed.
    let (resp, _) = request(&pool, &MonitorRequest::Status);
    assert_eq!(resp.status.expect("status").state, State::Running);
}

#[test]
fn the_child_boots_from_the_config_file_the_monitor_writes() {
    let pool = pool_with_guest(&[print(b"from the config file\n"), POWER_OFF.to_vec()].concat());
    let vm = vmm::monitor::child_config(&pool.cfg).expect("child config");
    assert_eq!(vm.memory, 64 << 20);
    assert!(vm.cmdline.ends_with(" quiet"), "{}", vm.cmdline);
    // The instance UUID becomes the guest's SMBIOS system UUID.
    assert_eq!(vm.uuid.map(|u| u.to_string()), Some(pool.cfg.uuid.clone()));
    assert_eq!(
        vm.disks[0].path,
        contract::disk_path(&pool.cfg.pool, &pool.cfg.uuid, "root")
    );
    let file = vmm::monitor::child_config_path(&pool.cfg);
    spec::atomic::write_json_atomic(&file, &vm).unwrap();
    assert_eq!(vmm::config::VmConfig::from_json_file(&file).unwrap(), vm);

    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .arg("--config-file")
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running vmm --config-file");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout, "from the config file\n", "stderr:\n{stderr}");
    assert!(stderr.contains("vmm: guest PowerOff"), "{stderr}");

    // The guest comes from the file alone: flags describing one are refused with it.
    let both = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .arg("--config-file")
        .arg(&file)
        .args(["--kernel", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2), "clap usage error");
}

/// `mov dx, 0x2f8` then `mov al, c; out dx, al` per byte: out of COM2.
fn send_to_com2(s: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x02];
    for c in s {
        code.extend_from_slice(&[0xb0, *c, 0xee]);
    }
    code
}

/// Copies what arrives on COM2 to COM1 until a `.` has been copied.
const COPY_COM2_TO_COM1_UNTIL_DOT: &[u8] = &[
    0x66, 0xba, 0xfd, 0x02, // L: mov dx, 0x2fd (line status)
    0xec, //                    in al, dx
    0xa8, 0x01, //              test al, 1 (data ready)
    0x74, 0xf7, //              jz L
    0x66, 0xba, 0xf8, 0x02, //  mov dx, 0x2f8
    0xec, //                    in al, dx
    0x66, 0xba, 0xf8, 0x03, //  mov dx, 0x3f8
    0xee, //                    out dx, al
    0x3c, b'.', //              cmp al, '.'
    0x75, 0xe9, //              jne L
];

#[test]
fn the_jailed_guest_reaches_its_metadata_on_com2() {
    // color=blue, as mdata-put sends it: base64 of "base64(key) base64(value)".
    let body = "0badf00d PUT WTI5c2IzST0gWW14MVpRPT0=";
    let put = format!(
        "V2 {} {} {body}\n",
        body.len(),
        mdata::crc32::crc32_hex(body.as_bytes())
    );
    let code = [
        send_to_com2(put.as_bytes()),
        send_to_com2(b"GET user-data\n"),
        COPY_COM2_TO_COM1_UNTIL_DOT.to_vec(),
        HALT_FOREVER.to_vec(),
    ]
    .concat();
    let pool = pool_with_properties(&code, " user-data \"served by the monitor\"\n");
    let _monitor = start_monitor(&pool);
    wait_for(
        "the metadata answers on the console",
        Duration::from_secs(15),
        || console_log(&pool).contains("served by the monitor\n."),
    );
    let log = console_log(&pool);
    assert!(log.contains("0badf00d SUCCESS"), "{log}");
    assert!(log.contains("SUCCESS\nserved by the monitor\n."), "{log}");
    // The guest's put persisted in the pool, outside the jail.
    let store: serde_json::Value = serde_json::from_slice(
        &std::fs::read(contract::metadata_path(&pool.cfg.pool, &pool.cfg.uuid)).unwrap(),
    )
    .unwrap();
    assert_eq!(store["guest"]["color"]["value"], "blue", "{store}");
}

#[test]
fn a_jailed_guest_powers_off_through_its_filtered_vcpu() {
    // The power-off write raises the SCI (KVM_IRQ_LINE) from the vCPU thread, under
    // the vCPU seccomp filter that allows only the ioctls that thread makes.
    let pool = pool_with_guest(&[print(b"jailed\n"), POWER_OFF.to_vec()].concat());
    let vm = vmm::monitor::child_config(&pool.cfg).expect("child config");
    let file = vmm::monitor::child_config_path(&pool.cfg);
    spec::atomic::write_json_atomic(&file, &vm).unwrap();
    let (uid, gid) = vmm::jail::instance_ids(&pool.cfg.uuid, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .arg("--config-file")
        .arg(&file)
        .args(["--jail", "--jail-uid", &uid.to_string()])
        .args(["--jail-gid", &gid.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running vmm --jail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "jailed\n");
    assert!(stderr.contains("vmm: guest PowerOff"), "{stderr}");
}

#[test]
fn a_reload_applies_edited_metadata_to_a_running_guest() {
    let pool = pool_with_properties(HALT_FOREVER, " user-data \"before\"\n");
    let _monitor = start_monitor(&pool);
    let client = Client::for_instance(&pool.cfg.run_dir, &pool.cfg.uuid);
    wait_running(&client, Duration::from_secs(15));
    let pid = request(&pool, &MonitorRequest::Status)
        .0
        .status
        .unwrap()
        .instance_pid;
    let mut edited = pool.cfg.clone();
    edited.spec.user_data = Some("after".into());
    std::fs::write(&pool.config_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let note = client.reload().unwrap_or_else(|e| panic!("{e}"));
    assert!(note.contains("customer metadata"), "{note}");
    let after = request(&pool, &MonitorRequest::Status).0.status.unwrap();
    assert_eq!(after.instance_pid, pid, "the guest kept running");
    // A config that is no longer this HVM's is refused, and nothing changes.
    edited.uuid = "someone-else".into();
    std::fs::write(&pool.config_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let e = client.reload().unwrap_err().to_string();
    assert!(e.contains("restart it instead"), "{e}");
}

/// The CFS quota (µs per 100 ms) of the running VMM's cgroup, v1 or v2.
fn vmm_cpu_quota(uuid: &str) -> String {
    let name = vmm::monitor::cgroup_name(uuid);
    let (file, v2) = match host::cgroup::Hierarchy::detect().unwrap() {
        host::cgroup::Hierarchy::V1 { controllers } => (
            controllers["cpu"]
                .join("skerry")
                .join(name)
                .join("cpu.cfs_quota_us"),
            false,
        ),
        host::cgroup::Hierarchy::V2 { root } => {
            (root.join("skerry").join(name).join("cpu.max"), true)
        }
    };
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let quota = text.split_whitespace().next().unwrap_or("").to_string();
    match (v2, quota.as_str()) {
        (true, "max") => "-1".into(),
        _ => quota,
    }
}

#[test]
fn a_reload_changes_the_cpu_cap_of_the_running_vmm() {
    let pool = pool_with_properties(HALT_FOREVER, " cpu-cap 50\n");
    let _monitor = start_monitor(&pool);
    let client = Client::for_instance(&pool.cfg.run_dir, &pool.cfg.uuid);
    wait_running(&client, Duration::from_secs(15));
    let pid = request(&pool, &MonitorRequest::Status)
        .0
        .status
        .unwrap()
        .instance_pid;
    assert_eq!(
        vmm_cpu_quota(&pool.cfg.uuid),
        "50000",
        "not capped at start"
    );
    let write_cap = |cap: u32| {
        let mut edited = pool.cfg.clone();
        if let spec::Kind::Hvm(h) = &mut edited.spec.kind {
            h.cpu_cap = cap;
        }
        std::fs::write(&pool.config_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    };
    write_cap(20);
    let note = client.reload().unwrap_or_else(|e| panic!("{e}"));
    assert!(note.contains("cpu-cap 20 applied"), "{note}");
    assert_eq!(vmm_cpu_quota(&pool.cfg.uuid), "20000");
    let after = request(&pool, &MonitorRequest::Status).0.status.unwrap();
    assert_eq!(after.instance_pid, pid, "the guest kept running");
    // Uncapped again: the kernel's "no quota".
    write_cap(0);
    client.reload().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vmm_cpu_quota(&pool.cfg.uuid), "-1");
}

/// A process flooding monitor.log through a descriptor of its own, as the jailed vmm
/// holds one: the monitor cuts it back to its bound. (A guest's console flood is bound
/// by `BoundedLog`, tested in `serial.rs`; through this nested KVM a guest writes only
/// about 20 KB/s to its serial port, too slow to fill a 1 MiB part in a test.)
#[test]
fn a_flooded_monitor_log_is_cut_back() {
    let pool = pool_with_guest(&[print(b"up\n"), HALT_FOREVER.to_vec()].concat());
    let mut monitor = start_monitor(&pool);
    wait_for("the guest to boot", Duration::from_secs(20), || {
        console_log(&pool).contains("up")
    });
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let log = contract::monitor_log_path(&pool.cfg.pool, &pool.cfg.uuid);
    let mut hostile = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let chunk = vec![b'y'; 64 << 10];
    for _ in 0..(64 * contract::MONITOR_LOG_MAX / chunk.len() as u64) {
        std::io::Write::write_all(&mut hostile, &chunk).unwrap();
    }
    wait_for(
        "monitor.log to be cut back",
        Duration::from_secs(20),
        || size(&log) <= contract::MONITOR_LOG_MAX,
    );
    let (resp, _) = request(
        &pool,
        &MonitorRequest::Stop {
            force: true,
            timeout_secs: 0,
        },
    );
    assert!(resp.ok, "{resp:?}");
    wait_exit(&mut monitor, Duration::from_secs(15));
    assert!(size(&log) <= contract::MONITOR_LOG_MAX, "{}", size(&log));
    let rotated = contract::rotated_monitor_log(&log);
    assert!(size(&rotated) <= contract::MONITOR_LOG_MAX);
}

/// Deletes its bridge when dropped (also when a test fails).
struct BridgeGone(String);

impl Drop for BridgeGone {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// `nft list table FAMILY skerry` (empty when there is no such table).
/// skerry's antispoof table (`bridge`) or, on this machine's kernel (no
/// nf_conntrack_bridge), its firewall table (`inet`).
fn nft_table(family: &str) -> String {
    let table = match family {
        "inet" => host::isolation::FW_TABLE,
        _ => host::isolation::TABLE,
    };
    let out = Command::new("nft")
        .args(["list", "table", family, table])
        .output()
        .expect("nft (nftables)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_guests_tap_is_filtered_while_it_runs_and_its_rules_go_with_it() {
    let tag = format!("v{:05x}", std::process::id() & 0xfffff);
    let pool = pool_with_properties(
        &[print(b"up\n"), HALT_FOREVER.to_vec()].concat(),
        &format!(
            " nic net0 tag=\"{tag}\" ip=\"10.239.0.5/24\"\n firewall {{\n  allow \"icmp\"\n }}\n"
        ),
    );
    let bridge = contract::default_bridge_name(&tag);
    let _bridge = BridgeGone(bridge.clone());
    let tap = contract::host_ifname(&pool.cfg.uuid, 0);
    let mac = spec::MacAddr::of_nic(None, &pool.cfg.uuid, 0).to_string();
    let mut monitor = start_monitor(&pool);
    wait_for("the guest", Duration::from_secs(10), || {
        console_log(&pool).contains("up")
    });
    // The tap exists, on its bridge, with the guest's antispoof rules and firewall.
    let master = std::fs::read_link(format!("/sys/class/net/{tap}/master")).unwrap();
    assert!(master.ends_with(&bridge), "{}", master.display());
    let antispoof = nft_table("bridge");
    for element in [
        format!("\"{tap}\" : jump class_15"),
        format!("\"{tap}\" . {mac}"),
        format!("\"{tap}\" . 10.239.0.5"),
    ] {
        assert!(antispoof.contains(&element), "{element} in\n{antispoof}");
    }
    let mark = format!("0x{:08x}", host::isolation::mark_of(&tap));
    let firewall = nft_table("inet");
    assert!(
        firewall.contains(&format!("{mark} . icmp . 0.0.0.0/0")),
        "{mark} in\n{firewall}"
    );

    // A changed firewall goes onto the running guest's tap at a Reload, and a removed
    // one comes off it, antispoof staying.
    let client = Client::for_instance(&pool.cfg.run_dir, &pool.cfg.uuid);
    let pid = request(&pool, &MonitorRequest::Status)
        .0
        .status
        .unwrap()
        .instance_pid;
    let reload = |firewall: Option<spec::Firewall>| {
        let mut edited = pool.cfg.clone();
        edited.spec.firewall = firewall;
        std::fs::write(&pool.config_path, serde_json::to_vec(&edited).unwrap()).unwrap();
        client.reload().unwrap_or_else(|e| panic!("{e}"))
    };
    let ssh = spec::Firewall {
        rules: vec![spec::FirewallRule {
            proto: spec::FirewallProto::Tcp,
            ports: Some((22, 22)),
            from: None,
        }],
    };
    let note = reload(Some(ssh));
    assert!(note.contains("firewall applied"), "{note}");
    let firewall = nft_table("inet");
    assert!(
        firewall.contains(&format!("{mark} . tcp . 0.0.0.0/0 . 22"))
            && !firewall.contains(&format!("{mark} . icmp")),
        "{mark} in\n{firewall}"
    );
    let note = reload(None);
    assert!(note.contains("firewall removed"), "{note}");
    assert!(!nft_table("inet").contains(&mark), "{}", nft_table("inet"));
    assert!(nft_table("bridge").contains(&format!("\"{tap}\" . 10.239.0.5")));
    let after = request(&pool, &MonitorRequest::Status).0.status.unwrap();
    assert_eq!(after.instance_pid, pid, "the guest kept running");

    let _ = Client::new(contract::socket_path(&pool.cfg.run_dir, &pool.cfg.uuid))
        .stop(true, Duration::ZERO);
    assert_eq!(wait_exit(&mut monitor, Duration::from_secs(10)), 0);
    assert!(
        !nft_table("bridge").contains(&tap),
        "{}",
        nft_table("bridge")
    );
    assert!(!nft_table("inet").contains(&mark), "{}", nft_table("inet"));
    assert!(!Path::new(&format!("/sys/class/net/{tap}")).exists());
}

/// A DHCP message to `mac` from a server at 10.240.0.1, as it leaves the bridge:
/// `kind` is option 53 (5 ACK, 6 NAK), leasing `yiaddr` for an hour.
fn dhcp_reply(mac: [u8; 6], kind: u8, yiaddr: [u8; 4]) -> Vec<u8> {
    let mut bootp = vec![0u8; 236];
    bootp[..4].copy_from_slice(&[2, 1, 6, 0]);
    bootp[16..20].copy_from_slice(&yiaddr);
    bootp[28..34].copy_from_slice(&mac);
    bootp.extend([99, 130, 83, 99, 53, 1, kind, 51, 4, 0, 0, 0x0e, 0x10, 255]);
    let udp_len = (8 + bootp.len()) as u16;
    let mut udp = [
        67u16.to_be_bytes(),
        68u16.to_be_bytes(),
        udp_len.to_be_bytes(),
        [0, 0],
    ]
    .concat();
    udp.extend(bootp);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 240, 0, 1];
    ip.extend(yiaddr);
    ip[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = mac.to_vec();
    frame.extend([0x02, 0, 0, 0, 0xd4, 0xc9, 0x08, 0x00]);
    frame.extend(ip);
    frame.extend(udp);
    frame
}

/// Sends `frame` out of link `dev` (a bridge: it forwards it to the port of its
/// destination MAC, or floods it).
fn send_out_of(dev: &str, frame: &[u8]) {
    let fd = host::link::frame_writer(dev).unwrap();
    let sent = nix::sys::socket::send(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        frame,
        nix::sys::socket::MsgFlags::empty(),
    );
    assert_eq!(sent, Ok(frame.len()));
}

/// An `ip="dhcp"` nic is held to its lease: the monitor snoops the DHCPACK the guest's
/// tap carries to it (from the moment the tap exists) and puts the leased address into
/// the tap's rules; a DHCPNAK takes it out again.
#[test]
fn a_guests_dhcp_lease_goes_into_its_taps_rules() {
    let tag = format!("w{:05x}", std::process::id() & 0xfffff);
    let pool = pool_with_properties(
        &[print(b"up\n"), HALT_FOREVER.to_vec()].concat(),
        &format!(" nic net0 tag=\"{tag}\" ip=\"dhcp\"\n"),
    );
    let bridge = contract::default_bridge_name(&tag);
    let _bridge = BridgeGone(bridge.clone());
    let tap = contract::host_ifname(&pool.cfg.uuid, 0);
    let mac = spec::MacAddr::of_nic(None, &pool.cfg.uuid, 0).octets();
    let _monitor = start_monitor(&pool);
    wait_for("the guest", Duration::from_secs(10), || {
        console_log(&pool).contains("up")
    });
    let leased = format!("\"{tap}\" . 10.240.0.50");
    assert!(
        !nft_table("bridge").contains(&leased),
        "held before its lease"
    );
    send_out_of(&bridge, &dhcp_reply(mac, 5, [10, 240, 0, 50]));
    wait_for(
        "the lease in the tap's rules",
        Duration::from_secs(10),
        || nft_table("bridge").contains(&leased),
    );
    send_out_of(&bridge, &dhcp_reply(mac, 6, [0, 0, 0, 0]));
    wait_for("the NAK to take it out", Duration::from_secs(10), || {
        !nft_table("bridge").contains(&leased)
    });
}
