//! `zone monitor --config <pool>/<uuid>/config.json`: the per-zone process init spawns.
//!
//! It boots the zone described by [`InstanceConfig`], keeps `monitor.json` current,
//! logs the console, serves the JSON-lines socket of `spec::monitor`, restarts a zone
//! that rebooted itself, and exits per the contract: 0 after a clean stop or power-off,
//! 1 on failure. It is a single-threaded poll loop, so it can fork zones at any time,
//! and it depends on nothing of its parent: own session, stdio on its own log file.

mod client;
mod config;

pub use client::{instance_dir, request};
pub use config::launch_spec;

use crate::cgroups::Hierarchy;
use crate::console::{ConsoleInput, ConsoleLog, Pty, RelayDecoder, LOG_LIMIT};
use crate::error::{Context, Result, ZoneError};
use crate::halt;
use crate::launch::{self, LaunchSpec, Zone, ZoneExit};
use crate::quota::{self, LayerQuota, QuotaStatus};
use crate::rootfs::{Stage, Upper};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use spec::api::states;
use spec::monitor::{
    self as contract, InstanceConfig, LockError, MonitorLock, MonitorRequest, MonitorResponse,
    MonitorStatus,
};
use std::collections::BTreeMap;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// A zone whose init exits sooner than this after starting, without being asked to,
/// is reported as failed ("exits at once") instead of stopped.
pub const EARLY_EXIT: Duration = Duration::from_secs(1);
/// Grace period of a reboot request and of SIGTERM to the monitor.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Entry point of `zone monitor`; returns the process exit code.
pub fn main(config_path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(config_path)
        .ctx(|| format!("reading {}", config_path.display()))?;
    let config: InstanceConfig = serde_json::from_str(&text)
        .map_err(|e| ZoneError::Invalid(format!("{}: {e}", config_path.display())))?;
    let dir = config.pool.join(&config.uuid);
    detach(&dir.join("monitor.log"))?;
    let mut monitor = Monitor::new(config)?;
    let code = monitor.run();
    monitor.shutdown();
    Ok(code)
}

/// Own session, stdio away from the parent's (so init dying cannot hurt us).
fn detach(log: &Path) -> Result<()> {
    let _ = nix::unistd::setsid(); // already a session leader when init spawned us so
    let null = std::fs::File::open("/dev/null").ctx(|| "opening /dev/null".into())?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .ctx(|| format!("opening {}", log.display()))?;
    // SAFETY: dup2 onto the stdio numbers of fds we own.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(out.as_raw_fd(), 2);
    }
    Ok(())
}

/// What the monitor was asked to do with the running zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Stop,
    Reboot,
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// Our end of one console relay, and how to read what its client sends.
struct Relay {
    fd: OwnedFd,
    input: RelayDecoder,
}

struct Monitor {
    lock: MonitorLock,
    config: InstanceConfig,
    spec: LaunchSpec,
    hierarchy: Hierarchy,
    stage: Stage,
    listener: UnixListener,
    signals: SignalFd,
    clients: Vec<Client>,
    zone: Option<Zone>,
    pty: Option<Pty>,
    /// Our ends of the console relays handed out by `Console`: the monitor alone reads
    /// the pty master, so the log and every attached client see all of the output.
    attached: Vec<Relay>,
    log: ConsoleLog,
    status: MonitorStatus,
    pending: Pending,
    kill_at: Option<Instant>,
    started: Instant,
    boots: u32,
    /// The writable-layer quota, set up at the first boot.
    quota: Option<QuotaStatus>,
    /// What asks this zone's init to power off when it has no `/run/initctl`.
    halt_signal: i32,
}

