//! `zone monitor`: started from an init-style config.json, driven over its socket.

mod common;
use common::pool::*;
use common::*;
use monitor::{self as contract, MonitorRequest, State};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn monitor_serves_status_console_and_stop() {
    require_root();
    let pool = Pool::new(&["/bin/sh"]);
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    let st = pool.wait_running();
    assert_eq!(st.pid, child.id());
    let zpid = st.instance_pid.expect("zone init pid");
    let pidfile = std::fs::read_to_string(contract::pidfile_path(
        &pool.config.run_dir,
        &pool.config.uuid,
    ))
    .unwrap();
    assert_eq!(pidfile.trim(), child.id().to_string());
    assert_eq!(pool.saved_status().state, State::Running);
    let cgroup = cgroup_dir(&st);
    assert!(cgroup.exists(), "{}", cgroup.display());
    // The zone init is in the zone cgroup and its own pid namespace.
    let ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/pid")).unwrap();
    assert_ne!(ns(zpid), ns(std::process::id()));

    // The console fd drives the zone's shell: its command writes into the zone.
    let (resp, fd) = pool.request(MonitorRequest::Console);
    assert!(resp.ok, "{resp:?}");
    let fd = fd.expect("console fd passed over SCM_RIGHTS");
    let mut console = std::fs::File::from(fd);
    use std::io::Write;
    console.write_all(b"echo console-$((6*7)) $(hostname) $ZONE_TEST $(cat /etc/resolv.conf) > /from-console\n").unwrap();
    let marker = pool.zone_dir().join("upper/from-console");
    let text = wait_for("the console command to run", || {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert_eq!(
        text,
        format!(
            "console-42 {} 1 nameserver 10.0.0.53\n",
            pool.config.spec.name
        )
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&marker).unwrap().uid(),
        pool.config.id_range_start,
        "zone root's file on the host"
    );

    // Two consoles attached at once and the console log all see every byte the zone
    // writes: the monitor alone reads the pty and relays (a handed-out pty master
    // would race the log for output).
    let (resp, fd2) = pool.request(MonitorRequest::Console);
    assert!(resp.ok, "{resp:?}");
    let mut second = std::os::unix::net::UnixStream::from(fd2.expect("second console fd"));
    let mut first = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(console));
    first.write_all(b"echo relay-$((40+2))-out\n").unwrap();
    for (which, c) in [("first", &mut first), ("second", &mut second)] {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut seen = Vec::new();
        wait_for(&format!("relay output on the {which} console"), || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = std::io::Read::read(c, &mut buf) {
                seen.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&seen)
                .contains("relay-42-out")
                .then_some(())
        });
    }
    wait_for("relay output in console.log", || {
        std::fs::read_to_string(contract::console_log_path(
            &pool.config.pool,
            &pool.config.uuid,
        ))
        .ok()
        .filter(|l| l.contains("relay-42-out"))
    });
    drop(second);

    // An interactive shell ignores SIGTERM: the grace period ends in SIGKILL.
    let t0 = Instant::now();
    let (resp, _) = pool.request(MonitorRequest::Stop {
        force: false,
        timeout_secs: 1,
    });
    assert!(resp.ok, "{resp:?}");
    assert_eq!(wait_exit(&mut child), 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "killed before the grace period"
    );
    let saved = pool.saved_status();
    assert_eq!(saved.state, State::Stopped, "{saved:?}");
    assert!(
        !Path::new(&format!("/proc/{zpid}")).exists(),
        "zone init survived the stop"
    );
    assert_monitor_gone(&pool, &cgroup);
}

#[test]
fn zone_that_reboots_itself_is_restarted() {
    require_root();
    let script =
        "echo boot >> /boots; if [ $(wc -l < /boots) -lt 2 ]; then reboot -f; fi; exec sleep 600";
    let pool = Pool::new(&["/bin/sh", "-c", script]);
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    let st = wait_for("the second boot", || {
        let s = monitor::Client::new(pool.socket())
            .request(&MonitorRequest::Status)
            .ok()?
            .0
            .status?;
        (s.state == State::Running && s.details.get("boots").map(String::as_str) == Some("2"))
            .then_some(s)
    });
    let boots = std::fs::read_to_string(pool.zone_dir().join("upper/boots")).unwrap();
    assert_eq!(
        boots, "boot\nboot\n",
        "the upper layer persists across the reboot"
    );
    // Reboot on request too.
    let (resp, _) = pool.request(MonitorRequest::Reboot { force: true });
    assert!(resp.ok);
    wait_for("the requested reboot", || {
        let s = monitor::Client::new(pool.socket())
            .request(&MonitorRequest::Status)
            .ok()?
            .0
            .status?;
        (s.state == State::Running && s.details.get("boots").map(String::as_str) == Some("3"))
            .then_some(())
    });
    let (resp, _) = pool.request(MonitorRequest::Stop {
        force: true,
        timeout_secs: 0,
    });
    assert!(resp.ok);
    assert_eq!(wait_exit(&mut child), 0);
    assert_monitor_gone(&pool, &cgroup_dir(&st));
}

