//! Image imports in a child process: [`ChildImports`] runs `imgadm import -j` in a
//! cgroup of its own, capped in memory, tasks and time, so that what an image server
//! sends (JSON, archives, compressed streams) is parsed outside PID 1. A child that
//! crashes, is OOM-killed at its cap or runs out of time fails the import of that image
//! only, with the reason; init and every other instance go on.

use crate::images::{reference, resolved};
use crate::monitor::watch::{self, Exit};
use crate::runtime::{Images, ResolvedImage, RuntimeError};
use host::cgroup::{Cgroup, Hierarchy, Limits};
use imgadm::ImageStore;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use spec::ImageRef;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one import child may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    /// Memory cap of its cgroup, in bytes (no swap on top).
    pub memory: u64,
    /// Most tasks (processes and threads) in its cgroup.
    pub pids: u64,
    /// Wall-clock time before it is killed.
    pub time: Duration,
}

impl Default for ChildLimits {
    fn default() -> Self {
        ChildLimits {
            // imgadm streams with fixed buffers (peak RSS ~8 MiB in imgadm/bench); the
            // largest allocation it allows is the xz decoder's 256 MiB memory limit,
            // plus qcow2 tables (2 MiB each). 512 MiB covers that with room for the
            // page cache an import dirties, which the kernel reclaims under the cap.
            memory: 512 << 20,
            // The main thread, reqwest's runtime and DNS threads: a handful.
            pids: 64,
            // A backstop for a child stuck past imgadm's own per-read bounds: 6 hours
            // are ~1.3 GiB at imgadm's slowest accepted rate (64 KiB/s).
            time: Duration::from_secs(6 * 3600),
        }
    }
}

/// Most of the child's stdout kept: its answer is one JSON line.
const MAX_ANSWER: usize = 64 << 10;
/// The end of the child's stderr kept for a message when it gives no answer.
const MAX_STDERR_TAIL: usize = 2 << 10;

/// Why an import child could not be started or waited for.
#[derive(Debug, thiserror::Error)]
enum ChildError {
    #[error("{0}")]
    Cgroup(#[from] host::cgroup::CgroupError),
    #[error("starting {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("waiting for the import process: {0}")]
    Wait(nix::Error),
}

/// Images from `<pool>/images`, imported by `imgadm` children.
pub struct ChildImports {
    store: ImageStore,
    imgadm: PathBuf,
    sources: Vec<String>,
    limits: ChildLimits,
}

/// Numbers the children's cgroups (`skerry/import-<init pid>-<n>`), process-wide: two
/// stores in one process must never share (and remove) one cgroup.
static SEQ: AtomicU64 = AtomicU64::new(0);

impl ChildImports {
    /// Imports into `store` with the `imgadm` binary at `imgadm`, passing it the extra
    /// `sources` init was given.
    pub fn new(store: ImageStore, imgadm: PathBuf, sources: Vec<String>) -> ChildImports {
        ChildImports {
            store,
            imgadm,
            sources,
            limits: ChildLimits::default(),
        }
    }

    /// These limits instead of the defaults (tests use small ones).
    pub fn with_limits(mut self, limits: ChildLimits) -> ChildImports {
        self.limits = limits;
        self
    }

    /// Runs one child to its end: its exit, answer and what its cgroup saw.
    fn run(&self, image: &str) -> Result<Outcome, ChildError> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("import-{}-{n}", std::process::id());
        let hierarchy = Hierarchy::detect()?;
        let cg = hierarchy.create(&name)?;
        let outcome = self.run_in(&*cg, image);
        let oom_kills = cg.oom_kills().unwrap_or(0);
        // Kills anything the child left running.
        if let Err(e) = cg.remove() {
            log::warn!("import of {image}: {e}");
        }
        outcome.map(|o| Outcome { oom_kills, ..o })
    }

