//! vmadm against a real node: init in host mode on a private bus, real zones run by
//! the real `zone` monitor from a busybox image. Every command, the way an operator
//! types it.

mod common;
use common::{LineReader, Node};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// A zone whose PID 1 is a shell loop, so it runs until stopped.
fn sleeper(name: &str, memory: &str, autoboot: bool) -> String {
    format!(
        "zone {name} {{\n    image \"busybox@1.36\"\n    memory \"{memory}\"\n    \
         autoboot #{autoboot}\n    init \"/bin/sh\" \"-c\" \"trap 'exit 0' TERM; \
         while :; do sleep 1; done\"\n    metadata {{ role \"{name}-role\"; }}\n}}\n"
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn a_zone_from_create_to_delete_with_its_events() {
    let node = Node::start();

    // Events first, so every change below is seen; -r says when it listens.
    let mut events = node
        .command(&["events", "-j", "-r", "web01"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = LineReader::new(events.stdout.take().unwrap());
    assert_eq!(json(&lines.next(LONG))["type"], "ready");
    // And one in full text form, for every instance.
    let mut all_events = node
        .command(&["events", "-f", "-r"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let text = LineReader::new(all_events.stdout.take().unwrap());
    assert!(text.next(LONG).ends_with("] ready"));

    // create (KDL on stdin)
    let run = node
        .vmadm_stdin(&["create"], &sleeper("web01", "64M", false))
        .ok();
    assert!(
        run.stderr.starts_with("Successfully created VM ") && run.stderr.contains("(web01)"),
        "{}",
        run.stderr
    );
    node.wait_state("web01", "stopped");

    // get, by name and by UUID; a typo gets a suggestion
    let detail = json(&node.vmadm(&["get", "web01"]).ok().stdout);
    assert_eq!(detail["name"], "web01");
    assert_eq!(detail["kind"], "zone");
    assert_eq!(detail["memory"], 64 << 20);
    let uuid = detail["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        json(&node.vmadm(&["get", &uuid]).ok().stdout)["name"],
        "web01"
    );
    let run = node.vmadm(&["get", "web1"]).expect(1);
    assert_eq!(
        run.stderr.trim(),
        "vmadm: no instance 'web1'; did you mean 'web01'?"
    );

    // start, then it is running with a monitor
    node.vmadm(&["start", "web01"]).ok();
    node.wait_state("web01", "running");
    let info = json(&node.vmadm(&["info", "web01"]).ok().stdout);
    assert_ne!(info["pid"], 0, "{info}");
    assert_eq!(info["name"], "web01");
    let listed = node
        .vmadm(&["list", "-H", "-o", "alias,state,ram"])
        .ok()
        .stdout;
    assert_eq!(listed, "web01  running  64\n");

    // update: customer metadata (and the user-script in it) applies without a restart
    let pid = info["pid"].clone();
    let run = node
        .vmadm(&[
            "update",
            "web01",
            r##"set_customer_metadata={"color": "blue", "user-script": "#!/bin/sh\ntrue\n"}"##,
        ])
        .ok();
    assert!(
        run.stderr.contains("updated metadata, user-script")
            && !run.stderr.contains("Restart needed"),
        "{}",
        run.stderr
    );
    let detail = json(&node.vmadm(&["get", "web01"]).ok().stdout);
    assert_eq!(detail["spec"]["metadata"]["color"], "blue", "{detail}");
    assert_eq!(
        detail["spec"]["user_script"], "#!/bin/sh\ntrue\n",
        "{detail}"
    );
    assert_eq!(
        detail["pid"], pid,
        "a metadata update restarted the instance"
    );
    // ... and reaches the running zone's metadata server.
    let log = std::fs::read_to_string(node.pool.join(&uuid).join("monitor.log")).unwrap();
    assert!(
        log.contains("reload: customer metadata"),
        "the zone monitor never applied the update:\n{log}"
    );
    let file = node.pool.join("remove.json");
    std::fs::write(
        &file,
        r#"{"remove_customer_metadata": ["color", "user-script"]}"#,
    )
    .unwrap();
    let run = node
        .vmadm(&["update", "web01", "-f", file.to_str().unwrap()])
        .ok();
    assert!(!run.stderr.contains("Restart needed"), "{}", run.stderr);
    let detail = json(&node.vmadm(&["get", "web01"]).ok().stdout);
    assert_eq!(detail["spec"]["metadata"].get("color"), None, "{detail}");
    assert_eq!(detail["spec"]["user_script"], Value::Null, "{detail}");
    assert_eq!(detail["pid"], pid);

    // update: a live property, then one that needs a restart
    let run = node.vmadm(&["update", "web01", "autoboot=true"]).ok();
    assert!(
        run.stderr.contains("Successfully updated VM web01"),
        "{}",
        run.stderr
    );
    // A zone's memory applies to the running zone (init/tests/live.rs reads its
    // cgroup); its host name waits for a restart.
    let run = node.vmadm(&["update", "web01", "ram=96"]).ok();
    assert!(
        run.stderr.contains("updated memory; applied live") && !run.stderr.contains("Restart"),
        "{}",
        run.stderr
    );
    let run = node.vmadm(&["update", "web01", "hostname=w1"]).ok();
    assert!(
        run.stderr.contains("needs a restart to apply: hostname")
            && run.stderr.contains("Restart needed")
            && run.stderr.contains("vmadm reboot web01"),
        "{}",
        run.stderr
    );
    let detail = json(&node.vmadm(&["get", "web01"]).ok().stdout);
    assert_eq!(detail["spec"]["memory"], 96 << 20, "{detail}");
    assert_eq!(detail["autoboot"], true);
    let run = node.vmadm(&["update", "web01", "vcpus=2"]).expect(1);
    assert!(run.stderr.contains("vcpus"), "{}", run.stderr);
    // Bad input, SmartOS's way: exit 1, "Failed to update VM", every problem named,
    // nothing changed.
    let run = node
        .vmadm(&["update", "web01", "ram=128", "max_swap=512", "cpu_cap=lots"])
        .expect(1);
    assert!(
        run.stderr.starts_with("vmadm: Failed to update VM web01: ")
            && run.stderr.contains("max_swap: unknown")
            && run.stderr.contains("cpu_cap: "),
        "{}",
        run.stderr
    );
    let detail = json(&node.vmadm(&["get", "web01"]).ok().stdout);
    assert_eq!(detail["spec"]["memory"], 96 << 20, "{detail}");

    // reboot, stop
    node.vmadm(&["reboot", "web01"]).ok();
    node.wait_state("web01", "running");
    node.vmadm(&["stop", "web01", "-t", "10"]).ok();
    node.wait_state("web01", "stopped");
    node.vmadm(&["start", "web01"]).ok();
    node.wait_state("web01", "running");
    node.vmadm(&["stop", "web01", "-F"]).ok();
    node.wait_state("web01", "stopped");

    // delete: gone, data and all
    node.vmadm(&["delete", "web01"]).ok();
    assert_eq!(node.vmadm(&["list", "-H"]).ok().stdout, "");
    assert!(!node.pool.join(&uuid).exists(), "instance data left behind");
    let run = node.vmadm(&["delete", "web01"]).expect(1);
    assert!(run.stderr.contains("no instance 'web01'"), "{}", run.stderr);

    // The event stream saw the instance go through its states, in order.
    // (init announces a deletion as the state "deleted".)
    let (seen, _) = lines.until(LONG, |l| json(l)["state"] == "deleted");
    let states: Vec<String> = seen
        .iter()
        .map(|l| json(l))
        .inspect(|v| assert_eq!(v["name"], "web01", "filtered to web01: {v}"))
        .map(|v| v["state"].as_str().unwrap().to_string())
        .collect();
    let running = states.iter().position(|s| s == "running");
    let stopped_after = running.and_then(|r| states[r..].iter().position(|s| s == "stopped"));
    assert!(
        running.is_some() && stopped_after.is_some(),
        "states seen: {states:?}"
    );
    common::kill_and_reap(&mut events);
    let (_, line) = text.until(LONG, |l| l.contains(" web01 zone: running"));
    assert!(
        line.contains(&uuid),
        "full form carries the whole UUID: {line}"
    );
    common::kill_and_reap(&mut all_events);
}

#[test]
fn console_attach_and_detach_through_a_pty() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    let node = Node::start();
    let zone =
        "zone con01 {\n    image \"busybox@1.36\"\n    memory \"64M\"\n    init \"/bin/sh\"\n}\n";
    node.vmadm_stdin(&["create"], zone).ok();
    node.wait_state("con01", "running");

    // The operator's terminal is a pty: vmadm gets the slave as stdin/stdout/stderr,
    // we type and read on the master.
    let attach = |expect_banner: bool| {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = |p: &nix::pty::OpenptyResult| {
            Stdio::from(p.slave.as_fd().try_clone_to_owned().unwrap())
        };
        let child = node
            .command(&["console", "con01"])
            .stdin(slave(&pty))
            .stdout(slave(&pty))
            .stderr(slave(&pty))
            .spawn()
            .unwrap();
        let master = std::fs::File::from(pty.master);
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let mut reader = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut screen = Screen {
            rx,
            text: String::new(),
        };
        if expect_banner {
            screen.wait_for("Ctrl-] detaches");
        }
        (child, master, pty.slave, screen)
    };

    let (mut child, mut master, slave, mut screen) = attach(true);
    master.write_all(b"echo marker-$((6*7))\r").unwrap();
    expect_answer(&node, "con01", &mut screen, "marker-42");
    master.write_all(&[0x1d]).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    screen.wait_for("detached from con01");
    let mode = tcgetattr(&slave).unwrap();
    assert!(
        mode.local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "terminal left raw"
    );

    // A second attach reaches the same shell; SIGTERM detaches and still restores.
    let (mut child, mut master, slave, mut screen) = attach(true);
    master.write_all(b"echo again-$((1+1))\r").unwrap();
    expect_answer(&node, "con01", &mut screen, "again-2");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    screen.wait_for("SIGTERM; detached");
    let mode = tcgetattr(&slave).unwrap();
    assert!(mode
        .local_flags
        .contains(LocalFlags::ICANON | LocalFlags::ECHO));

    // No console for a stopped instance: an error, not a hang.
    node.vmadm(&["stop", "con01", "-F"]).ok();
    node.wait_state("con01", "stopped");
    let run = node.vmadm(&["console", "con01"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let run = node.vmadm(&["console", "con1"]).expect(1);
    assert!(
        run.stderr.contains("did you mean 'con01'?"),
        "{}",
        run.stderr
    );
}

/// Waits for the zone's answer on the operator's screen; when it never comes, says
/// whose fault it is: output that reached the console log but not us was read by
/// someone else holding the same pty master.
#[track_caller]
fn expect_answer(node: &Node, name: &str, screen: &mut Screen, needle: &str) {
    if screen.shows(needle) {
        return;
    }
    let detail = json(&node.vmadm(&["get", name]).stdout);
    let uuid = detail["uuid"].as_str().unwrap_or_default();
    let log = std::fs::read_to_string(node.pool.join(uuid).join("console.log")).unwrap_or_default();
    panic!(
        "the zone's answer {needle:?} never reached vmadm console{}; screen:\n{}",
        if log.contains(needle) {
            " but is in console.log: the monitor reads the pty master it handed over, so \
             two readers race for every byte (it must relay, not share)"
        } else {
            ""
        },
        screen.text
    );
}

/// What the operator's terminal has shown so far.
struct Screen {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    text: String,
}

impl Screen {
    /// Waits until `needle` was shown; false after [`LONG`].
    fn shows(&mut self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + LONG;
        while !self.text.contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(bytes) => self.text.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => return false,
            }
        }
        true
    }

    #[track_caller]
    fn wait_for(&mut self, needle: &str) {
        if !self.shows(needle) {
            panic!("{needle:?} never shown; screen:\n{}", self.text);
        }
    }
}

#[test]
fn filters_sorting_lookup_reconcile_and_permissions() {
    let node = Node::start();
    let zones = format!(
        "{}{}{}",
        sleeper("alpha", "128M", false),
        sleeper("beta", "64M", false),
        sleeper("gamma", "64M", false).replace("    metadata", "    cpu-cap 50\n    metadata"),
    );
    node.vmadm_stdin(&["create"], &zones).ok();
    for z in ["alpha", "beta", "gamma"] {
        node.wait_state(z, "stopped");
    }
    let uuid = |name: &str| {
        let v = json(&node.vmadm(&["get", name]).ok().stdout);
        v["uuid"].as_str().unwrap().to_string()
    };
    let (a, b, g) = (uuid("alpha"), uuid("beta"), uuid("gamma"));

    // The default: uuid,type,ram,state,alias sorted by ram then uuid.
    let out = node.vmadm(&["list"]).ok().stdout;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["UUID", "TYPE", "RAM", "STATE", "ALIAS"]);
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    let (first, second) = if b < g { (&b, "beta") } else { (&g, "gamma") };
    assert_eq!(rows[0], [first.as_str(), "zone", "64", "stopped", second]);
    assert_eq!(rows[2], [a.as_str(), "zone", "128", "stopped", "alpha"]);

    let list = |args: &[&str]| node.vmadm(args).ok().stdout;
    assert_eq!(
        list(&["list", "-H", "-o", "alias", "-s", "alias"]),
        "alpha\nbeta\ngamma\n"
    );
    assert_eq!(
        list(&["list", "-H", "-o", "alias", "-s", "-alias"]),
        "gamma\nbeta\nalpha\n"
    );
    assert_eq!(
        list(&["list", "-H", "-o", "alias", "-s", "-ram,alias"]),
        "alpha\nbeta\ngamma\n"
    );
    assert_eq!(
        list(&[
            "list",
            "-p",
            "-o",
            "alias,ram,state",
            "-s",
            "alias",
            "ram=64"
        ]),
        "beta:64:stopped\ngamma:64:stopped\n"
    );
    assert_eq!(
        list(&["list", "-H", "-o", "alias", "-s", "alias", "alias=~^(a|g)"]),
        "alpha\ngamma\n"
    );
    // Spec fields come from Get, transparently.
    assert_eq!(
        list(&["list", "-H", "-o", "alias,cpu_cap", "cpu_cap=50"]),
        "gamma  50\n"
    );
    assert_eq!(
        list(&["list", "-H", "-o", "alias", "metadata.role=beta-role"]),
        "beta\n"
    );
    assert_eq!(list(&["list", "-H", "state=running"]), "");
    let rows = json(&list(&["list", "-j", "-o", "alias,ram", "-s", "alias"]));
    assert_eq!(rows[0], serde_json::json!({"alias": "alpha", "ram": 128}));

    // lookup
    assert_eq!(list(&["lookup", "alias=alpha"]), format!("{a}\n"));
    assert_eq!(list(&["lookup", "ram=1"]), "");
    let run = node.vmadm(&["lookup", "-1", "ram=64"]).expect(1);
    assert!(run.stderr.contains("2 instances matched"), "{}", run.stderr);
    let one = json(&list(&["lookup", "-j", "-1", "alias=beta"]));
    assert_eq!(one["name"], "beta");
    assert_eq!(one["spec"]["metadata"]["role"], "beta-role");

    // reconcile: a manifest dropped into the pool is created; a bad one is reported
    // (exit 1) without stopping the others; then nothing is left to do.
    std::fs::write(
        node.pool.join("manifests/delta.kdl"),
        sleeper("delta", "32M", false),
    )
    .unwrap();
    let run = node.vmadm(&["reconcile", "-H"]).ok();
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("delta") && l.contains("create")),
        "{}",
        run.stdout
    );
    node.wait_state("delta", "stopped");
    std::fs::write(
        node.pool.join("manifests/broken.kdl"),
        "zone oops { memory }\n",
    )
    .unwrap();
    let run = node.vmadm(&["reconcile"]).expect(1);
    assert!(run.stdout.contains("broken.kdl"), "{}", run.stdout);
    std::fs::remove_file(node.pool.join("manifests/broken.kdl")).unwrap();
    let run = node.vmadm(&["reconcile"]).ok();
    assert!(
        run.stdout.is_empty() && run.stderr.contains("Nothing to do"),
        "{}",
        run.stderr
    );

    // An HVM instance (provisioned, not booted: this host's KVM cannot boot Linux)
    // shows its own fields and refuses zone-only properties.
    common::install_tiny_hvm_image(node.work_dir(), &node.pool);
    let vm = "hvm vm01 {\n    image \"tiny-hvm@1\"\n    autoboot #false\n    vcpus 2\n    \
              memory \"32M\"\n    disk root boot=#true size=\"4M\"\n}\n";
    node.vmadm_stdin(&["create"], vm).ok();
    node.wait_state("vm01", "stopped");
    assert_eq!(
        list(&[
            "list",
            "-H",
            "-o",
            "alias,type,vcpus,disks.0.name",
            "type=hvm"
        ]),
        "vm01  hvm  2  root\n"
    );
    let run = node.vmadm(&["update", "vm01", "vcpus=3"]).ok();
    assert!(
        run.stderr.contains("Successfully updated VM vm01"),
        "{}",
        run.stderr
    );
    assert_eq!(list(&["list", "-H", "-o", "vcpus", "alias=vm01"]), "3\n");
    // An HVM's cpu_cap is its VMM's cgroup (vmm/tests/monitor_mode.rs changes it
    // live); zone-only properties are refused.
    let run = node.vmadm(&["update", "vm01", "cpu_cap=5"]).ok();
    assert!(
        run.stderr.contains("Successfully updated VM vm01"),
        "{}",
        run.stderr
    );
    let run = node.vmadm(&["update", "vm01", "max_lwps=5"]).expect(1);
    assert!(run.stderr.contains("does not apply"), "{}", run.stderr);
    assert_eq!(
        list(&["list", "-H", "-o", "alias,ram", "-s", "ram,alias"]),
        "delta  32\nvm01   32\nbeta   64\ngamma  64\nalpha  128\n"
    );

    // Mutations need root; reading does not.
    use std::os::unix::process::CommandExt;
    let as_nobody = |args: &[&str]| {
        let out = node.command(args).uid(65534).gid(65534).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = as_nobody(&["start", "alpha"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("permission denied") && err.contains("as root"),
        "{err}"
    );
    let (code, err) = as_nobody(&["list"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(node.state("alpha").as_deref(), Some("stopped"));
}

#[test]
fn a_smartos_json_payload_creates_a_zone() {
    let node = Node::start();
    let payload = serde_json::json!({
        "brand": "joyent-minimal",
        "alias": "sm01",
        "image_uuid": node.image_uuid,
        "max_physical_memory": 64,
        "cpu_cap": 25,
        "autoboot": false,
        "customer_metadata": {"role": "smartos"},
    });
    let file = node.pool.join("sm01.json");
    std::fs::write(&file, payload.to_string()).unwrap();
    let run = node.vmadm(&["create", "-f", file.to_str().unwrap()]).ok();
    assert!(run.stderr.contains("(sm01)"), "{}", run.stderr);
    node.wait_state("sm01", "stopped");
    let detail = json(&node.vmadm(&["get", "sm01"]).ok().stdout);
    assert_eq!(detail["kind"], "zone");
    assert_eq!(detail["memory"], 64 << 20);
    assert_eq!(detail["spec"]["metadata"]["role"], "smartos");
    assert_eq!(
        node.vmadm(&["list", "-H", "-o", "alias,cpu_cap"])
            .ok()
            .stdout,
        "sm01  25\n"
    );
    // The payload is kept as a manifest: the source of truth.
    assert!(node.pool.join("manifests/sm01.kdl").exists());

    // An invalid payload is refused with SmartOS's error shape, and nothing is created.
    let run = node.vmadm_stdin(&["create"], r#"{"brand": "windows", "alias": "bad01"}"#);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("brand"), "{}", run.stderr);
    assert_eq!(node.state("bad01"), None);
    // Creating a name twice is refused too.
    let run = node
        .vmadm(&["create", "-f", file.to_str().unwrap()])
        .expect(1);
    assert!(run.stderr.contains("sm01"), "{}", run.stderr);
}
