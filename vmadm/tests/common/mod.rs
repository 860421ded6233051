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

pub use testkit::{sibling_bin, wait_for, Bus};
use testkit::{HostInit, InitOptions};

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
    init: HostInit,
    /// The pool directory.
    pub pool: PathBuf,
    /// init's run directory (sockets, pidfiles).
    pub run_dir: PathBuf,
    /// The UUID of the installed busybox image.
    pub image_uuid: String,
    /// init's log (stderr; its console lines are collected by [`HostInit`]).
    pub log: PathBuf,
    /// The bus (dropped after init).
    pub bus: Bus,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts everything and waits until init answers on the bus.
    pub fn start() -> Node {
        Node::start_with_config("")
    }

    /// [`Node::start`] with this `config/node.kdl` (none when empty).
    pub fn start_with_config(node_kdl: &str) -> Node {
        let bus = Bus::permissive();
        let dir = tempfile::Builder::new()
            .prefix("vmadm-node-")
            .tempdir()
            .unwrap();
        let pool = dir.path().join("pool");
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(pool.join("manifests")).unwrap();
        std::fs::create_dir_all(&run_dir).unwrap();
        if !node_kdl.is_empty() {
            std::fs::create_dir_all(pool.join("config")).unwrap();
            std::fs::write(pool.join("config/node.kdl"), node_kdl).unwrap();
        }
        let image_uuid = install_busybox_image(dir.path(), &pool);
        let log = dir.path().join("init.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let init = HostInit::start(
            &bus,
            InitOptions {
                binary: sibling_bin("init"),
                pool: &pool,
                run_dir: &run_dir,
                zone: sibling_bin("zone"),
                stderr: log_file.into(),
                configure: Box::new(|cmd| {
                    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
                        .env("RUST_LOG", "debug");
                }),
            },
        );
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
                if let Some(status) = node.init.exited() {
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

    /// A scratch directory beside the pool, removed with the node.
    pub fn work_dir(&self) -> &Path {
        self._dir.path()
    }

    /// init's pid.
    pub fn init_pid(&self) -> u32 {
        self.init.pid()
    }

    /// A vmadm command against this node, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        vmadm_command(&self.bus.address, args)
    }

    /// What init logged so far, then its console lines.
    pub fn log_text(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("{log}{}", self.init.lines().join("\n"))
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
        self.init.terminate(Duration::from_secs(20));
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
    let root = work.join("image-root");
    testkit::busybox_rootfs(&root, &["sh", "sleep", "echo", "cat", "ls", "hostname"]);
    std::os::unix::fs::symlink("/bin/busybox", root.join("sbin/init")).unwrap();
    let tarball = work.join("busybox.tar");
    testkit::tar_dir(&root, &tarball);
    install_image(pool, &tarball, "busybox", "1.36", "zone-dataset")
}

/// Installs a small real boot disk ([`testkit::boot_disk`]: ext4 with
/// `/boot/vmlinuz-test`) as the `zvol` image `tiny-hvm@1` into `pool` (enough to
/// provision HVM instances; nothing boots from it). Returns the image UUID.
pub fn install_tiny_hvm_image(work: &Path, pool: &Path) -> String {
    let disk = work.join("tiny-hvm.raw");
    testkit::boot_disk(&disk);
    install_image(pool, &disk, "tiny-hvm", "1", "zvol")
}

/// Writes the IMGAPI manifest of `file` and installs both with the real `imgadm`.
fn install_image(pool: &Path, file: &Path, name: &str, version: &str, kind: &str) -> String {
    let manifest = testkit::image_manifest(file, name, version, kind);
    let uuid = manifest["uuid"].as_str().unwrap().to_string();
    let manifest_path = file.with_extension("manifest.json");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let out = Command::new(sibling_bin("imgadm"))
        .arg("--pool")
        .arg(pool)
        .arg("install")
        .arg("-m")
        .arg(&manifest_path)
        .arg("-f")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "imgadm install {name}@{version} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    uuid
}