    fn run_in(&self, cg: &dyn Cgroup, image: &str) -> Result<Outcome, ChildError> {
        cg.set_limits(&Limits {
            memory: Some(self.limits.memory),
            cpu_cap: 0,
            pids: Some(self.limits.pids),
        })?;
        let procs = cg
            .procs_files()
            .into_iter()
            .map(|p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(|e| host::cgroup::CgroupError {
                        path: p,
                        reason: format!("opening: {e}"),
                    })
            })
            .collect::<Result<Vec<File>, _>>()?;
        let fds: Vec<RawFd> = procs.iter().map(|f| f.as_raw_fd()).collect();
        let mut cmd = Command::new(&self.imgadm);
        cmd.arg("--pool").arg(self.store.pool());
        if !self.sources.is_empty() {
            cmd.arg("--sources").arg(self.sources.join(","));
        }
        cmd.args(["import", "-q", "-j", image])
            .env_remove("SKERRY_SOURCES")
            .env_remove("SKERRY_POOL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls run: write(2) on
        // descriptors opened before the fork (joining the cgroup before imgadm runs a
        // single instruction of its own) and prctl(2).
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // init gone (host mode killed): the import goes with it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| ChildError::Spawn {
            bin: self.imgadm.clone(),
            source,
        })?;
        drop(procs);
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut io = ChildIo::new(stdout.into(), stderr.into());
        let deadline = Instant::now() + self.limits.time;
        let mut timed_out = false;
        // No pidfd: the child is already gone (PID 1's reaper noted its status).
        if let Ok(pidfd) = watch::pidfd_open(pid) {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() && !timed_out {
                    timed_out = true;
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                // Wake at least once a second to check the deadline.
                let wait = left.clamp(Duration::from_millis(10), Duration::from_secs(1));
                if io.wait(&pidfd, wait).map_err(ChildError::Wait)? {
                    break;
                }
            }
        }
        io.drain();
        let exit = reap(pid).map_err(ChildError::Wait)?;
        Ok(Outcome {
            exit,
            timed_out,
            oom_kills: 0,
            answer: io.answer,
            stderr_tail: io.stderr_tail,
        })
    }

    /// The error for an import that ended as `o` did.
    fn failure(&self, o: &Outcome) -> String {
        let said = answer_of(&o.answer);
        let tail = String::from_utf8_lossy(&o.stderr_tail);
        let tail = tail.trim();
        let stderr = if tail.is_empty() {
            String::new()
        } else {
            format!("; its last words: {tail}")
        };
        if o.timed_out {
            return format!(
                "the import ran past its time limit of {} s and was killed",
                self.limits.time.as_secs()
            );
        }
        if o.exit == Exit::Signal(Signal::SIGKILL) && o.oom_kills > 0 {
            return format!(
                "the import process was killed by the kernel at its memory cap of {} MiB (out of memory)",
                self.limits.memory >> 20
            );
        }
        match (said, o.exit) {
            (Some(Answer::Error(e)), _) => e,
            (_, Exit::Signal(s)) => format!("the import process crashed ({s}){stderr}"),
            (Some(Answer::Imported(_)), Exit::Code(0)) => {
                "the image imgadm reported is not in the store".into()
            }
            (_, Exit::Code(c)) => format!("imgadm exited with code {c} without an answer{stderr}"),
            (_, Exit::Unknown) => format!("the import process ended, status unknown{stderr}"),
        }
    }
}

/// How one child ended.
struct Outcome {
    exit: Exit,
    timed_out: bool,
    oom_kills: u64,
    answer: Vec<u8>,
    stderr_tail: Vec<u8>,
}

/// What `imgadm import -j` answered.
enum Answer {
    Imported(uuid::Uuid),
    Error(String),
}

/// The last JSON line of `out`, if it is an answer.
fn answer_of(out: &[u8]) -> Option<Answer> {
    let text = std::str::from_utf8(out).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if let Some(e) = v["error"].as_str() {
        return Some(Answer::Error(e.to_string()));
    }
    v["uuid"]
        .as_str()
        .and_then(|u| uuid::Uuid::parse_str(u).ok())
        .map(Answer::Imported)
}

