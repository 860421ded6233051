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
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
