//! `init` in host mode for integration tests (init's and vmadm's): spawned on a pool
//! and a private bus, its console lines (stdout) collected, stopped with SIGTERM on
//! drop. One implementation of what both test suites need of a running node.

use crate::Bus;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A sibling binary of the workspace (init, zone, imgadm...): `SKERRY_<NAME>_BIN` when
/// set, else the one in the same target directory as the running test
/// (`<target>/debug/deps/<test>` -> `<target>/debug/<name>`). A missing one fails the
/// test saying how to build it.
pub fn sibling_bin(name: &str) -> PathBuf {
    let var = format!("SKERRY_{}_BIN", name.to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary lives in <target>/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {name}` (tests/run builds the \
         whole workspace first) or point {var} at it",
        path.display()
    );
    path
}

/// How to start init: the binary, the pool, and what goes beside them.
pub struct InitOptions<'a> {
    /// The init binary.
    pub binary: PathBuf,
    /// `--pool`.
    pub pool: &'a Path,
    /// `--run-dir`.
    pub run_dir: &'a Path,
    /// The zone binary init spawns monitors with (`SKERRY_ZONE_BIN`).
    pub zone: PathBuf,
    /// Where init's stderr (its log) goes.
    pub stderr: Stdio,
    /// Extra arguments and environment.
    pub configure: Box<dyn FnOnce(&mut Command) + 'a>,
}

/// A running `init --pool`: console lines are collected as it prints them.
pub struct HostInit {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl HostInit {
    /// Starts init on `bus` with `opts`.
    pub fn start(bus: &Bus, opts: InitOptions<'_>) -> HostInit {
        let mut cmd = Command::new(&opts.binary);
        cmd.arg("--pool")
            .arg(opts.pool)
            .arg("--run-dir")
            .arg(opts.run_dir)
            .arg("--bus-address")
            .arg(&bus.address)
            .env("SKERRY_ZONE_BIN", &opts.zone)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(opts.stderr);
        (opts.configure)(&mut cmd);
        let mut child = cmd.spawn().expect("start init");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout is piped");
        let collected = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("init| {line}");
                collected.lock().unwrap().push(line);
            }
        });
        HostInit {
            child: Some(child),
            lines,
        }
    }

    /// init's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("init is running").id()
    }

    /// The console lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// `Some(status)` once init has exited (it should not on its own).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for a console line containing `needle`; returns it.
    #[track_caller]
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no console line with {needle:?} within {timeout:?}; got:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many console lines contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// kill -9, leaving monitors behind (they must survive).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (init stops every instance and exits), waiting up to `timeout`; then
    /// SIGKILL. Returns whether init exited by itself; true when it was not running.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

impl Drop for HostInit {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(30));
    }
}
