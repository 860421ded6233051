//! Starting, stopping and supervising monitors.

use super::{Entry, Node};
use crate::monitor::watch::{self, Exit};
use crate::pool::InstanceRecord;
use crate::runtime::{Images, RuntimeError};
use monitor::StatusFile;
use spec::State;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Monitor exit code: the instance asked to reboot.
const EXIT_REBOOT: i32 = monitor::exit::REBOOT;

impl Node {
    /// Hands `rec` (the spec it will record) to the running instance's monitor when
    /// `changed` holds properties the monitor applies live; returns the monitor's note,
    /// `None` when there was nothing to hand over. On a refusal the monitor's config
    /// is left as it was, so the caller can leave everything unchanged.
    pub(crate) fn apply_live(
        &self,
        rec: &InstanceRecord,
        changed: &[&str],
    ) -> Result<Option<String>, RuntimeError> {
        let running = self.entry(&rec.uuid).is_some_and(|e| e.pid != 0);
        let live = changed
            .iter()
            .any(|p| crate::plan::reaches_the_monitor_live(&rec.spec.kind, p));
        if !running || !live {
            return Ok(None);
        }
        let note = self.runtime.reload(rec)?;
        log::info!("{}: applied live: {note}", rec.name);
        Ok(Some(note))
    }

    /// [`Node::apply_live`] for a manifest edit already recorded: a change the running
    /// instance refuses is left for its next start (marked as needing a restart) and
    /// reported.
    pub(crate) fn apply_live_or_wait_for_restart(
        &self,
        rec: &InstanceRecord,
        changed: &[&str],
    ) -> Result<(), RuntimeError> {
        self.apply_live(rec, changed).map(drop).inspect_err(|_| {
            self.update_record(&rec.uuid, |e| e.rec.needs_restart = true);
        })
    }