#[test]
fn monitor_survives_its_parent_being_killed() {
    require_root();
    let pool = Pool::new(&["/bin/sleep", "600"]);
    let cfg = contract::config_path(pool.dir(), &pool.config.uuid);
    // The parent stands in for init: it spawns the monitor, then dies by SIGKILL.
    let mut parent = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "{ZONE} monitor --config {} & exec sleep 600",
            cfg.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = MonitorGuard(&pool);
    let st = pool.wait_running();
    parent.kill().unwrap();
    parent.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let again = pool.status();
    assert_eq!(again.state, State::Running);
    assert_eq!(again.pid, st.pid, "the same monitor answers");
    assert_eq!(again.instance_pid, st.instance_pid);
    let (resp, _) = pool.request(MonitorRequest::Stop {
        force: true,
        timeout_secs: 0,
    });
    assert!(resp.ok);
    wait_for("the orphaned monitor to exit", || {
        (!Path::new(&format!("/proc/{}", st.pid)).exists()).then_some(())
    });
    assert_eq!(pool.saved_status().state, State::Stopped);
    assert_monitor_gone(&pool, &cgroup_dir(&st));
}

#[test]
fn init_that_exits_at_once_fails_clearly() {
    require_root();
    let pool = Pool::new(&["/bin/false"]);
    let mut child = pool.spawn();
    assert_eq!(wait_exit(&mut child), 1);
    let saved = pool.saved_status();
    assert_eq!(saved.state, State::Failed);
    assert!(saved.reason.contains("exited at once"), "{saved:?}");
    assert_monitor_gone(&pool, &cgroup_dir(&saved));
}

#[test]
fn missing_init_fails_clearly() {
    require_root();
    let pool = Pool::new(&["/sbin/init"]);
    let mut child = pool.spawn();
    assert_eq!(wait_exit(&mut child), 1);
    let saved = pool.saved_status();
    assert_eq!(saved.state, State::Failed);
    assert!(
        saved
            .reason
            .contains("/sbin/init: not found in the zone's rootfs"),
        "{saved:?}"
    );
    assert!(!pool.socket().exists());
}

#[test]
fn power_off_from_inside_is_a_clean_stop() {
    require_root();
    let pool = Pool::new(&[
        "/bin/sh",
        "-c",
        "echo hello from $(hostname); sleep 1.5; poweroff -f",
    ]);
    let mut child = pool.spawn();
    let st = pool.wait_running();
    assert_eq!(wait_exit(&mut child), 0);
    let saved = pool.saved_status();
    assert_eq!(saved.state, State::Stopped, "{saved:?}");
    assert!(saved.reason.contains("powered off"), "{saved:?}");
    // What the zone wrote on its console is in the console log.
    let log =
        std::fs::read_to_string(contract::console_log_path(pool.dir(), &pool.config.uuid)).unwrap();
    assert!(
        log.contains(&format!("hello from {}", pool.config.spec.name)),
        "console.log: {log:?}"
    );
    assert_monitor_gone(&pool, &cgroup_dir(&st));
}