impl Images for ChildImports {
    fn ensure(&self, r: &ImageRef) -> Result<ResolvedImage, RuntimeError> {
        let image = reference(r);
        let fail = |message: String| RuntimeError::Image {
            image: image.clone(),
            message,
        };
        if let Some(i) = self.installed(r)? {
            return Ok(i);
        }
        log::info!("image {image} is not installed; importing it (imgadm child)");
        let o = self.run(&image).map_err(|e| fail(e.to_string()))?;
        if let (Exit::Code(0) | Exit::Unknown, Some(Answer::Imported(uuid))) =
            (o.exit, answer_of(&o.answer))
        {
            if let Some(img) = self.store.get(&uuid).map_err(|e| fail(e.to_string()))? {
                log::info!("imported image {} {}@{}", img.uuid, img.name, img.version);
                return Ok(resolved(img));
            }
        }
        // A child that did not end by itself could not clean up after itself.
        if !matches!(answer_of(&o.answer), Some(Answer::Error(_))) || o.timed_out {
            match self.store.clean_abandoned() {
                Ok(gone) if !gone.is_empty() => {
                    log::info!("import of {image}: removed the leftovers of {gone:?}")
                }
                Ok(_) => {}
                Err(e) => log::warn!("import of {image}: cleaning up: {e}"),
            }
        }
        Err(fail(self.failure(&o)))
    }

    fn installed(&self, r: &ImageRef) -> Result<Option<ResolvedImage>, RuntimeError> {
        crate::images::installed_in(&self.store, r)
    }
}

/// The child's stdout and stderr, read as they come without blocking on either.
struct ChildIo {
    out: Option<File>,
    err: Option<File>,
    answer: Vec<u8>,
    stderr_tail: Vec<u8>,
}

impl ChildIo {
    fn new(out: OwnedFd, err: OwnedFd) -> ChildIo {
        for fd in [&out, &err] {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
        }
        ChildIo {
            out: Some(File::from(out)),
            err: Some(File::from(err)),
            answer: Vec::new(),
            stderr_tail: Vec::new(),
        }
    }

    /// Waits up to `timeout` for output or the child's exit; reads what came. True once
    /// the child has exited.
    fn wait(&mut self, pidfd: &OwnedFd, timeout: Duration) -> nix::Result<bool> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        for f in [&self.out, &self.err].into_iter().flatten() {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
        let exited = fds[0].any().unwrap_or(false);
        drop(fds);
        self.drain();
        Ok(exited)
    }

    /// Reads whatever is ready now: the answer up to [`MAX_ANSWER`], the last
    /// [`MAX_STDERR_TAIL`] bytes of stderr; the rest is read and dropped.
    fn drain(&mut self) {
        read_ready(
            &mut self.out,
            |chunk, kept| {
                let room = MAX_ANSWER.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            },
            &mut self.answer,
        );
        read_ready(
            &mut self.err,
            |chunk, kept| {
                kept.extend_from_slice(chunk);
                let over = kept.len().saturating_sub(MAX_STDERR_TAIL);
                kept.drain(..over);
            },
            &mut self.stderr_tail,
        );
    }
}

/// Reads `pipe` until it would block, handing each chunk to `keep`; closes it at EOF.
fn read_ready(pipe: &mut Option<File>, keep: impl Fn(&[u8], &mut Vec<u8>), kept: &mut Vec<u8>) {
    let mut buf = [0u8; 8192];
    while let Some(f) = pipe.as_mut() {
        match f.read(&mut buf) {
            Ok(0) => *pipe = None,
            Ok(n) => keep(&buf[..n], kept),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => *pipe = None,
        }
    }
}

/// Collects the exited child's status: ours to reap, or (as PID 1) noted by the
/// orphan reaper when it got there first.
fn reap(pid: u32) -> nix::Result<Exit> {
    match waitid(Id::Pid(Pid::from_raw(pid as i32)), WaitPidFlag::WEXITED) {
        Ok(WaitStatus::Exited(_, c)) => Ok(Exit::Code(c)),
        Ok(WaitStatus::Signaled(_, s, _)) => Ok(Exit::Signal(s)),
        Ok(_) => Ok(Exit::Unknown),
        Err(nix::Error::ECHILD) => {
            // The reaper notes the status right after its waitpid: allow it a moment.
            let until = Instant::now() + Duration::from_secs(1);
            loop {
                if let Some(e) = watch::take_reaped(pid) {
                    return Ok(e);
                }
                if Instant::now() > until {
                    return Ok(Exit::Unknown);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Err(e) => Err(e),
    }
}
