//! Usage and metrics against a real node: init in host mode on a private bus, a real
//! zone with a capped CPU, a nic on its own bridge and a file in its writable layer;
//! `vmadm stats`/`info`/`timeline`, and the metrics server init starts because
//! node.kdl asks for it, scraped over TCP and checked by Prometheus's own promtool.

mod common;
use common::{wait_for, Node};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A zone that writes 64 KiB, then burns CPU (capped at 20% of one CPU) until stopped.
fn busy_zone(tag: &str, net: &str) -> String {
    let script = "trap 'exit 0' TERM; x=0123456789abcdef; \
                  for i in 1 2 3 4 5; do x=$x$x$x$x; done; \
                  for i in 1 2 3 4; do echo $x >> /big; done; while :; do :; done";
    format!(
        "zone busy {{\n    image \"busybox@1.36\"\n    memory \"64M\"\n    cpu-cap 20\n    \
         quota \"1G\"\n    autoboot #false\n    init \"/bin/sh\" \"-c\" \"{script}\"\n    \
         nic net0 tag=\"{tag}\" ip=\"{net}.2/24\"\n}}\n"
    )
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP exchange; the whole answer (head and body).
fn http(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let answer = http(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")?;
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(std::io::Error::other(format!("bad answer: {answer}"))),
    }
}

/// The value of the sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
}

/// The pid of the metrics server init started (a child of init running it).
fn metrics_pid(init: u32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        (ppid == init && String::from_utf8_lossy(&cmd).contains("skerry-metrics")).then_some(pid)
    })
}

