//! One node under test: `build-image/run-node` (QEMU) with its serial console on a
//! pipe. The harness waits for console lines, types commands into the node's shell,
//! and stops the node; dropping a [`Node`] always stops QEMU.

use crate::boot_image::{script, BootImage};
use crate::{io_err, tail, E2eError, Result};
use regex::Regex;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How to boot a node: the options of `build-image/run-node`.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    args: Vec<OsString>,
}

impl NodeBuilder {
    /// A node booting `image`, stopped by run-node itself after `limit` at the latest.
    pub fn new(image: &BootImage, limit: Duration) -> NodeBuilder {
        let mut b = NodeBuilder { args: Vec::new() };
        b.arg("--image-dir").arg(&image.dir);
        b.arg("--timeout").arg(limit.as_secs().to_string());
        b
    }

    fn arg(&mut self, a: impl Into<OsString>) -> &mut Self {
        self.args.push(a.into());
        self
    }

    /// Boot through iPXE over TFTP like a PXE node.
    pub fn pxe(mut self) -> Self {
        self.arg("--pxe");
        self
    }

    /// Put this directory's manifests into the pool.
    pub fn manifests(mut self, dir: &Path) -> Self {
        self.arg("--manifests").arg(dir);
        self
    }

    /// Serve these images to the node (`none`: no image source).
    pub fn images(mut self, dir: &Path) -> Self {
        self.arg("--images").arg(dir);
        self
    }

    /// Keep the pool in this disk image across boots.
    pub fn pool_disk(mut self, disk: &Path) -> Self {
        self.arg("--pool-disk").arg(disk);
        self
    }

    /// The new pool's `config/node.kdl` (run-node refuses it for an existing pool disk).
    pub fn node_config(mut self, file: &Path) -> Self {
        self.arg("--node-config").arg(file);
        self
    }

    /// Append to the node's kernel command line.
    pub fn cmdline(mut self, extra: &str) -> Self {
        self.arg("--cmdline").arg(extra);
        self
    }

    /// Forward the host's 127.0.0.1:`port` to the node's SSH server.
    pub fn ssh_port(mut self, port: u16) -> Self {
        self.arg("--ssh-port").arg(port.to_string());
        self
    }

