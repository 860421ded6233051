//! `zlogin` into a zone run by a real `zone monitor`: status, namespaces, cgroup, ids,
//! confinement, pty, and the errors for what cannot be entered.

mod common;
use common::pool::*;
use common::*;
use monitor::{self as contract, MonitorRequest};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A zone whose init just sleeps, and a `zlogin` link to the zone binary (zlogin is
/// the zone binary run under that name, as on a node).
struct Zone {
    pool: Pool,
    child: std::process::Child,
    bin: tempfile::TempDir,
}

impl Zone {
    fn start() -> Zone {
        require_root();
        let pool = Pool::new(&["/bin/sh", "-c", "exec sleep 1000"]);
        let child = pool.spawn();
        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(ZONE, bin.path().join("zlogin")).unwrap();
        pool.wait_running();
        Zone { pool, child, bin }
    }

    fn name(&self) -> &str {
        &self.pool.config.spec.name
    }

    fn init_pid(&self) -> u32 {
        self.pool.status().instance_pid.unwrap()
    }

    fn zlogin(&self) -> Command {
        let mut c = Command::new(self.bin.path().join("zlogin"));
        c.arg("--pool").arg(self.pool.dir());
        c
    }

    /// `zlogin [flags] NAME args...` with stdin from /dev/null.
    fn run(&self, flags: &[&str], args: &[&str]) -> Output {
        self.zlogin()
            .args(flags)
            .arg(self.name())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `zlogin NAME sh -c script`, asserting success; stdout.
    fn sh(&self, script: &str) -> String {
        let out = self.run(&[], &["sh", "-c", script]);
        assert!(
            out.status.success(),
            "zlogin {script:?}: {} stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stop(&mut self) {
        let _ = monitor::Client::new(self.pool.socket()).request(&MonitorRequest::Stop {
            force: true,
            timeout_secs: 0,
        });
        wait_exit(&mut self.child);
    }
}

impl Drop for Zone {
    fn drop(&mut self) {
        self.stop();
    }
}

fn status_line(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_string()
}

#[test]
fn zlogin_runs_a_command_in_the_zone_and_returns_its_status() {
    let zone = Zone::start();
    let out = zone.run(
        &[],
        &["sh", "-c", "echo out-$((6*7)); echo err >&2; exit 7"],
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out-42\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // Found by UUID as well as by name; a command on the zone's PATH.
    let out = zone
        .zlogin()
        .args([&zone.pool.config.uuid, "hostname"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), zone.name());
    // A command the zone does not have: 127, as a shell says.
    let out = zone.run(&[], &["no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-command"));
}

#[test]
fn zlogin_enters_every_namespace_the_cgroup_and_the_ids_of_the_zone() {
    let zone = Zone::start();
    let init = zone.init_pid();
    // The same namespaces as the zone's init, each of them.
    let nss = ["user", "mnt", "pid", "net", "uts", "ipc", "cgroup"];
    let script: String = nss
        .iter()
        .map(|ns| format!("readlink /proc/self/ns/{ns};"))
        .collect();
    let inside = zone.sh(&script);
    let host: Vec<String> = nss
        .iter()
        .map(|ns| {
            std::fs::read_link(format!("/proc/{init}/ns/{ns}"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(inside.lines().collect::<Vec<_>>(), host);
    // Only the zone's processes: its init (pid 1, sleep) and the command's.
    let ps = zone.sh("cat /proc/1/comm; ls /proc | grep -c '^[0-9]'");
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(lines[0], "sleep");
    let count: u32 = lines[1].parse().unwrap();
    assert!(count <= 4, "{count} processes visible: {ps}");
    // The init's cgroups, in every hierarchy.
    let cg = zone.sh("cat /proc/self/cgroup; echo --; cat /proc/1/cgroup");
    let (own, init_cg) = cg.split_once("--\n").unwrap();
    assert_eq!(own, init_cg);
    // Zone root: files it writes belong to the zone's first host id.
    zone.sh("id -u > /zlogin-was-here");
    let file = zone.pool.zone_dir().join("upper/zlogin-was-here");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "0\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().uid(),
        zone.pool.config.id_range_start
    );
    // The zone's root directory and root's home.
    assert_eq!(zone.sh("pwd; cat /etc/motd"), "/root\nfrom the image\n");
}

/// The cgroup2 mount point (`/sys/fs/cgroup` on v2 hosts, `.../unified` on hybrid ones).
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            post.starts_with("cgroup2 ")
                .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap()))
        })
        .expect("a cgroup2 mount")
}

#[test]
fn zlogin_joins_the_inits_cgroup2_cgroup_too() {
    let zone = Zone::start();
    let init = zone.init_pid();
    // The init in a cgroup2 cgroup of its own, which zlogin is not in.
    let v2 = cgroup2_mount();
    let own = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let back = v2.join(own.lines().find_map(|l| l.strip_prefix("0::/")).unwrap());
    let dir = v2.join(format!("zlogin-test-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("cgroup.procs"), init.to_string()).unwrap();
    let out = zone.run(
        &[],
        &[
            "sh",
            "-c",
            "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup",
        ],
    );
    // Put back before asserting, so that a failure leaves no cgroup behind.
    std::fs::write(back.join("cgroup.procs"), init.to_string()).unwrap();
    std::fs::remove_dir(&dir).unwrap();
    assert!(out.status.success(), "{out:?}");
    let cg = String::from_utf8_lossy(&out.stdout);
    let (own, init_cg) = cg.split_once("--\n").unwrap();
    assert_eq!(own, init_cg);
    assert!(own.lines().any(|l| l.starts_with("0::")), "{own}");
}

#[test]
fn zlogin_cannot_do_what_the_zones_root_cannot() {
    let zone = Zone::start();
    let init = zone.init_pid();
    let init_status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let status = zone.sh("cat /proc/self/status");
    // The zone's capability bounding set, its seccomp filter and no_new_privs.
    for key in ["CapBnd:", "CapEff:", "Seccomp:", "Seccomp_filters:"] {
        assert_eq!(
            status_line(&status, key),
            status_line(&init_status, key),
            "{key}"
        );
    }
    assert_eq!(
        u64::from_str_radix(&status_line(&status, "CapBnd:"), 16).unwrap(),
        zone::security::kept_mask()
    );
    assert_eq!(status_line(&status, "Seccomp:"), "2");
    assert_eq!(status_line(&status, "NoNewPrivs:"), "1");
    // Loading a kernel module is refused (seccomp, and no CAP_SYS_MODULE).
    let out = zone.run(
        &[],
        &["sh", "-c", "echo junk > /tmp/m.ko; insmod /tmp/m.ko"],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not permitted"),
        "{out:?}"
    );
    // A fresh procfs (past the zone's /proc masks) is refused, as to the zone's root.
    let out = zone.run(
        &[],
        &["sh", "-c", "mkdir -p /mnt/p && mount -t proc proc /mnt/p"],
    );
    assert!(!out.status.success(), "{out:?}");
    // A mount lands in the zone, never on the host.
    zone.sh("mkdir -p /mnt/zl && mount -t tmpfs zlogin-tmpfs /mnt/zl");
    let zone_mounts = std::fs::read_to_string(format!("/proc/{init}/mountinfo")).unwrap();
    assert!(zone_mounts.contains("zlogin-tmpfs"), "{zone_mounts}");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains("zlogin-tmpfs"));
    // Nothing of the host's beyond stdio reaches the zone, whatever zlogin inherits
    // (here a copy of its stderr on fd 9).
    let mut cmd = zone.zlogin();
    cmd.args([
        zone.name(),
        "sh",
        "-c",
        "ls /proc/self/fd | sort -n | tr '\\n' ' '",
    ]);
    use std::os::unix::process::CommandExt;
    // SAFETY: dup2 is async-signal-safe; the new fd 9 is left open across exec.
    unsafe {
        cmd.pre_exec(|| match libc::dup2(2, 9) {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        })
    };
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0 1 2 3 ",
        "fd 3 is ls's own directory"
    );
}

#[test]
fn zlogin_gives_a_pty_on_request_and_a_login_shell_without_a_command() {
    let zone = Zone::start();
    let tty = "if [ -t 0 ] && [ -t 1 ]; then echo tty; else echo no-tty; fi; exit 3";
    let out = zone.run(&["-t"], &["sh", "-c", tty]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tty");
    let out = zone.run(&["-T"], &["sh", "-c", tty]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no-tty");
    // No command: root's login shell ("-sh") reading the input, on a pty.
    let mut child = zone
        .zlogin()
        .args(["-t", zone.name()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo \"shell $0 $((6*7))\"; exit 5\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("shell -sh 42"),
        "{out:?}"
    );
}

#[test]
fn zlogin_on_a_terminal_gives_a_pty_of_the_terminals_size() {
    let zone = Zone::start();
    // script(1) (bsdutils) runs zlogin with a terminal on stdin, as an ssh login would.
    let zlogin = zone.bin.path().join("zlogin");
    let line = format!(
        "stty rows 33 cols 111; {} --pool {} {} sh -c 'stty size; [ -t 0 ] && echo on-a-tty; [ $(cut -d\" \" -f6 /proc/$$/stat) = $$ ] && echo own-session; exit 4'",
        zlogin.display(),
        zone.pool.dir().display(),
        zone.name()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("33 111"), "{text:?}");
    assert!(text.contains("on-a-tty"), "{text:?}");
    // Its own pty, not the caller's terminal: the command leads its own session (a
    // zone process holding the host's terminal could push input into it, TIOCSTI).
    assert!(text.contains("own-session"), "{text:?}");
    assert_eq!(out.status.code(), Some(4), "{text:?}");
}

#[test]
fn zlogin_refuses_unknown_stopped_and_hvm_instances() {
    let mut zone = Zone::start();
    let out = zone.zlogin().args(["nosuchzone", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "zlogin: zone 'nosuchzone' unknown\n"
    );
    // An HVM instance has nothing to enter.
    let mut hvm = zone.pool.config.clone();
    hvm.uuid = format!("{}-hvm", hvm.uuid);
    hvm.spec.name = "guest".into();
    hvm.spec.kind = spec::Kind::Hvm(spec::HvmSpec {
        vcpus: 1,
        cpu_cap: 0,
        disks: vec![],
        cmdline: None,
    });
    std::fs::create_dir_all(zone.pool.dir().join(&hvm.uuid)).unwrap();
    let path = contract::config_path(zone.pool.dir(), &hvm.uuid);
    spec::atomic::write_json_atomic(&path, &hvm).unwrap();
    let out = zone.zlogin().args(["guest", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HVM"),
        "{out:?}"
    );
    // A stopped zone.
    zone.stop();
    let out = zone.run(&[], &["true"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "zlogin: login allowed only to running zones ({} is 'stopped').\n",
            zone.name()
        )
    );
}
