//! The zone as the monitor runs it: the `monitor::Instance` the socket's requests act
//! on, the serving of those requests from the poll loop, and the hooks by which the
//! library's `supervise` drives the zone's life (`monitor::Supervised`).

use super::{Monitor, Relay, DEFAULT_GRACE, EARLY_EXIT};
use crate::console::{Pty, RelayDecoder};
use crate::error::{Result, ZoneError};
use crate::launch;
use monitor::{
    self as contract, AfterStop, Connection, Ended, Instance, MonitorStatus, Next, State,
    StopRequest, Supervised,
};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use std::os::fd::OwnedFd;
use std::time::Instant;

fn not_running() -> ZoneError {
    ZoneError::Invalid("zone is not running".into())
}

impl Instance for Monitor {
    type Error = ZoneError;

    /// Boots the zone once (the quota is set up at the first boot).
    fn boot(&mut self) -> Result<()> {
        if self.quota.is_none() {
            self.setup_quota()?;
        }
        let pty = Pty::open(self.spec.idmap.host_id(0))?;
        self.spec.metadata = Some(self.metadata.open_tty()?);
        let zone = launch::start(&self.spec, &mut self.stage, &self.hierarchy, Some(&pty))?;
        self.boots += 1;
        self.started = Instant::now();
        self.status.instance_pid = Some(zone.pid.as_raw() as u32);
        self.status.started_at = Some(spec::unix_now());
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
        self.zone = Some(zone);
        self.pty = Some(pty);
        self.record_limits();
        self.set_state(State::Running, "");
        Ok(())
    }

    fn request_stop(&mut self, stop: StopRequest) -> Result<String> {
        if self.zone.is_none() {
            return Err(not_running());
        }
        self.stop_zone(stop.force, stop.grace.unwrap_or(DEFAULT_GRACE), stop.then);
        Ok(match stop.then {
            // "stop requested (SIGUSR2)": how the init was asked.
            AfterStop::Exit => self.status.reason.clone(),
            AfterStop::Reboot => "rebooting".into(),
        })
    }

    /// One end of a new relay to the zone's pty; the monitor keeps the other.
    fn console(&mut self) -> Result<OwnedFd> {
        if self.pty.is_none() {
            return Err(not_running());
        }
        let relay = |e: nix::Error| ZoneError::Invalid(format!("console relay: {e}"));
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(relay)?;
        nix::fcntl::fcntl(
            &ours,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(relay)?;
        self.attached.push(Relay {
            fd: ours,
            input: RelayDecoder::default(),
        });
        Ok(theirs)
    }

    fn status(&mut self) -> MonitorStatus {
        if let Some(z) = &self.zone {
            if let Ok(u) = z.cgroup.cpu_usage_usec() {
                self.status
                    .details
                    .insert("cpu_usage_usec".into(), u.to_string());
            }
        }
        self.refresh_quota_used();
        self.status.clone()
    }

    /// Applies the rewritten config.json to the running zone: its limits, quota and
    /// nics (`live.rs`), and its customer metadata to the metadata server (the zone
    /// reads the new values with its next request).
    fn reload(&mut self) -> Option<Result<String>> {
        Some(self.reload_config())
    }
}

impl Supervised for Monitor {
    /// Runs the poll loop (socket, signals, console, relays) until the zone's init is
    /// gone.
    fn wait(&mut self) -> Ended {
        loop {
            if let Some(ended) = self.step() {
                return ended;
            }
        }
    }

    fn settle(&mut self, how: Ended) -> Next {
        self.pending.after(how)
    }

    fn report(&mut self, next: Next) {
        let reason = std::mem::take(&mut self.ended);
        match next {
            Next::Boot => self.set_state(State::Provisioning, format!("restarting: {reason}")),
            // How the init answered the stop: busybox init, for one, takes SIGTERM
            // as "reboot", which must not read as if the zone rebooted on its own.
            Next::Stopped { on_request: true } => {
                self.set_state(State::Stopped, format!("stopped on request; {reason}"))
            }
            Next::Stopped { on_request: false } => self.set_state(State::Stopped, reason),
            Next::Failed if self.started.elapsed() < EARLY_EXIT => self.set_state(
                State::Failed,
                format!("zone init {:?} exited at once: {reason}", self.spec.command),
            ),
            Next::Failed => self.set_state(State::Failed, reason),
        }
    }

    fn report_boot_failure(&mut self, error: ZoneError, again: bool) {
        let reason = if again {
            format!("restart failed: {error}")
        } else {
            error.to_string()
        };
        self.set_state(State::Failed, reason);
    }
}

impl Monitor {
    fn reload_config(&mut self) -> Result<String> {
        let path = contract::config_path(&self.config.pool, &self.config.uuid);
        let config = contract::read_config(&path)?;
        if config.uuid != self.config.uuid || !matches!(config.spec.kind, spec::Kind::Zone(_)) {
            return Err(ZoneError::Invalid(format!(
                "{}: not the config of zone {} any more; restart it instead",
                path.display(),
                self.config.uuid
            )));
        }
        let mut notes = self.apply_live(&config)?;
        notes.push(self.metadata.apply_manifest(&config.spec)?);
        let note = notes.join("; ");
        eprintln!("zone monitor {}: reload: {note}", self.config.uuid);
        Ok(note)
    }

    /// Answers the clients whose sockets are ready (`ready[i]` for client `i`) and
    /// drops those that are done: gone, broken or out of time.
    pub(super) fn serve_clients(&mut self, ready: &[bool]) {
        let now = Instant::now();
        let mut clients: Vec<Connection> = std::mem::take(&mut self.clients);
        let mut i = 0;
        clients.retain_mut(|conn| {
            let keep = if ready.get(i).copied().unwrap_or(false) || conn.expired(now) {
                conn.serve(|req| contract::answer(self, req))
            } else {
                true
            };
            i += 1;
            keep
        });
        self.clients = clients;
    }
}