    /// Starts QEMU. The console is captured from here on. Waits first until no other
    /// node of this test binary runs (see [`ONE_NODE`]).
    pub fn boot(self) -> Result<Node> {
        let one_at_a_time = ONE_NODE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let log = console_log_path();
        BOOT_LOGS.with(|logs| logs.borrow_mut().push(log.clone()));
        let file = std::fs::create_dir_all(log.parent().expect("has a parent"))
            .and_then(|_| std::fs::File::create(&log))
            .map_err(io_err(format!("creating {}", log.display())))?;
        let mut cmd = script("build-image/run-node");
        cmd.args(&self.args)
            .arg("--timeline")
            .arg(log.with_extension("timeline"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: the last-resort kill reaches QEMU too.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(io_err("starting build-image/run-node"))?;
        let console = Arc::new(Shared::default());
        let stderr = Arc::new(Shared::default());
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let (c, e) = (console.clone(), stderr.clone());
        eprintln!("e2e: node console -> {}", log.display());
        std::thread::spawn(move || pump(out, &c, Some(file)));
        std::thread::spawn(move || pump(err, &e, None));
        Ok(Node {
            stdin: child.stdin.take(),
            child,
            console,
            stderr,
            cursor: 0,
            commands: 0,
            _one_at_a_time: one_at_a_time,
        })
    }
}

/// Text one pipe produced so far, and whether it ended.
#[derive(Default)]
struct Shared {
    state: Mutex<(String, bool)>,
    changed: Condvar,
}

thread_local! {
    /// The console logs of the nodes this thread (one test) booted.
    static BOOT_LOGS: std::cell::RefCell<Vec<std::path::PathBuf>> = Default::default();
}

/// Runs a test that boots nodes with HVM guests, once more when it fails on the known
/// flaw of TCG's nested SVM (`testkit::tcg`), judged from the panic and the consoles
/// of the nodes it booted (their last 256 KiB each).
pub fn retry_on_host_flaw(what: &str, body: impl Fn()) {
    testkit::tcg::retry_test_on_host_flaw(
        what,
        || {
            BOOT_LOGS.with(|logs| logs.borrow_mut().clear());
            body()
        },
        || {
            BOOT_LOGS.with(|logs| {
                logs.borrow()
                    .iter()
                    .map(|log| tail_of_file(log, 256 * 1024))
                    .collect()
            })
        },
    )
}

/// The last `max` bytes of `path` as text (empty when it cannot be read).
fn tail_of_file(path: &Path, max: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(len.saturating_sub(max))).is_ok() {
        let _ = file.take(max).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `<target>/e2e/logs/node-<pid>-<n>.log`: each boot's full console, for post-mortems
/// (and `.timeline` beside it: run-node's boot timeline).
fn console_log_path() -> std::path::PathBuf {
    static BOOTS: AtomicU32 = AtomicU32::new(0);
    let n = BOOTS.fetch_add(1, Ordering::SeqCst);
    crate::boot_image::e2e_dir()
        .join("logs")
        .join(format!("node-{}-{n}.log", std::process::id()))
}

fn pump(mut from: impl Read, to: &Shared, mut log: Option<std::fs::File>) {
    let mut buf = [0u8; 8192];
    loop {
        let n = from.read(&mut buf).unwrap_or(0);
        if let Some(f) = log.as_mut() {
            let _ = f.write_all(&buf[..n]);
        }
        let mut g = to.state.lock().unwrap_or_else(|p| p.into_inner());
        if n == 0 {
            g.1 = true;
            to.changed.notify_all();
            return;
        }
        // Serial lines end in "\r\n"; keep plain "\n" so `(?m)^…$` regexes work.
        g.0.push_str(&String::from_utf8_lossy(&buf[..n]).replace('\r', ""));
        to.changed.notify_all();
    }
}

/// A running node.
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<Shared>,
    stderr: Arc<Shared>,
    /// Console offset up to which earlier waits consumed output.
    cursor: usize,
    commands: u32,
    /// Held while this node runs; dropped last, after QEMU is gone.
    _one_at_a_time: MutexGuard<'static, ()>,
}

/// One node at a time per test binary. A node is QEMU TCG with 2 vCPUs, and the HVM
/// tests run nested guests inside it; two such nodes on a 2-core CI machine starve
/// each other's vCPU threads for minutes (the node kernels then report RCU stalls
/// and soft lockups and miss every deadline), so the tests of one file (which cargo
/// runs in parallel) take turns to boot.
static ONE_NODE: Mutex<()> = Mutex::new(());

impl Node {
    /// Everything the console showed so far.
    pub fn console(&self) -> String {
        self.console
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// What run-node printed on stderr so far (its timeline, QEMU errors).
    pub fn run_node_stderr(&self) -> String {
        self.stderr
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Waits until the console, after what earlier waits consumed, matches `pattern`;
    /// returns the capture groups (0 = the whole match) and consumes up to its end.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<Vec<String>> {
        self.wait(pattern, timeout, true)
    }

    /// Like [`Node::wait_for`] but consumes nothing: for lines whose order among
    /// each other is not fixed (instances coming up in parallel).
    pub fn wait_seen(&mut self, pattern: &str, timeout: Duration) -> Result<Vec<String>> {
        self.wait(pattern, timeout, false)
    }

    fn wait(&mut self, pattern: &str, timeout: Duration, consume: bool) -> Result<Vec<String>> {
        let re = Regex::new(pattern).expect("test regexes are valid");
        let deadline = Instant::now() + timeout;
        let mut g = self.console.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(caps) = re.captures(&g.0[self.cursor..]) {
                let end = self.cursor + caps.get(0).map_or(0, |m| m.end());
                let groups = caps
                    .iter()
                    .map(|m| m.map_or(String::new(), |m| m.as_str().to_string()))
                    .collect();
                if consume {
                    self.cursor = end;
                }
                return Ok(groups);
            }
            if g.1 {
                let console_tail = tail(&g.0, 60);
                drop(g);
                // Let the stderr pump finish: run-node prints its timeline on exit.
                std::thread::sleep(Duration::from_millis(200));
                return Err(E2eError::NodeExited {
                    pattern: pattern.into(),
                    tail: console_tail,
                    stderr: tail(&self.run_node_stderr(), 30),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(E2eError::ConsoleTimeout {
                    pattern: pattern.into(),
                    timeout,
                    tail: tail(&g.0, 60),
                });
            }
            g = self
                .console
                .changed
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Types `text` on the node's console.
    pub fn send(&mut self, text: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| E2eError::Io {
            context: "writing to the node console".into(),
            source: std::io::ErrorKind::BrokenPipe.into(),
        })?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(io_err("writing to the node console"))
    }

    /// Runs `command` in the node's console shell; returns its output and exit status.
    /// The end marker is split in the typed line so the shell's echo never matches it.
    pub fn shell(&mut self, command: &str, timeout: Duration) -> Result<(String, i32)> {
        self.commands += 1;
        let n = self.commands;
        self.send(&format!(
            "echo E2E''BEGIN{n}; {command}; echo E2E''END{n} rc=$?\n"
        ))?;
        self.wait_for(&format!(r"(?m)^E2EBEGIN{n}$"), timeout)?;
        let caps = self.wait_for(&format!(r"(?s)^\n?(.*?)\n?E2EEND{n} rc=(\d+)"), timeout)?;
        Ok((caps[1].clone(), caps[2].parse().unwrap_or(-1)))
    }

    /// Waits for QEMU (and run-node) to end, e.g. after the node was told to shut
    /// down; returns run-node's stderr (the boot timeline).
    pub fn wait_exit(mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    std::thread::sleep(Duration::from_millis(200));
                    let stderr = self.run_node_stderr();
                    if status.success() {
                        return Ok(stderr);
                    }
                    return Err(E2eError::Command {
                        what: "build-image/run-node".into(),
                        detail: format!("{status}\n{}", tail(&stderr, 30)),
                    });
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Ok(None) => {
                    return Err(E2eError::ConsoleTimeout {
                        pattern: "<the node powers off>".into(),
                        timeout,
                        tail: tail(&self.console(), 40),
                    })
                }
                Err(e) => return Err(io_err("waiting for run-node")(e)),
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid (and then its process group, which
        // boot() created for it) only sends signals; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: as above; the group is the one boot() made for this run-node.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