/// What a SIGKILLed monitor leaves is cleaned by the next monitor of the same zone, and
/// only then: a second monitor refuses to touch a zone whose monitor is alive.
#[test]
fn next_monitor_cleans_what_a_killed_one_left() {
    require_root();
    let mut pool = Pool::new(&["/bin/sh", "-c", "sleep 600 & sleep 601 & wait"]);
    let tag = unique("k");
    let _bridge = BridgeGuard(contract::default_bridge_name(&tag));
    pool.config
        .spec
        .nics
        .push(spec::Nic::new("net0", tag, spec::IpConfig::None));
    let cfg_path = contract::config_path(pool.dir(), &pool.config.uuid);
    spec::atomic::write_json_atomic(&cfg_path, &pool.config).unwrap();
    let host_if = contract::host_ifname(&pool.config.uuid, 0);
    let mut first = pool.spawn();
    let _guard = MonitorGuard(&pool);
    let st = pool.wait_running();
    let cgroup = cgroup_dir(&st);
    let procs = |dir: &Path| std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    wait_for("the zone's three processes", || {
        (procs(&cgroup).lines().count() == 3).then_some(())
    });
    assert!(zone::net::link_exists(&host_if).unwrap());

    // A duplicate monitor is refused before it touches anything of the live zone.
    let mut dup = pool.spawn();
    assert_eq!(wait_exit(&mut dup), 125, "a second monitor started");
    let log = std::fs::read_to_string(pool.zone_dir().join("monitor.log")).unwrap();
    assert!(log.contains("another monitor (pid"), "{log}");
    let again = pool.status();
    assert_eq!(
        (again.pid, again.instance_pid),
        (st.pid, st.instance_pid),
        "the live zone was disturbed"
    );
    assert_eq!(procs(&cgroup).lines().count(), 3);

    first.kill().unwrap();
    first.wait().unwrap();
    // What a SIGKILLed monitor leaves (as found on this kernel): the zone init dies of
    // its PR_SET_PDEATHSIG SIGKILL and takes its pid namespace with it; the veth goes
    // with the network namespace; the mounts with the monitor's mount namespace. The
    // cgroup directories (every v1 hierarchy), the socket and the pidfile stay.
    wait_for("the zone's processes to die with the monitor", || {
        procs(&cgroup).is_empty().then_some(())
    });
    wait_for("the veth to go with the zone's netns", || {
        (!zone::net::link_exists(&host_if).unwrap()).then_some(())
    });
    assert!(cgroup.exists(), "the cgroup went away by itself");
    assert!(pool.socket().exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&pool.config.uuid), "{mounts}");

    // Worse leftovers are possible (a zone init that changed its credentials loses
    // its PDEATHSIG; a netns pinned elsewhere keeps its veth): plant both.
    let mut survivor = Command::new("sleep").arg("600").spawn().unwrap();
    let zone::cgroups::Hierarchy::V1 { controllers } = zone::cgroups::Hierarchy::detect().unwrap()
    else {
        panic!("this test expects the dev host's cgroup v1 controllers (see cgroup_v2.rs)")
    };
    let mut v1_dirs: Vec<PathBuf> = controllers
        .values()
        .map(|base| base.join("skerry").join(&pool.config.uuid))
        .collect();
    v1_dirs.sort();
    v1_dirs.dedup();
    assert!(v1_dirs.iter().all(|d| d.is_dir()), "{v1_dirs:?}");
    assert!(v1_dirs.len() >= 3, "{v1_dirs:?}");
    for d in &v1_dirs {
        std::fs::write(d.join("cgroup.procs"), survivor.id().to_string()).unwrap();
    }
    let ip = |args: &[&str]| {
        let st = Command::new("ip")
            .args(args)
            .status()
            .expect("ip (iproute2)");
        assert!(st.success(), "ip {args:?}");
    };
    ip(&[
        "link",
        "add",
        &host_if,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{host_if}z"),
    ]);

    let mut second = pool.spawn();
    let st2 = wait_for("the second monitor's zone", || {
        let s = monitor::Client::new(pool.socket())
            .request(&MonitorRequest::Status)
            .ok()?
            .0
            .status?;
        (s.state == State::Running && s.pid == second.id()).then_some(s)
    });
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        survivor.wait().unwrap().signal(),
        Some(9),
        "survivor not killed"
    );
    let log = std::fs::read_to_string(pool.zone_dir().join("monitor.log")).unwrap();
    assert!(
        log.contains(&format!(
            "killed 1 leftover process(es) [{}]",
            survivor.id()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("deleted stale host interface {host_if}")),
        "{log}"
    );
    assert_eq!(cgroup_dir(&st2), cgroup, "the zone keeps its cgroup name");
    assert!(
        zone::net::link_exists(&host_if).unwrap(),
        "the new zone's veth"
    );
    let (resp, _) = pool.request(MonitorRequest::Stop {
        force: true,
        timeout_secs: 0,
    });
    assert!(resp.ok, "{resp:?}");
    assert_eq!(wait_exit(&mut second), 0);
    assert_monitor_gone(&pool, &cgroup);
    for d in &v1_dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(!zone::net::link_exists(&host_if).unwrap());
    assert!(!contract::lock_path(&pool.config.run_dir, &pool.config.uuid).exists());
}

