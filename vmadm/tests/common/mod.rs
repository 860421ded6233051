//! Test harness: a private dbus-daemon, a real `init` in host mode on a temp pool, and
//! the `vmadm` binary run against them. Everything is started here and torn down on
//! drop, even when a test fails; a missing program fails the test with what to do.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The vmadm binary under test.
pub fn vmadm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vmadm"))
}

/// A sibling binary of the workspace (init, zone, imgadm): `SKERRY_<NAME>_BIN`, else the
/// same target directory as vmadm. `cargo build --workspace` (as tests/run does) builds
/// them; a missing one fails the test saying so.
pub fn sibling_bin(name: &str) -> PathBuf {
    let var = format!("SKERRY_{}_BIN", name.to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let path = vmadm_bin().with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {name}` (tests/run builds the \
         whole workspace first) or point {var} at it",
        path.display()
    );
    path
}

/// A private bus: `dbus-daemon` with a config that lets every local user own and call
/// anything, as a test bus should.
pub struct Bus {
    child: Child,
    /// The address to put in `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    /// Starts the daemon and waits until it listens.
    pub fn start() -> Bus {
        let dir = tempfile::Builder::new()
            .prefix("vmadm-bus-")
            .tempdir()
            .unwrap();
        // Tests also call as an unprivileged uid: let it reach the socket.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        // Its stderr goes to a file (shown if a test fails): as non-init it always warns
        // that it cannot raise its fd limit, which is noise.
        let log = dir.path().join("bus.log");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run dbus-daemon ({e}): install it (tests/deps/vmadm.txt)")
            });
        // The address is printed once the daemon listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed no address: {line:?}"
        );
        Bus {
            child,
            address,
            _dir: dir,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self._dir.path().join("bus.log"));
            eprintln!("--- dbus-daemon log\n{}", log.unwrap_or_default());
        }
    }
}

/// What a vmadm run printed and returned.
pub struct Run {
    /// Exit status.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with both outputs unless the exit status is `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit status\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the run succeeded; returns it.
    #[track_caller]
    pub fn ok(self) -> Run {
        self.expect(0)
    }
}

/// A vmadm command line against `bus_address`, not yet run.
pub fn vmadm_command(bus_address: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(vmadm_bin());
    cmd.args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
        .stdin(Stdio::null());
    cmd
}

/// Runs vmadm to completion.
pub fn vmadm(bus_address: &str, args: &[&str]) -> Run {
    Run::from(vmadm_command(bus_address, args).output().unwrap())
}

/// Runs vmadm with `input` on stdin.
pub fn vmadm_stdin(bus_address: &str, args: &[&str], input: &str) -> Run {
    use std::io::Write;
    let mut child = vmadm_command(bus_address, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Run::from(child.wait_with_output().unwrap())
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with
/// `what`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads what a child wrote to a pipe so far, without blocking forever: the reader
/// runs on a thread that sends lines over a channel.
pub struct LineReader {
    rx: std::sync::mpsc::Receiver<String>,
}

impl LineReader {
    /// Starts reading lines from `source`.
    pub fn new(source: impl Read + Send + 'static) -> LineReader {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(source).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineReader { rx }
    }

    /// The next line, or panics after `timeout`.
    #[track_caller]
    pub fn next(&self, timeout: Duration) -> String {
        self.rx
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no line within {timeout:?}: {e}"))
    }

    /// Lines until one satisfies `pred` (returned), or panics after `timeout`.
    #[track_caller]
    pub fn until(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> (Vec<String>, String) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return (seen, line),
                Ok(line) => seen.push(line),
                Err(e) => panic!("no matching line within {timeout:?} ({e}); saw {seen:#?}"),
            }
        }
    }
}