struct DropBridge(String);
impl Drop for DropBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[test]
fn stats_info_timeline_and_metrics_of_a_busy_zone() {
    let id = std::process::id() & 0xfffff;
    let tag = format!("s{id:x}");
    let bridge = format!("sks{id:x}");
    let net = format!("10.{}.{}", 100 + (id % 100), (id / 100) % 250);
    let _bridge = DropBridge(bridge.clone());
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let node = Node::start_with_config(&format!(
        "nic-tag \"{tag}\" bridge=\"{bridge}\"\nmetrics listen=\"{addr}\"\n"
    ));
    node.vmadm_stdin(&["create"], &busy_zone(&tag, &net)).ok();
    node.vmadm(&["start", "busy"]).ok();
    node.wait_state("busy", "running");

    // Traffic both ways on net0: the host pings the zone across the bridge.
    let ip = Command::new("ip")
        .args(["addr", "add", &format!("{net}.1/24"), "dev", &bridge])
        .status()
        .unwrap();
    assert!(ip.success());
    let ping = Command::new("/bin/busybox")
        .args(["ping", "-c", "3", "-W", "2", &format!("{net}.2")])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ping.success(), "the zone does not answer pings on net0");

    // The table: SmartOS-style columns, -p, per-nic fields; CPU % over 1 s.
    let fields = "alias,type,mem,mem_cap,cpu,nproc,quota,net0.rx_pkts,net0.tx_pkts";
    let run = node.vmadm(&["stats", "-p", "-o", fields, "busy"]).ok();
    let cells: Vec<&str> = run.stdout.trim().split(':').collect();
    assert_eq!(cells.len(), 9, "{}", run.stdout);
    assert_eq!(&cells[..2], ["busy", "ZONE"]);
    let num = |i: usize| {
        cells[i]
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("{}", run.stdout))
    };
    assert!(num(2) >= 0.0 && num(3) == 64.0, "{}", run.stdout);
    assert!(
        num(4) > 1.0 && num(4) <= 30.0,
        "cpu % of a loop capped at 20%: {}",
        run.stdout
    );
    assert!(num(5) >= 1.0, "{}", run.stdout);
    assert_eq!(cells[6], "1024", "quota in MiB");
    assert!(
        num(7) >= 3.0 && num(8) >= 3.0,
        "3 pings each way: {}",
        run.stdout
    );
    let header = node.vmadm(&["stats", "-i", "0"]).ok().stdout;
    let columns: Vec<&str> = header.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "UUID", "TYPE", "ALIAS", "MEM", "MEM_CAP", "CPU", "TIME", "NPROC", "DISK", "QUOTA",
            "RX_BYTES", "TX_BYTES"
        ],
        "{header}"
    );
    assert!(
        header.lines().nth(1).unwrap().split_whitespace().nth(5) == Some("-"),
        "no CPU % without an interval: {header}"
    );

    // JSON: bytes, the cgroup's own limit, the file the zone wrote.
    let rows: Value = serde_json::from_str(&node.vmadm(&["stats", "-j"]).ok().stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["name"], "busy");
    assert_eq!(row["memory_limit_bytes"], 64u64 << 20, "{row}");
    assert!(row["memory_bytes"].as_u64().unwrap() > 0, "{row}");
    assert!(row["cpu_usec"].as_u64().unwrap() > 0, "{row}");
    assert!(
        row["disk_used_bytes"].as_u64().unwrap() >= 64 << 10,
        "{row}"
    );
    assert!(
        row["nics"][0]["rx_bytes"].as_u64().unwrap() >= 3 * 84,
        "{row}"
    );
    assert!(row["problems"].is_null(), "{row}");

    // info carries the same usage beside the monitor's details.
    let info: Value = serde_json::from_str(&node.vmadm(&["info", "busy"]).ok().stdout).unwrap();
    assert_eq!(info["usage"]["memory_limit_bytes"], 64u64 << 20, "{info}");
    assert_eq!(info["usage"]["nics"][0]["name"], "net0", "{info}");

    // Bad input: SmartOS-style errors and exit codes.
    let run = node.vmadm(&["stats", "bussy"]).expect(1);
    assert_eq!(
        run.stderr.trim(),
        "vmadm: no instance 'bussy'; did you mean 'busy'?"
    );
    let run = node.vmadm(&["info", "nosuch"]).expect(1);
    assert!(
        run.stderr.contains("no instance 'nosuch'"),
        "{}",
        run.stderr
    );
    let run = node.vmadm(&["stats", "-o", "alias,ram"]).expect(2);
    assert!(run.stderr.contains("unknown field 'ram'"), "{}", run.stderr);

    // The boot timeline init recorded.
    let run = node.vmadm(&["timeline", "-p"]).ok();
    let phases: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["open-pool", "adopt", "api", "reconcile"],
        "{}",
        run.stdout
    );

    // The metrics server init started for node.kdl's `metrics listen=`.
    let text = wait_for("the metrics endpoint", Duration::from_secs(20), || {
        scrape(addr).ok()
    });
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; bash tests/setup)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let uuid = row["uuid"].as_str().unwrap();
    let labels = format!("{{name=\"busy\",uuid=\"{uuid}\",type=\"zone\"");
    assert_eq!(sample(&text, "skerry_init_up"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("skerry_instance_memory_limit_bytes{labels}}}")
        ),
        Some((64u64 << 20) as f64),
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!("skerry_instance_cpu_seconds_total{labels}}}")
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("skerry_instance_state{labels},state=\"running\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!("skerry_instance_network_receive_packets_total{labels},nic=\"net0\"}}")
        )
        .unwrap()
            >= 3.0,
        "{text}"
    );
    assert!(sample(&text, "skerry_node_memory_total_bytes").unwrap() > 0.0);

    // Hostile clients: a huge head, a wrong method, a path that is not there, a client
    // that says nothing (closed after the read deadline, 5 s).
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    assert!(http(addr, huge.as_bytes())
        .unwrap()
        .starts_with("HTTP/1.1 431"));
    assert!(http(addr, b"POST /metrics HTTP/1.1\r\n\r\n")
        .unwrap()
        .starts_with("HTTP/1.1 405"));
    assert!(http(addr, b"GET /../etc HTTP/1.1\r\n\r\n")
        .unwrap()
        .starts_with("HTTP/1.1 404"));
    let t = Instant::now();
    assert_eq!(http(addr, b"").unwrap(), "", "a silent client gets nothing");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());

    // 16 connections at most: the 17th is closed unanswered; freed slots serve again.
    let idle: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    match http(addr, b"GET /metrics HTTP/1.1\r\n\r\n") {
        Ok(answer) => assert_eq!(answer, "", "served past the connection limit"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }
    drop(idle);
    wait_for(
        "a scrape once the idle clients left",
        Duration::from_secs(10),
        || scrape(addr).ok(),
    );

    // Figures for the README (printed, not asserted: the machine is shared): a stats
    // read against a list in the same run, and a scrape.
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..20 {
            f();
        }
        t.elapsed() / 20
    };
    let list = time(&|| drop(node.vmadm(&["list"]).ok()));
    let stats = time(&|| drop(node.vmadm(&["stats", "-i", "0"]).ok()));
    // Each scrape a second after the last, so none is served from the 1 s cache.
    let mut scrapes = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1100));
        let t = Instant::now();
        scrape(addr).unwrap();
        scrapes.push(t.elapsed());
    }
    scrapes.sort();
    eprintln!(
        "figures: vmadm list {list:?}, vmadm stats -i 0 {stats:?} ({:.2}x list), \
         scrape (median of 5) {:?}",
        stats.as_secs_f64() / list.as_secs_f64(),
        scrapes[2]
    );

    // init restarts a metrics server that dies.
    let pid = metrics_pid(node.init_pid()).expect("a skerry-metrics child of init");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let again = wait_for(
        "the restarted metrics server",
        Duration::from_secs(20),
        || metrics_pid(node.init_pid()).filter(|p| *p != pid),
    );
    assert_ne!(again, pid);
    wait_for(
        "a scrape after the restart",
        Duration::from_secs(20),
        || scrape(addr).ok(),
    );
}