/// A console client's window size (at attach and after a resize) reaches the zone's
/// pty through the framed relay protocol of `monitor`.
#[test]
fn console_window_size_reaches_the_zone() {
    use contract::{console_frame, winsize_frame, CONSOLE_FRAMED, FRAME_DATA};
    use std::io::Write;
    require_root();
    let pool = Pool::new(&["/bin/sh"]);
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    pool.wait_running();
    let (resp, fd) = pool.request(MonitorRequest::Console);
    assert!(resp.ok, "{resp:?}");
    let mut console = std::os::unix::net::UnixStream::from(fd.expect("console fd"));
    let size_in_zone = |file: &str| {
        let path = pool.zone_dir().join("upper").join(file);
        wait_for(&format!("stty size in {file}"), || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|t| t.ends_with('\n'))
        })
    };
    let mut attach = CONSOLE_FRAMED.to_vec();
    attach.extend(winsize_frame(40, 132));
    attach.extend(console_frame(FRAME_DATA, b"stty size > /size1\n"));
    console.write_all(&attach).unwrap();
    assert_eq!(size_in_zone("size1"), "40 132\n");
    let mut resize = winsize_frame(50, 100);
    resize.extend(console_frame(FRAME_DATA, b"stty size > /size2\n"));
    console.write_all(&resize).unwrap();
    assert_eq!(size_in_zone("size2"), "50 100\n");
    pool.stop(&mut child);
}

/// Stops `pool`'s running zone with a long grace period; returns how long the monitor
/// took to exit and the reason it gave while stopping.
fn stop_and_time(pool: &Pool, child: &mut std::process::Child) -> (Duration, String) {
    let t0 = Instant::now();
    let (resp, _) = pool.request(MonitorRequest::Stop {
        force: false,
        timeout_secs: 30,
    });
    assert!(resp.ok, "{resp:?}");
    assert_eq!(wait_exit(child), 0);
    (t0.elapsed(), resp.message)
}

/// busybox init takes SIGTERM as "reboot": a stop asks it with SIGUSR2 to power off,
/// so its shutdown actions run and the zone ends long before the grace period.
#[test]
fn busybox_init_is_stopped_by_its_poweroff_signal() {
    require_root();
    let pool = Pool::new(&["/sbin/init"]);
    std::os::unix::fs::symlink("/bin/busybox", pool.image().join("sbin/init")).unwrap();
    std::fs::write(
        pool.image().join("etc/inittab"),
        "::sysinit:/bin/touch /booted\n::respawn:/bin/sleep 600\n::shutdown:/bin/touch /shut-down-cleanly\n",
    )
    .unwrap();
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    let st = pool.wait_running();
    wait_for("busybox init's sysinit action", || {
        pool.zone_dir().join("upper/booted").exists().then_some(())
    });
    let (took, stopping) = stop_and_time(&pool, &mut child);
    assert!(stopping.contains("SIGUSR2"), "{stopping:?}");
    assert!(took < Duration::from_secs(10), "the stop took {took:?}");
    assert!(pool.zone_dir().join("upper/shut-down-cleanly").exists());
    let saved = pool.saved_status();
    assert_eq!(saved.state, State::Stopped, "{saved:?}");
    assert!(saved.reason.contains("powered off"), "{saved:?}");
    assert_monitor_gone(&pool, &cgroup_dir(&st));
}

/// An init listening on /run/initctl (sysvinit, systemd) is asked for runlevel 0 there,
/// with sysvinit's 384-byte request; it powers off at once.
#[test]
fn an_initctl_listener_gets_a_runlevel_0_request() {
    require_root();
    let pool = Pool::new(&[
        "/bin/sh",
        "-c",
        "mkdir -p /run && mkfifo /run/initctl && touch /listening && \
         dd if=/run/initctl of=/request bs=384 count=1 && poweroff -f; sleep 600",
    ]);
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    let st = pool.wait_running();
    wait_for("the zone's initctl FIFO", || {
        pool.zone_dir()
            .join("upper/listening")
            .exists()
            .then_some(())
    });
    let (took, stopping) = stop_and_time(&pool, &mut child);
    assert!(
        stopping.contains("runlevel 0 on /run/initctl"),
        "{stopping:?}"
    );
    assert!(took < Duration::from_secs(10), "the stop took {took:?}");
    let req = std::fs::read(pool.zone_dir().join("upper/request")).unwrap();
    assert_eq!(req.len(), 384);
    assert_eq!(&req[..4], &0x0309_1969i32.to_ne_bytes(), "INIT_MAGIC");
    assert_eq!(&req[4..8], &1i32.to_ne_bytes(), "INIT_CMD_RUNLVL");
    assert_eq!(req[8], b'0');
    assert!(pool.saved_status().reason.contains("powered off"));
    assert_monitor_gone(&pool, &cgroup_dir(&st));
}