/// Kills a child process and reaps it (for Drop impls).
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// True when `path` exists (a tiny readability helper for asserts).
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A real node in host mode: a private bus, `init --pool` on a temp pool holding a
/// busybox image (`busybox@1.36`, built here from busybox-static), and vmadm pointed at
/// them. Dropping it stops init (which stops its instances), then anything left.
pub struct Node {
    init: Child,
    /// The pool directory.
    pub pool: PathBuf,
    /// init's run directory (sockets, pidfiles).
    pub run_dir: PathBuf,
    /// The UUID of the installed busybox image.
    pub image_uuid: String,
    /// init's log (stdout and stderr).
    pub log: PathBuf,
    /// The bus (dropped after init).
    pub bus: Bus,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts everything and waits until init answers on the bus.
    pub fn start() -> Node {
        let bus = Bus::start();
        let dir = tempfile::Builder::new()
            .prefix("vmadm-node-")
            .tempdir()
            .unwrap();
        let pool = dir.path().join("pool");
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(pool.join("manifests")).unwrap();
        std::fs::create_dir_all(&run_dir).unwrap();
        let image_uuid = install_busybox_image(dir.path(), &pool);
        let log = dir.path().join("init.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let init = Command::new(sibling_bin("init"))
            .arg("--pool")
            .arg(&pool)
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--bus-address")
            .arg(&bus.address)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("SKERRY_ZONE_BIN", sibling_bin("zone"))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("cannot start init");
        let mut node = Node {
            init,
            pool,
            run_dir,
            image_uuid,
            log,
            bus,
            _dir: dir,
        };
        let address = node.bus.address.clone();
        wait_for(
            "init to serve org.skerry.Node1",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = node.init.try_wait() {
                    panic!("init exited with {status}:\n{}", node.log_text());
                }
                (vmadm(&address, &["list"]).code == 0).then_some(())
            },
        );
        node
    }

    /// Runs vmadm against this node.
    pub fn vmadm(&self, args: &[&str]) -> Run {
        vmadm(&self.bus.address, args)
    }

    /// Runs vmadm with `input` on stdin.
    pub fn vmadm_stdin(&self, args: &[&str], input: &str) -> Run {
        vmadm_stdin(&self.bus.address, args, input)
    }

    /// A vmadm command against this node, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        vmadm_command(&self.bus.address, args)
    }

    /// What init logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The state `vmadm list` shows for `name`, if it is listed.
    pub fn state(&self, name: &str) -> Option<String> {
        let run = self.vmadm(&["list", "-p", "-o", "alias,state"]);
        run.stdout.lines().find_map(|l| {
            let (alias, state) = l.split_once(':')?;
            (alias == name).then(|| state.to_string())
        })
    }

    /// Waits until `name` is in `state`.
    #[track_caller]
    pub fn wait_state(&self, name: &str, state: &str) {
        wait_for(
            &format!("{name} to be {state}"),
            Duration::from_secs(30),
            || (self.state(name).as_deref() == Some(state)).then_some(()),
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGTERM: init stops its instances, then exits (host mode).
        let pid = nix::unistd::Pid::from_raw(self.init.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.init.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_and_reap(&mut self.init);
        // Monitors init failed to stop (it was killed, or a test failed mid-way) are
        // ours to clean up: their pidfiles are in our run directory.
        for pidfile in pidfiles(&self.run_dir) {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if std::thread::panicking() {
            eprintln!("--- init log\n{}", self.log_text());
        }
    }
}

fn pidfiles(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(pidfiles(&path));
        } else if path.extension().is_some_and(|x| x == "pid") {
            out.push(path);
        }
    }
    out
}

/// Builds a busybox rootfs tarball (busybox-static with `sh` and `sleep` links), writes
/// its IMGAPI manifest, and installs it into `pool` with the real `imgadm`. Returns the
/// image UUID.
pub fn install_busybox_image(work: &Path, pool: &Path) -> String {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox is missing: install busybox-static (tests/deps/vmadm.txt)");
    let root = work.join("image-root");
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "echo", "cat", "ls", "hostname"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::os::unix::fs::symlink("/bin/busybox", root.join("sbin/init")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let tarball = work.join("busybox.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar failed");
    let sha = Command::new("sha256sum").arg(&tarball).output().unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    let sha = sha.split_whitespace().next().unwrap().to_string();
    let size = std::fs::metadata(&tarball).unwrap().len();
    let uuid = uuid::Uuid::new_v4().to_string();
    let manifest = serde_json::json!({
        "v": 2,
        "uuid": uuid,
        "owner": "00000000-0000-0000-0000-000000000000",
        "name": "busybox",
        "version": "1.36",
        "state": "active",
        "disabled": false,
        "public": true,
        "published_at": "2024-01-01T00:00:00Z",
        "type": "zone-dataset",
        "os": "linux",
        "description": "busybox test image",
        "files": [{"sha256": sha, "size": size, "compression": "none"}],
    });
    let manifest_path = work.join("busybox.json");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let out = Command::new(sibling_bin("imgadm"))
        .arg("--pool")
        .arg(pool)
        .arg("install")
        .arg("-m")
        .arg(&manifest_path)
        .arg("-f")
        .arg(&tarball)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "imgadm install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    uuid
}
