//! `zone monitor --config <pool>/<uuid>/config.json`: the per-zone process init spawns.
//!
//! It boots the zone described by [`InstanceConfig`], keeps `monitor.json` current,
//! logs the console, serves the monitor socket (the `monitor` library's [`Server`],
//! from this loop), restarts a zone that rebooted itself, and exits per the contract:
//! 0 after a clean stop or power-off, 1 on failure. It is a single-threaded poll loop,
//! so it can fork zones at any time, and it depends on nothing of its parent: own
//! session, stdio on its own log file.

mod config;
mod instance;
mod live;
mod metadata;

pub use config::launch_spec;
pub use metadata::{MAX_CONNECTIONS, READ_CHUNK};

use crate::cgroups::Hierarchy;
use crate::console::{ConsoleInput, ConsoleLog, Pty, RelayDecoder, LOG_LIMIT};
use crate::error::{Context, Result};
use crate::halt;
use crate::launch::{self, LaunchSpec, Zone, ZoneExit};
use crate::quota::{self, LayerQuota, QuotaStatus};
use crate::rootfs::{Stage, Upper};
use metadata::MetadataService;
use monitor::{
    self as contract, AfterStop, Claim, Connection, Ended, InstanceConfig, MonitorStatus, Pending,
    Server, State, StatusFile,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// A zone whose init exits sooner than this after starting, without being asked to,
/// is reported as failed ("exits at once") instead of stopped.
pub const EARLY_EXIT: Duration = Duration::from_secs(1);
/// Grace period of a reboot request and of SIGTERM to the monitor.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Entry point of `zone monitor`; returns the process exit code.
pub fn main(config_path: &Path) -> Result<i32> {
    let config = contract::read_config(config_path)?;
    contract::detach(&contract::monitor_log_path(&config.pool, &config.uuid))?;
    let mut monitor = Monitor::new(config)?;
    let code = monitor.run();
    monitor.shutdown();
    Ok(code)
}

/// Our end of one console relay, and how to read what its client sends.
struct Relay {
    fd: OwnedFd,
    input: RelayDecoder,
}

struct Monitor {
    /// The lock, socket and pidfile: given back at shutdown.
    claim: Option<Claim>,
    config: InstanceConfig,
    spec: LaunchSpec,
    hierarchy: Hierarchy,
    stage: Stage,
    server: Server,
    signals: SignalFd,
    clients: Vec<Connection>,
    zone: Option<Zone>,
    pty: Option<Pty>,
    /// Our ends of the console relays handed out by `Console`: the monitor alone reads
    /// the pty master, so the log and every attached client see all of the output.
    attached: Vec<Relay>,
    log: ConsoleLog,
    status: MonitorStatus,
    status_file: StatusFile,
    pending: Pending,
    /// How the last run ended, in words (`zone init exited with status 1`).
    ended: String,
    kill_at: Option<Instant>,
    started: Instant,
    boots: u32,
    /// The writable-layer quota, set up at the first boot.
    quota: Option<QuotaStatus>,
    /// What asks this zone's init to power off when it has no `/run/initctl`.
    halt_signal: i32,
    /// The zone's metadata server (its socket, each boot's /dev/ttyS1, its store).
    metadata: MetadataService,
    /// monitor.log, checked after every poll round.
    monitor_log: contract::BoundedMonitorLog,
}

impl Monitor {
    fn new(config: InstanceConfig) -> Result<Monitor> {
        let dir = spec::pool::instance_dir(&config.pool, &config.uuid);
        // First of all: a live monitor of this zone keeps it, and is never disturbed.
        let (claim, server) = Claim::take(&config.run_dir, &config.uuid)?;
        // A config no zone can start from (an image's `User` nobody in it has) is the
        // zone's failure: its status says why, for init and `vmadm` to show.
        let spec = launch_spec(&config).inspect_err(|e| {
            let mut failed = MonitorStatus::provisioning(std::process::id());
            failed.set(State::Failed, e.to_string());
            let _ = StatusFile::of(&config.pool, &config.uuid).write(&failed);
        })?;
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
        let metadata =
            MetadataService::start(&config, &spec.nics, &spec.hostname, spec.idmap.host_id(0))?;
        let log = ConsoleLog::open(
            &contract::console_log_path(&config.pool, &config.uuid),
            LOG_LIMIT,
        )?;
        let status = MonitorStatus::provisioning(std::process::id());
        let status_file = StatusFile::of(&config.pool, &config.uuid);
        let monitor_log = contract::BoundedMonitorLog::new(
            contract::monitor_log_path(&config.pool, &config.uuid),
            contract::MONITOR_LOG_MAX,
        );
        let halt_signal = halt::signal_for(&spec.image, &spec.command);
        Ok(Monitor {
            claim: Some(claim),
            config,
            spec,
            hierarchy,
            stage,
            server,
            signals,
            clients: vec![],
            zone: None,
            pty: None,
            attached: Vec::new(),
            log,
            status,
            status_file,
            pending: Pending::default(),
            ended: String::new(),
            kill_at: None,
            started: Instant::now(),
            boots: 0,
            halt_signal,
            quota: None,
            metadata,
            monitor_log,
        })
    }

    fn save(&mut self) {
        if let Err(e) = self.status_file.write(&self.status) {
            eprintln!("zone monitor: {e}");
        }
    }

    fn set_state(&mut self, state: State, reason: impl Into<String>) {
        self.status.set(state, reason);
        eprintln!(
            "zone monitor {}: {} {}",
            self.config.uuid, self.status.state, self.status.reason
        );
        self.save();
    }

    /// The zone's writable layer and the quota its config asks for; `None` for a
    /// throwaway upper.
    fn layer_quota(&self) -> Option<LayerQuota> {
        let Upper::Persistent { upper, work } = &self.spec.upper else {
            return None;
        };
        let spec::Kind::Zone(z) = &self.config.spec.kind else {
            return None;
        };
        Some(LayerQuota {
            zone: format!("{} ({})", self.config.spec.name, self.config.uuid),
            pool: self.config.pool.clone(),
            zone_dir: spec::pool::instance_dir(&self.config.pool, &self.config.uuid),
            upper: upper.clone(),
            work: work.clone(),
            limit: z.quota,
            id_range_start: self.config.id_range_start,
        })
    }

    /// Sets up the writable-layer quota (once per monitor: the upper persists across
    /// reboots). A pool without support only yields an "unenforced" status.
    fn setup_quota(&mut self) -> Result<()> {
        let Some(q) = self.layer_quota() else {
            return Ok(());
        };
        quota::prepare_layer(&q)?;
        for d in [&q.upper, &q.work] {
            std::fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
        }
        self.apply_quota(&q)
    }

    /// Sets the limit of `q` on the prepared layer (at the first boot, and live).
    fn apply_quota(&mut self, q: &LayerQuota) -> Result<()> {
        let status = quota::apply(q)?;
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

    /// Boots the zone and supervises it (the `monitor` library's loop, see
    /// `instance.rs`); returns the exit code.
    fn run(&mut self) -> i32 {
        contract::supervise(self)
    }

    /// One poll round; Some(how the run ended) when the zone's init is gone.
    fn step(&mut self) -> Option<Ended> {
        if let Err(e) = self.monitor_log.enforce() {
            eprintln!("zone monitor: bounding monitor.log: {e}");
        }
        // Wake for the kill deadline, for the first client to run out of time, for
        // a rate-limited metadata session, and to check monitor.log's size.
        let wake = self
            .clients
            .iter()
            .map(Connection::deadline)
            .chain(self.kill_at)
            .chain(self.metadata.prepare(Instant::now()))
            .chain(self.zone.as_ref().and_then(Zone::next_snoop))
            .chain(Some(Instant::now() + contract::MONITOR_LOG_CHECK))
            .min();
        let timeout = match wake {
            Some(t) => PollTimeout::try_from(
                t.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(60_000) as i32
                    + 1,
            )
            .unwrap_or(PollTimeout::NONE),
            None => PollTimeout::NONE,
        };
        let (listen_ready, sig_ready, zone_ready, console_ready, client_ready, attached_ready);
        let (metadata_events, snoop_ready): (Vec<PollFlags>, bool);
        {
            let mut fds = vec![
                PollFd::new(self.server.as_fd(), PollFlags::POLLIN),
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
                fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            }
            for a in &self.attached {
                fds.push(PollFd::new(a.fd.as_fd(), PollFlags::POLLIN));
            }
            let metadata_start = fds.len();
            fds.extend(self.metadata.poll_fds());
            let snoop_start = fds.len();
            if let Some(z) = &self.zone {
                fds.extend(
                    z.snoop_fds()
                        .into_iter()
                        .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
                );
            }
            if let Err(e) = poll(&mut fds, timeout) {
                if e != nix::errno::Errno::EINTR {
                    eprintln!("zone monitor: poll: {e}");
                }
                return None;
            }
            let events: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            let r: Vec<bool> = events.iter().map(|e| !e.is_empty()).collect();
            listen_ready = r[0];
            sig_ready = r[1];
            zone_ready = r[2] && zone_fd.is_some();
            console_ready = r[3] && console_fd.is_some();
            client_ready = r[4..4 + self.clients.len()].to_vec();
            attached_ready = r[4 + self.clients.len()..metadata_start].to_vec();
            metadata_events = events[metadata_start..snoop_start].to_vec();
            snoop_ready = r[snoop_start..].contains(&true);
        }
        if let Some(zone) = &mut self.zone {
            let now = Instant::now();
            if snoop_ready || zone.next_snoop().is_some_and(|end| end <= now) {
                for note in zone.snoop(now) {
                    eprintln!("zone monitor {}: {note}", self.config.uuid);
                }
            }
        }
        self.metadata.handle(&metadata_events, Instant::now());
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
                    self.stop_zone(false, DEFAULT_GRACE, AfterStop::Exit);
                }
            }
        }
        self.serve_clients(&client_ready);
        if listen_ready {
            loop {
                match self.server.accept() {
                    Ok(Some(conn)) => self.clients.push(conn),
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("zone monitor: {e}");
                        break;
                    }
                }
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

    /// Stops the zone (its init's power-off request, SIGKILL after `grace`; at once if
    /// `force`); `then` says what follows: exit or boot again. A stop wins over a
    /// reboot (see [`Pending`]).
    fn stop_zone(&mut self, force: bool, grace: Duration, then: AfterStop) {
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
        self.pending.ask(then);
        let why = if self.pending.asked() == Some(AfterStop::Reboot) {
            "reboot requested"
        } else {
            "stop requested"
        };
        self.set_state(State::Stopping, format!("{why}{how}"));
    }

    /// The zone init is gone: cleans up after it and says how it ended (its words
    /// are kept for the report).
    fn zone_exited(&mut self) -> Option<Ended> {
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
        self.metadata.close_tty();
        // Attached consoles see their end of the relay close: the zone is gone.
        self.attached.clear();
        self.kill_at = None;
        self.status.instance_pid = None;
        self.ended = format!("zone init {}", exit.describe());
        Some(if exit.is_reboot() {
            Ended::Reboot
        } else if matches!(
            exit,
            ZoneExit::Exited(0) | ZoneExit::Signaled(Signal::SIGINT)
        ) {
            Ended::Clean
        } else {
            Ended::Failed
        })
    }

    fn log_size(&self) -> u64 {
        std::fs::metadata(contract::console_log_path(
            &self.config.pool,
            &self.config.uuid,
        ))
        .map(|m| m.len())
        .unwrap_or(0)
    }

    /// Leaves nothing behind: zone, mounts, socket, pidfile.
    fn shutdown(&mut self) {
        if let Some(mut z) = self.zone.take() {
            let _ = z.cleanup();
        }
        let _ = self.stage.unmount(false);
        self.metadata.shutdown();
        if let Some(claim) = self.claim.take() {
            claim.release();
        }
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
