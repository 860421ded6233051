//! A zone reaches its metadata through its monitor: our static mdata tools, run inside
//! a real zone (`zone monitor`), over `/dev/ttyS1` and over
//! `/native/.zonecontrol/metadata.sock`.

mod common;
use common::pool::*;
use common::shell::ZoneShell;
use common::*;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// `mdata-get`/`mdata-put` over the serial line only: the socket is named away.
const TTY: &str = "MDATA_SOCKET=/nonexistent timeout 10";
/// Over the socket only: no serial line to fall back on.
const SOCK: &str = "MDATA_SERIAL_DEVICE=/nonexistent timeout 10";

/// A zone running `/bin/sh` with the mdata tools and customer metadata `role=web`.
fn zone_with_tools() -> Pool {
    let mut pool = Pool::new(&["/bin/sh"]);
    testkit::install_mdata_tools(pool.image());
    pool.config
        .spec
        .metadata
        .insert("role".into(), "web".into());
    pool.save_config(&pool.config);
    pool
}

/// Stops `pool`'s monitor and waits for it to exit cleanly.

#[test]
fn the_zone_reads_and_writes_its_metadata_over_ttys1_and_the_socket() {
    require_root();
    let pool = zone_with_tools();
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    pool.wait_running();
    let mut sh = ZoneShell::attach(&pool);
    let uuid = &pool.config.uuid;
    for (via, env) in [("tty", TTY), ("sock", SOCK)] {
        assert_eq!(
            sh.ok(&format!("{env} mdata-get sdc:uuid")),
            format!("{uuid}\n"),
            "{via}"
        );
        assert_eq!(sh.ok(&format!("{env} mdata-get role")), "web\n", "{via}");
        sh.ok(&format!("{env} mdata-put {via}-key from-{via}"));
        // The sdc: namespace is the node's: a put is refused and changes nothing.
        let (rc, out) = sh.run(&format!("{env} mdata-put sdc:uuid forged"));
        assert_eq!(rc, 2, "{via}: {out}");
        assert!(
            out.contains("Cannot update the \"sdc\" Namespace"),
            "{via}: {out}"
        );
        assert_eq!(
            sh.ok(&format!("{env} mdata-get sdc:uuid")),
            format!("{uuid}\n")
        );
    }
    // One store behind both transports.
    assert_eq!(sh.ok(&format!("{TTY} mdata-get sock-key")), "from-sock\n");
    assert_eq!(sh.ok(&format!("{SOCK} mdata-get tty-key")), "from-tty\n");
    assert_eq!(
        sh.ok(&format!("{SOCK} mdata-list")),
        "role\nsock-key\ntty-key\n"
    );
    // The guest's writes are on the host, in the pool.
    let saved =
        std::fs::read_to_string(monitor::metadata_path(pool.dir(), &pool.config.uuid)).unwrap();
    assert!(
        saved.contains("from-tty") && saved.contains("from-sock"),
        "{saved}"
    );
    // Zone root's alone, and the zone cannot write beside it.
    assert_eq!(
        sh.ok("stat -c '%a %u' /native/.zonecontrol/metadata.sock /dev/ttyS1"),
        "600 0\n600 0\n"
    );
    let (rc, _) = sh.run("touch /native/.zonecontrol/x");
    assert_ne!(rc, 0, "the socket's directory is read-only in the zone");
    pool.stop(&mut child);
}

#[test]
fn puts_survive_a_monitor_kill_and_manifest_edits_apply_live() {
    require_root();
    let pool = zone_with_tools();
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    pool.wait_running();
    {
        let mut sh = ZoneShell::attach(&pool);
        sh.ok(&format!("{TTY} mdata-put kept 'across restarts'"));
        sh.ok(&format!("{SOCK} mdata-put role guest-role"));
    }
    // SIGKILL: nothing of the monitor runs after the put; the store saved it then.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    let mut child = pool.spawn();
    pool.wait_running();
    let mut sh = ZoneShell::attach(&pool);
    assert_eq!(
        sh.ok(&format!("{SOCK} mdata-get kept")),
        "across restarts\n"
    );
    assert_eq!(sh.ok(&format!("{TTY} mdata-get role")), "guest-role\n");

    // An edit of the manifest's metadata reaches the running zone without a restart;
    // the edited key's manifest value wins over the guest's write of it.
    let zpid = pool.status().instance_pid;
    let mut edited = pool.config.clone();
    let metadata = &mut edited.spec.metadata;
    metadata.insert("role".into(), "db".into());
    metadata.insert("added".into(), "by-operator".into());
    edited.spec.user_script = Some("#!/bin/sh\necho first boot\n".into());
    pool.save_config(&edited);
    let note = monitor::Client::new(pool.socket()).reload().unwrap();
    assert!(note.contains("customer metadata"), "{note}");
    assert_eq!(sh.ok(&format!("{SOCK} mdata-get role")), "db\n");
    assert_eq!(sh.ok(&format!("{TTY} mdata-get added")), "by-operator\n");
    assert_eq!(sh.ok(&format!("{TTY} mdata-get kept")), "across restarts\n");
    // The user-script property is served under SmartOS's key name.
    assert_eq!(
        sh.ok(&format!("{SOCK} mdata-get user-script")),
        "#!/bin/sh\necho first boot\n"
    );
    assert_eq!(pool.status().instance_pid, zpid, "the zone kept running");
    drop(sh);
    pool.stop(&mut child);
    assert!(
        !monitor::zonecontrol_dir(&pool.config.run_dir, &pool.config.uuid).exists(),
        "the socket's directory is removed with the monitor"
    );
}