/// A zone cannot aim the monitor's initctl write at the host: its /run/initctl, a link
/// to a host FIFO with a reader, resolves inside the zone (to nothing), so the stop
/// falls back to SIGTERM and the host FIFO receives nothing.
#[test]
fn initctl_links_out_of_the_zone_are_not_followed() {
    require_root();
    let host = tempfile::tempdir().unwrap();
    let fifo = host.path().join("host-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let script = format!(
        "mkdir -p /run && ln -s {} /run/initctl && touch /linked; \
         trap 'exit 0' TERM; while :; do sleep 1; done",
        fifo.display()
    );
    let pool = Pool::new(&["/bin/sh", "-c", &script]);
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    let st = pool.wait_running();
    wait_for("the zone's link", || {
        pool.zone_dir().join("upper/linked").exists().then_some(())
    });
    let (_, stopping) = stop_and_time(&pool, &mut child);
    assert!(stopping.contains("SIGTERM"), "{stopping:?}");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut got);
    assert!(got.is_empty(), "the host FIFO received {} bytes", got.len());
    assert_monitor_gone(&pool, &cgroup_dir(&st));
}

/// The monitor serves its socket from the same loop as the zone: a client that says
/// nothing, or sends an endless line, must not hold that loop up.
#[test]
fn misbehaving_socket_clients_never_hold_up_the_monitor() {
    use std::io::{Read, Write};
    require_root();
    let pool = Pool::new(&["/bin/sh"]);
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    pool.wait_running();
    let silent = std::os::unix::net::UnixStream::connect(pool.socket()).unwrap();
    let mut partial = std::os::unix::net::UnixStream::connect(pool.socket()).unwrap();
    partial.write_all(b"{\"op\":\"sta").unwrap();
    let t = Instant::now();
    assert_eq!(pool.status().state, State::Running);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let mut long = std::os::unix::net::UnixStream::connect(pool.socket()).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = long.write_all(&vec![b'x'; contract::MAX_REQUEST_LINE + 4096]);
    let mut answer = String::new();
    let _ = long.read_to_string(&mut answer);
    assert!(
        answer.contains("\"ok\":false") && answer.contains("longer than"),
        "{answer:?}"
    );
    // The half-sent request completes and is answered in turn.
    partial.write_all(b"tus\"}\n").unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&partial), &mut line).unwrap();
    assert!(line.contains("\"state\":\"running\""), "{line}");
    drop(silent);
    pool.stop(&mut child);
}

#[test]
fn a_zone_whose_port_rules_cannot_be_installed_never_starts() {
    require_root();
    let mut pool = Pool::new(&["/bin/sh", "-c", "sleep 600"]);
    let tag = unique("r");
    let _bridge = BridgeGuard(contract::default_bridge_name(&tag));
    pool.config
        .spec
        .nics
        .push(spec::Nic::new("net0", tag, spec::IpConfig::None));
    pool.config.spec.firewall = Some(spec::Firewall::default());
    let cfg_path = contract::config_path(pool.dir(), &pool.config.uuid);
    spec::atomic::write_json_atomic(&cfg_path, &pool.config).unwrap();
    let host_if = contract::host_ifname(&pool.config.uuid, 0);
    // Another port already owns this port's firewall mark (as a hash collision
    // would): the kernel refuses the port's transaction, as it would any other
    // failure to install.
    let mark = host::isolation::mark_of(&host_if);
    let script = format!(
        "add table bridge skerry\nadd map bridge skerry mark_ports {{ type mark : ifname; }}\n\
         add element bridge skerry mark_ports {{ 0x{mark:08x} : \"squatter\" }}\n"
    );
    host::isolation::apply(&host_if, &script).unwrap();
    struct Squat(String, String);
    impl Drop for Squat {
        fn drop(&mut self) {
            let _ = host::isolation::apply(&self.0, &self.1);
        }
    }
    let _squat = Squat(
        host_if.clone(),
        format!("delete element bridge skerry mark_ports {{ 0x{mark:08x} }}\n"),
    );
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    let code = wait_exit(&mut child);
    assert_eq!(code, 1);
    let saved = pool.saved_status();
    assert_eq!(saved.state, State::Failed);
    assert!(
        saved.reason.contains("nf_tables refused the rules"),
        "{saved:?}"
    );
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{host_if}")).exists(),
        "the port of a zone that did not start is gone"
    );
}