    /// Starts an instance's monitor (unless one runs) and waits for it to report
    /// running. Marks the instance wanted-running.
    pub(crate) fn start_instance(self: &Arc<Self>, uuid: &str) -> Result<(), RuntimeError> {
        let Some(entry) = self.update_record(uuid, |e| {
            e.rec.want_running = true;
            e.generation += 1;
        }) else {
            return Ok(());
        };
        if self.entry(uuid).is_some_and(|e| e.pid != 0) {
            return Ok(());
        }
        self.set_state(uuid, State::Provisioning, "starting");
        match self.spawn_monitor(uuid) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.set_state(uuid, State::Failed, &e.to_string());
                log::error!("{}: {e}", entry.name);
                Err(e)
            }
        }
    }

    fn spawn_monitor(self: &Arc<Self>, uuid: &str) -> Result<(), RuntimeError> {
        let rec = self
            .entry(uuid)
            .map(|e| e.rec)
            .ok_or_else(|| RuntimeError::Spawn {
                instance: uuid.into(),
                message: "instance vanished".into(),
            })?;
        let image = self.images.ensure(&rec.spec.image)?;
        let rec = self
            .update_record(uuid, |e| {
                e.rec.image_uuid = image.uuid.clone();
                e.rec.needs_restart = false;
            })
            .unwrap_or(rec);
        self.prepare(&rec, &image)?;
        // From the spawn until the monitor reports running: one of the node's start
        // slots (an import or a disk copy above holds none).
        let _slot = self.limits.starts.acquire();
        let pid = self.runtime.spawn(&rec)?;
        self.update_record(uuid, |e| {
            e.pid = pid;
            e.started = Some(Instant::now());
        });
        self.watch(uuid, pid);
        // Running once the monitor says so; a monitor that dies first is reported by
        // its watcher with the reason it gives.
        let deadline = Instant::now() + self.opts.start_timeout;
        while Instant::now() < deadline {
            if !watch::alive(pid) || self.entry(uuid).is_none_or(|e| e.pid != pid) {
                return Err(RuntimeError::Spawn {
                    instance: rec.name.clone(),
                    message: self.exit_reason(uuid, "monitor exited during start"),
                });
            }
            if let Ok(st) = self.runtime.status(&rec) {
                if st.state == State::Running {
                    self.set_state(uuid, State::Running, "");
                    return Ok(());
                }
                if st.state == State::Failed {
                    return Err(RuntimeError::Spawn {
                        instance: rec.name.clone(),
                        message: st.reason,
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(RuntimeError::Spawn {
            instance: rec.name.clone(),
            message: format!(
                "monitor {pid} did not report running within {}s",
                self.opts.start_timeout.as_secs()
            ),
        })
    }

    /// The reason the monitor left in monitor.json, or `fallback`.
    fn exit_reason(&self, uuid: &str, fallback: &str) -> String {
        StatusFile::of(self.pool.root(), uuid)
            .read()
            .ok()
            .map(|s| s.reason)
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| fallback.to_string())
    }

    /// Stops an instance's monitor and waits until it is gone. Clears the wish to run,
    /// so the supervisor does not restart it.
    pub(crate) fn stop_instance(
        self: &Arc<Self>,
        uuid: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let Some(entry) = self.entry(uuid) else {
            return Ok(());
        };
        self.update_record(uuid, |e| {
            e.rec.want_running = false;
            e.generation += 1;
        });
        let pid = entry.pid;
        if pid == 0 {
            if entry.rec.state != State::Stopped {
                self.set_state(uuid, State::Stopped, "stopped");
            }
            return Ok(());
        }
        self.set_state(uuid, State::Stopping, "");
        if let Err(e) = self.runtime.stop(&entry.rec, force, timeout) {
            log::warn!("{e}; killing the monitor");
            kill_session(pid);
        }
        // The monitor exits once the instance is down; give it the grace period plus
        // a margin, then take the whole session down.
        let deadline = Instant::now() + timeout + Duration::from_secs(10);
        while watch::alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if watch::alive(pid) {
            log::warn!(
                "{}: monitor {pid} still alive after stop; killing it",
                entry.rec.name
            );
            kill_session(pid);
        }
        // Let the watcher record the exit (it owns the exit status); if it lags,
        // settle the state ourselves.
        let settle = Instant::now() + Duration::from_secs(2);
        while self
            .entry(uuid)
            .is_some_and(|e| e.pid == pid || e.rec.state != State::Stopped)
            && Instant::now() < settle
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let settled = self.update_record(uuid, |e| {
            if e.pid == pid {
                e.pid = 0;
            }
        });
        // The watcher usually got there first, with the monitor's own reason.
        if settled.is_some_and(|r| r.state != State::Stopped) {
            self.set_state(uuid, State::Stopped, "stopped");
        }
        Ok(())
    }

    /// Watches monitor `pid` of `uuid` and handles its exit.
    pub(crate) fn watch(self: &Arc<Self>, uuid: &str, pid: u32) {
        let node = Arc::clone(self);
        let uuid = uuid.to_string();
        self.rt.spawn(async move {
            let exit = watch::wait_exit(pid).await;
            let n = Arc::clone(&node);
            let _ = tokio::task::spawn_blocking(move || n.monitor_exited(&uuid, pid, exit)).await;
        });
    }

    /// The supervisor's decision when a monitor ends.
    fn monitor_exited(self: &Arc<Self>, uuid: &str, pid: u32, exit: Exit) {
        let Some(entry) = self.entry(uuid) else {
            return;
        };
        if entry.pid != pid {
            return;
        }
        let ran = entry.started.map(|s| s.elapsed()).unwrap_or_default();
        let reason = self.exit_reason(uuid, &exit.to_string());
        let clean = match exit {
            Exit::Code(0) => true,
            Exit::Unknown => self
                .last_monitor_state(uuid)
                .is_some_and(|s| s == State::Stopped),
            _ => false,
        };
        let policy = &self.opts.restart;
        let mut failures = 0;
        let Some(rec) = self.update_record(uuid, |e| {
            e.pid = 0;
            e.started = None;
            if clean {
                // The instance powered itself off: it stays off, as on SmartOS.
                e.rec.want_running = false;
            }
            if ran >= policy.healthy_after {
                e.failures = 0;
            }
            if !clean && exit != Exit::Code(EXIT_REBOOT) && e.rec.want_running {
                e.failures += 1;
            }
            failures = e.failures;
        }) else {
            return;
        };
        if !rec.want_running {
            let why = if clean { reason } else { "stopped".to_string() };
            self.set_state(uuid, State::Stopped, &why);
            return;
        }
        if exit == Exit::Code(EXIT_REBOOT) {
            log::info!("{}: instance asked to reboot; starting it again", rec.name);
            self.schedule_start(uuid, entry.generation, Duration::ZERO);
            return;
        }
        if failures > policy.max_failures {
            self.set_state(
                uuid,
                State::Failed,
                &format!(
                    "{reason}; gave up after {} quick restarts",
                    policy.max_failures
                ),
            );
            return;
        }
        let delay = backoff(policy.initial_backoff, policy.max_backoff, failures);
        self.set_state(
            uuid,
            State::Failed,
            &format!("{reason}; restarting in {delay:?}"),
        );
        self.schedule_start(uuid, entry.generation, delay);
    }

    /// The state the monitor last left in monitor.json.
    fn last_monitor_state(&self, uuid: &str) -> Option<State> {
        StatusFile::of(self.pool.root(), uuid)
            .read()
            .ok()
            .map(|s| s.state)
    }

    /// Restarts `uuid` after `delay`, unless an operation happened in between.
    fn schedule_start(self: &Arc<Self>, uuid: &str, generation: u64, delay: Duration) {
        let node = Arc::clone(self);
        let uuid = uuid.to_string();
        self.rt.spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tokio::task::spawn_blocking(move || {
                let _ops = node.lock_ops();
                let still = node.entry(&uuid).is_some_and(|e: Entry| {
                    e.generation == generation && e.rec.want_running && e.pid == 0
                });
                if still {
                    if let Err(e) = node.start_instance_keep_failures(&uuid) {
                        log::warn!("restart: {e}");
                    }
                }
            })
            .await;
        });
    }

    /// A supervisor restart: like a start, but the failure count carries on.
    fn start_instance_keep_failures(self: &Arc<Self>, uuid: &str) -> Result<(), RuntimeError> {
        let failures = self.entry(uuid).map(|e| e.failures).unwrap_or(0);
        let r = self.start_instance(uuid);
        self.update_record(uuid, |e| e.failures = failures);
        r
    }
}

/// `initial * 2^(failures-1)`, capped.
pub(crate) fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    (initial * factor).min(max)
}

/// Kills a monitor and everything in its session (it is the session leader).
fn kill_session(pid: u32) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    let p = Pid::from_raw(pid as i32);
    let _ = killpg(p, Signal::SIGKILL);
    let _ = kill(p, Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(backoff(i, m, 1), Duration::from_secs(1));
        assert_eq!(backoff(i, m, 2), Duration::from_secs(2));
        assert_eq!(backoff(i, m, 4), Duration::from_secs(8));
        assert_eq!(backoff(i, m, 9), Duration::from_secs(30));
    }
}