impl Monitor {
    fn new(config: InstanceConfig) -> Result<Monitor> {
        let spec = launch_spec(&config)?;
        let dir = config.pool.join(&config.uuid);
        std::fs::create_dir_all(&config.run_dir)
            .ctx(|| format!("creating {}", config.run_dir.display()))?;
        // First of all: a live monitor of this zone keeps it, and is never disturbed.
        let lock = MonitorLock::take(&contract::lock_path(&config.run_dir, &config.uuid)).map_err(
            |e| match e {
                LockError::Io { path, source } => {
                    ZoneError::io(format!("locking {}", path.display()), source)
                }
                held => ZoneError::Invalid(held.to_string()),
            },
        )?;
        let sock = contract::socket_path(&config.run_dir, &config.uuid);
        if UnixStream::connect(&sock).is_ok() {
            return Err(ZoneError::Invalid(format!(
                "a monitor for {} already answers on {}",
                config.uuid,
                sock.display()
            )));
        }
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).ctx(|| format!("binding {}", sock.display()))?;
        listener
            .set_nonblocking(true)
            .ctx(|| "nonblocking socket".into())?;
        let pidfile = contract::pidfile_path(&config.run_dir, &config.uuid);
        spec::atomic::write_atomic(&pidfile, format!("{}\n", std::process::id()).as_bytes())
            .ctx(|| format!("writing {}", pidfile.display()))?;
        let mut sigs = SigSet::empty();
        for s in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGCHLD,
        ] {
            sigs.add(s);
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigs), None)
            .ctx(|| "sigprocmask".into())?;
        let signals = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .ctx(|| "signalfd".into())?;
        launch::prepare_runtime()?;
        let hierarchy = Hierarchy::detect()?;
        // We hold the lock, so whatever of the zone exists belongs to a dead monitor.
        for line in launch::clean_leftovers(&spec, &hierarchy)? {
            eprintln!("zone monitor {}: {line}", config.uuid);
        }
        let stage = Stage::new(dir.join("root"))?;
        let log = ConsoleLog::open(
            &contract::console_log_path(&config.pool, &config.uuid),
            LOG_LIMIT,
        )?;
        let status = MonitorStatus {
            pid: std::process::id(),
            state: states::PROVISIONING.into(),
            instance_pid: None,
            started_at: None,
            reason: String::new(),
            details: BTreeMap::new(),
        };
        let halt_signal = halt::signal_for(&spec.image, &spec.command);
        Ok(Monitor {
            lock,
            config,
            spec,
            hierarchy,
            stage,
            listener,
            signals,
            clients: vec![],
            zone: None,
            pty: None,
            attached: Vec::new(),
            log,
            status,
            pending: Pending::None,
            kill_at: None,
            started: Instant::now(),
            boots: 0,
            halt_signal,
            quota: None,
        })
    }

    fn save(&mut self) {
        let path = contract::status_path(&self.config.pool, &self.config.uuid);
        if let Err(e) = spec::atomic::write_json_atomic(&path, &self.status) {
            eprintln!("zone monitor: writing {}: {e}", path.display());
        }
    }

    fn set_state(&mut self, state: &str, reason: impl Into<String>) {
        self.status.state = state.into();
        self.status.reason = reason.into();
        eprintln!(
            "zone monitor {}: {} {}",
            self.config.uuid, self.status.state, self.status.reason
        );
        self.save();
    }

    /// Sets up the writable-layer quota (once per monitor: the upper persists across
    /// reboots). A pool without support only yields an "unenforced" status.
    fn setup_quota(&mut self) -> Result<()> {
        let Upper::Persistent { upper, work } = &self.spec.upper else {
            return Ok(());
        };
        let spec::Kind::Zone(z) = &self.config.spec.kind else {
            return Ok(());
        };
        let q = LayerQuota {
            zone: format!("{} ({})", self.config.spec.name, self.config.uuid),
            pool: self.config.pool.clone(),
            zone_dir: self.config.pool.join(&self.config.uuid),
            upper: upper.clone(),
            work: work.clone(),
            limit: z.quota,
            id_range_start: self.config.id_range_start,
        };
        quota::prepare_layer(&q)?;
        for d in [upper, work] {
            std::fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
        }
        let status = quota::apply(&q)?;
        let d = &mut self.status.details;
        match status.detail() {
            Some(text) => d.insert("quota".into(), text),
            None => d.remove("quota"),
        };
        self.quota = Some(status);
        self.refresh_quota_used();
        Ok(())
    }

    fn refresh_quota_used(&mut self) {
        match self.quota.as_ref().and_then(QuotaStatus::used) {
            Some(u) => self
                .status
                .details
                .insert("quota_used".into(), u.to_string()),
            None => self.status.details.remove("quota_used"),
        };
    }

    /// Boots the zone once; on error records the failure.
    fn boot(&mut self) -> Result<()> {
        if self.quota.is_none() {
            self.setup_quota()?;
        }
        let pty = Pty::open(self.spec.idmap.host_id(0))?;
        let zone = launch::start(&self.spec, &mut self.stage, &self.hierarchy, Some(&pty))?;
        self.boots += 1;
        self.started = Instant::now();
        self.status.instance_pid = Some(zone.pid.as_raw() as u32);
        self.status.started_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        let d = &mut self.status.details;
        d.insert("cgroup".into(), zone.cgroup.describe());
        d.insert("id_range_start".into(), self.spec.idmap.start.to_string());
        d.insert("boots".into(), self.boots.to_string());
        d.insert(
            "console_log".into(),
            contract::console_log_path(&self.config.pool, &self.config.uuid)
                .display()
                .to_string(),
        );
        d.insert(
            "memory".into(),
            self.spec
                .limits
                .memory
                .map_or("none".into(), |m| m.to_string()),
        );
        d.insert("cpu_cap".into(), self.spec.limits.cpu_cap.to_string());
        d.insert(
            "pids".into(),
            self.spec
                .limits
                .pids
                .map_or("none".into(), |p| p.to_string()),
        );
        self.zone = Some(zone);
        self.pty = Some(pty);
        self.set_state(states::RUNNING, "");
        Ok(())
    }

    /// The main loop; returns the exit code.
    fn run(&mut self) -> i32 {
        if let Err(e) = self.boot() {
            self.set_state(states::FAILED, e.to_string());
            return 1;
        }
        loop {
            if let Some(code) = self.step() {
                return code;
            }
        }
    }

    /// One poll round; Some(exit code) when the monitor is done.
    fn step(&mut self) -> Option<i32> {
        let timeout = match self.kill_at {
            Some(t) => PollTimeout::try_from(
                t.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(60_000) as i32
                    + 1,
            )
            .unwrap_or(PollTimeout::NONE),
            None => PollTimeout::NONE,
        };
        let (listen_ready, sig_ready, zone_ready, console_ready, client_ready, attached_ready) = {
            let mut fds = vec![
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            ];
            let zone_fd = self.zone.as_ref().map(|z| z.pidfd.as_fd());
            let console_fd = self.pty.as_ref().map(|p| p.master.as_fd());
            fds.push(PollFd::new(
                zone_fd.unwrap_or(self.signals.as_fd()),
                PollFlags::POLLIN,
            ));
            fds.push(PollFd::new(
                console_fd.unwrap_or(self.signals.as_fd()),
                PollFlags::POLLIN,
            ));
            for c in &self.clients {
                fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
            }
            for a in &self.attached {
                fds.push(PollFd::new(a.fd.as_fd(), PollFlags::POLLIN));
            }
            if let Err(e) = poll(&mut fds, timeout) {
                if e != nix::errno::Errno::EINTR {
                    eprintln!("zone monitor: poll: {e}");
                }
                return None;
            }
            let r: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            (
                r[0],
                r[1],
                r[2] && zone_fd.is_some(),
                r[3] && console_fd.is_some(),
                r[4..4 + self.clients.len()].to_vec(),
                r[4 + self.clients.len()..].to_vec(),
            )
        };
        if console_ready {
            self.pump_console();
        }
        for i in (0..attached_ready.len()).rev() {
            if attached_ready[i] && !self.relay_input(i) {
                self.attached.remove(i);
            }
        }
        if sig_ready {
            while let Ok(Some(info)) = self.signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == Signal::SIGTERM as i32 || sig == Signal::SIGINT as i32 {
                    self.request_stop(false, DEFAULT_GRACE, Pending::Stop);
                }
            }
        }
        if listen_ready {
            while let Ok((stream, _)) = self.listener.accept() {
                let _ = stream.set_nonblocking(true);
                self.clients.push(Client {
                    stream,
                    buf: vec![],
                });
            }
        }
        for i in (0..client_ready.len()).rev() {
            if client_ready[i] && !self.serve_client(i) {
                self.clients.remove(i);
            }
        }
        if let Some(t) = self.kill_at {
            if Instant::now() >= t {
                if let Some(z) = &self.zone {
                    let _ = z.kill();
                }
                self.kill_at = None;
            }
        }
        if zone_ready {
            return self.zone_exited();
        }
        None
    }

    fn pump_console(&mut self) {
        let Some(pty) = &self.pty else { return };
        let mut buf = [0u8; 8192];
        match nix::unistd::read(pty.master.as_fd(), &mut buf) {
            Ok(n) if n > 0 => {
                if let Err(e) = self.log.write(&buf[..n]) {
                    eprintln!("zone monitor: console log: {e}");
                }
                // A client that cannot keep up loses output rather than stalling the
                // zone's console; one that has gone away is dropped.
                self.attached
                    .retain(|a| match nix::unistd::write(&a.fd, &buf[..n]) {
                        Ok(_) | Err(nix::errno::Errno::EAGAIN) => true,
                        Err(_) => false,
                    });
            }
            _ => {}
        }
    }

    /// Copies what attached client `i` typed to the zone's console and applies the
    /// window sizes it sends; false when the client has detached.
    fn relay_input(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 4096];
        let n = match nix::unistd::read(self.attached[i].fd.as_fd(), &mut buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => return true,
            Err(_) => return false,
        };
        let Some(p) = &self.pty else { return false };
        for input in self.attached[i].input.feed(&buf[..n]) {
            match input {
                ConsoleInput::Data(d) => {
                    if !write_all_fd(p.master.as_fd(), &d) {
                        return false;
                    }
                }
                ConsoleInput::WindowSize { rows, cols } => {
                    if let Err(e) = crate::console::set_window_size(p.master.as_fd(), rows, cols) {
                        eprintln!("zone monitor: {e}");
                    }
                }
            }
        }
        true
    }

    /// Stops the zone (SIGTERM, SIGKILL after `grace`; at once if `force`); `then`
    /// says what follows: exit (Stop) or boot again (Reboot). A later stop wins over an
    /// earlier reboot.
    fn request_stop(&mut self, force: bool, grace: Duration, then: Pending) {
        let Some(zone) = &self.zone else { return };
        let mut how = String::new();
        if force {
            let _ = zone.kill();
        } else {
            // The init's own way of powering off (see `halt`), so that its services
            // stop cleanly before the grace period ends in SIGKILL.
            let request = match halt::request_initctl(zone.pid.as_raw()) {
                Ok(true) => halt::Request::Initctl,
                _ => {
                    let _ = zone.signal_raw(self.halt_signal);
                    halt::Request::Signal(self.halt_signal)
                }
            };
            how = format!(" ({})", request.describe());
            // A repeated request never postpones the kill.
            let at = Instant::now() + grace;
            self.kill_at = Some(self.kill_at.map_or(at, |k| k.min(at)));
        }
        if self.pending != Pending::Stop {
            self.pending = then;
        }
        let why = if self.pending == Pending::Reboot {
            "reboot requested"
        } else {
            "stop requested"
        };
        self.set_state(states::STOPPING, format!("{why}{how}"));
    }

    /// The zone init is gone: decide between restart, stop and failure.
    fn zone_exited(&mut self) -> Option<i32> {
        let mut zone = self.zone.take()?;
        let exit = match zone.try_wait(true) {
            Ok(Some(e)) => e,
            _ => ZoneExit::Exited(-1),
        };
        if let Err(e) = zone.cleanup() {
            eprintln!("zone monitor: cleanup: {e}");
        }
        while self.pty.is_some() {
            // Drain what the zone wrote last before dropping the pty.
            let Some(p) = &self.pty else { break };
            let mut fds = [PollFd::new(p.master.as_fd(), PollFlags::POLLIN)];
            if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
                break;
            }
            let before = self.log_size();
            self.pump_console();
            if self.log_size() == before {
                break;
            }
        }
        self.pty = None;
        // Attached consoles see their end of the relay close: the zone is gone.
        self.attached.clear();
        self.kill_at = None;
        self.status.instance_pid = None;
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        let reason = format!("zone init {}", exit.describe());
        let restart = pending == Pending::Reboot || (pending == Pending::None && exit.is_reboot());
        if restart {
            self.set_state(states::PROVISIONING, format!("restarting: {reason}"));
            if let Err(e) = self.boot() {
                self.set_state(states::FAILED, format!("restart failed: {e}"));
                return Some(1);
            }
            return None;
        }
        if pending == Pending::Stop {
            // How the init answered the stop: busybox init, for one, takes SIGTERM
            // as "reboot", which must not read as if the zone rebooted on its own.
            self.set_state(states::STOPPED, format!("stopped on request; {reason}"));
            return Some(0);
        }
        let clean = matches!(
            exit,
            ZoneExit::Exited(0) | ZoneExit::Signaled(Signal::SIGINT)
        );
        if self.started.elapsed() < EARLY_EXIT && !clean {
            self.set_state(
                states::FAILED,
                format!("zone init {:?} exited at once: {reason}", self.spec.command),
            );
            return Some(1);
        }
        if clean {
            self.set_state(states::STOPPED, reason);
            Some(0)
        } else {
            self.set_state(states::FAILED, reason);
            Some(1)
        }
    }

    fn log_size(&self) -> u64 {
        std::fs::metadata(contract::console_log_path(
            &self.config.pool,
            &self.config.uuid,
        ))
        .map(|m| m.len())
        .unwrap_or(0)
    }

    /// Reads request lines from client `i`; false when the client is gone.
    fn serve_client(&mut self, i: usize) -> bool {
        let mut chunk = [0u8; 4096];
        let n = match self.clients[i].stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        };
        self.clients[i].buf.extend_from_slice(&chunk[..n]);
        while let Some(pos) = self.clients[i].buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.clients[i].buf.drain(..=pos).collect();
            let (resp, fd) = match serde_json::from_slice::<MonitorRequest>(&line) {
                Ok(req) => self.handle(req),
                Err(e) => (reply(false, format!("bad request: {e}")), None),
            };
            let mut text = serde_json::to_vec(&resp).unwrap_or_default();
            text.push(b'\n');
            let stream = &self.clients[i].stream;
            let _ = stream.set_nonblocking(false);
            let sent = match fd {
                Some(fd) => {
                    let fds = [fd.as_raw_fd()];
                    let cmsg = [ControlMessage::ScmRights(&fds)];
                    sendmsg::<()>(
                        stream.as_raw_fd(),
                        &[IoSlice::new(&text)],
                        &cmsg,
                        MsgFlags::empty(),
                        None,
                    )
                    .is_ok()
                }
                None => (&self.clients[i].stream).write_all(&text).is_ok(),
            };
            let _ = self.clients[i].stream.set_nonblocking(true);
            if !sent {
                return false;
            }
        }
        true
    }

    fn handle(&mut self, req: MonitorRequest) -> (MonitorResponse, Option<OwnedFd>) {
        match req {
            MonitorRequest::Status => {
                if let Some(z) = &self.zone {
                    if let Ok(u) = z.cgroup.cpu_usage_usec() {
                        self.status
                            .details
                            .insert("cpu_usage_usec".into(), u.to_string());
                    }
                }
                self.refresh_quota_used();
                let mut r = reply(true, String::new());
                r.status = Some(self.status.clone());
                (r, None)
            }
            MonitorRequest::Stop {
                force,
                timeout_secs,
            } => {
                if self.zone.is_none() {
                    return (reply(false, "zone is not running".into()), None);
                }
                self.request_stop(
                    force,
                    Duration::from_secs(timeout_secs.into()),
                    Pending::Stop,
                );
                // "stop requested (SIGUSR2)": how the init was asked.
                (reply(true, self.status.reason.clone()), None)
            }
            MonitorRequest::Reboot { force } => {
                if self.zone.is_none() {
                    return (reply(false, "zone is not running".into()), None);
                }
                self.request_stop(force, DEFAULT_GRACE, Pending::Reboot);
                (reply(true, "rebooting".into()), None)
            }
            MonitorRequest::Console => {
                if self.pty.is_none() {
                    return (reply(false, "zone is not running".into()), None);
                }
                match socketpair(
                    AddressFamily::Unix,
                    SockType::Stream,
                    None,
                    SockFlag::SOCK_CLOEXEC,
                ) {
                    Ok((ours, theirs)) => {
                        if let Err(e) = nix::fcntl::fcntl(
                            &ours,
                            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                        ) {
                            return (reply(false, format!("console relay: {e}")), None);
                        }
                        self.attached.push(Relay {
                            fd: ours,
                            input: RelayDecoder::default(),
                        });
                        (reply(true, "console attached".into()), Some(theirs))
                    }
                    Err(e) => (reply(false, format!("console relay: {e}")), None),
                }
            }
        }
    }

    /// Leaves nothing behind: zone, mounts, socket, pidfile.
    fn shutdown(&mut self) {
        if let Some(mut z) = self.zone.take() {
            let _ = z.cleanup();
        }
        let _ = self.stage.unmount(false);
        let _ = std::fs::remove_file(contract::socket_path(
            &self.config.run_dir,
            &self.config.uuid,
        ));
        let _ = std::fs::remove_file(contract::pidfile_path(
            &self.config.run_dir,
            &self.config.uuid,
        ));
        self.lock.release();
    }
}

/// Writes all of `buf` to a blocking fd; false when the fd is gone.
fn write_all_fd(fd: BorrowedFd<'_>, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return false,
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    true
}

fn reply(ok: bool, message: String) -> MonitorResponse {
    MonitorResponse {
        ok,
        message,
        status: None,
    }
}