#[test]
fn a_zone_reaches_only_its_own_metadata() {
    require_root();
    let a = zone_with_tools();
    let b = zone_with_tools();
    let mut ca = a.spawn();
    let _ga = MonitorGuard(&a);
    a.wait_running();
    let mut sa = ZoneShell::attach(&a);
    sa.ok(&format!("{SOCK} mdata-put secret of-a"));
    // B starts after A's write is saved.
    let mut cb = b.spawn();
    let _gb = MonitorGuard(&b);
    b.wait_running();
    let mut sb = ZoneShell::attach(&b);
    for env in [TTY, SOCK] {
        assert_eq!(
            sb.ok(&format!("{env} mdata-get sdc:uuid")),
            format!("{}\n", b.config.uuid)
        );
        let (rc, out) = sb.run(&format!("{env} mdata-get secret"));
        assert_eq!(rc, 1, "B read A's key: {out}");
    }
    // B's view holds its own socket only.
    assert_eq!(sb.ok("ls /native/.zonecontrol"), "metadata.sock\n");
    assert_eq!(sa.ok(&format!("{TTY} mdata-get secret")), "of-a\n");
    a.stop(&mut ca);
    b.stop(&mut cb);
}

#[test]
fn socket_connections_are_capped_per_zone() {
    require_root();
    let pool = Pool::new(&["/bin/sh"]);
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    pool.wait_running();
    let sock = monitor::zonecontrol_dir(&pool.config.run_dir, &pool.config.uuid)
        .join(monitor::METADATA_SOCKET);
    // The first line of a v1 answer (the rest is read too); "" when closed.
    let ask = |s: &mut UnixStream| -> String {
        use std::io::{BufRead, Write};
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET sdc:uuid\n");
        let mut r = std::io::BufReader::new(s);
        let mut first = String::new();
        let _ = r.read_line(&mut first);
        let mut line = first.clone();
        while !line.is_empty() && line != ".\n" {
            line.clear();
            let _ = r.read_line(&mut line);
        }
        first
    };
    let mut held: Vec<UnixStream> = (0..zone::monitor::MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    for s in &mut held {
        assert_eq!(ask(s), "SUCCESS\n");
    }
    // One more is closed at once, and the others go on.
    let mut extra = UnixStream::connect(&sock).unwrap();
    assert_eq!(ask(&mut extra), "", "a connection past the cap is closed");
    assert_eq!(ask(&mut held[0]), "SUCCESS\n");
    // A freed slot is taken again.
    held.pop();
    std::thread::sleep(Duration::from_millis(200));
    let mut again = UnixStream::connect(&sock).unwrap();
    assert_eq!(ask(&mut again), "SUCCESS\n");
    pool.stop(&mut child);
}

/// The monitor's peak memory (VmHWM, KiB).
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn every_connection_at_its_bounds_keeps_the_monitor_small_and_answering() {
    require_root();
    let mut pool = Pool::new(&["/bin/sh"]);
    // A 1 MiB value, whose answers a client may leave unread.
    let big = "x".repeat(1 << 20);
    pool.config.spec.metadata.insert("big".into(), big);
    pool.save_config(&pool.config);
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    pool.wait_running();
    let sock = monitor::zonecontrol_dir(&pool.config.run_dir, &pool.config.uuid)
        .join(monitor::METADATA_SOCKET);
    let before = peak_kib(child.id());
    // Every connection asks for 3 MiB of answers it never reads (under the 4 MiB at
    // which its session stops reading), then sends a line just under the line bound
    // that never ends: both held at once.
    let line_bound = mdata::Limits::default().max_line_bytes();
    let floods: Vec<_> = (0..zone::monitor::MAX_CONNECTIONS)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut s = UnixStream::connect(&sock).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
                let _ = s.write_all(&b"GET big\n".repeat(3));
                let _ = s.write_all(&vec![b'G'; line_bound - 1000]);
                s
            })
        })
        .collect();
    let held: Vec<UnixStream> = floods.into_iter().map(|t| t.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let t = std::time::Instant::now();
    assert_eq!(pool.status().state, monitor::State::Running);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let grown_mib = (peak_kib(child.id()) - before) / 1024;
    eprintln!(
        "monitor peak grew by {grown_mib} MiB with {} connections at their bounds",
        held.len()
    );
    assert!(grown_mib < 96, "monitor peak grew by {grown_mib} MiB");
    drop(held);
    pool.stop(&mut child);
}
