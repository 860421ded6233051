//! `zone monitor`: started from an init-style config.json, driven over its socket.

mod common;
use common::pool::*;
use common::*;
use spec::monitor::{self as contract, MonitorRequest};
use std::path::Path;
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
    assert_eq!(pool.saved_status().state, "running");
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
    assert_eq!(saved.state, "stopped", "{saved:?}");
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
        let s = zone::monitor::request(&pool.socket(), &MonitorRequest::Status)
            .ok()?
            .0
            .status?;
        (s.state == "running" && s.details.get("boots").map(String::as_str) == Some("2"))
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
        let s = zone::monitor::request(&pool.socket(), &MonitorRequest::Status)
            .ok()?
            .0
            .status?;
        (s.state == "running" && s.details.get("boots").map(String::as_str) == Some("3"))
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
            "{ZONE} monitor --config {} & sleep 600",
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
    assert_eq!(again.state, "running");
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
    assert_eq!(pool.saved_status().state, "stopped");
    assert_monitor_gone(&pool, &cgroup_dir(&st));
}

#[test]
fn init_that_exits_at_once_fails_clearly() {
    require_root();
    let pool = Pool::new(&["/bin/false"]);
    let mut child = pool.spawn();
    assert_eq!(wait_exit(&mut child), 1);
    let saved = pool.saved_status();
    assert_eq!(saved.state, "failed");
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
    assert_eq!(saved.state, "failed");
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
    assert_eq!(saved.state, "stopped", "{saved:?}");
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
