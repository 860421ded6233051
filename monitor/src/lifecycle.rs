//! The one life both monitors give their instance: [`supervise`] boots it, waits for
//! the run to end, and decides by one rule what follows. What was asked of it
//! ([`Pending`]) and how it ended ([`Ended`]) decide whether it boots again, stays
//! stopped or has failed ([`Next`]), and with which exit code the monitor ends. How a
//! monitor waits (a poll loop, a thread) and how it words its reports are its own,
//! behind [`Supervised`].

use crate::{AfterStop, Instance};

/// How one run of the instance ended, as its monitor classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It powered off or exited cleanly.
    Clean,
    /// It asked to be booted again (a zone's reboot(2), a guest's reset).
    Reboot,
    /// It crashed, was killed, or exited with an error.
    Failed,
}

/// What the monitor does after a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Boot the instance again, in this monitor.
    Boot,
    /// The instance is stopped for good; `on_request` when a stop asked for it.
    Stopped {
        /// Whether a stop request (rather than the instance itself) ended it.
        on_request: bool,
    },
    /// The instance failed: the monitor reports why and exits.
    Failed,
}

impl Next {
    /// The monitor's exit code when it ends here (see [`crate::exit`]); `None` when
    /// it boots the instance again.
    pub fn exit_code(self) -> Option<i32> {
        match self {
            Next::Boot => None,
            Next::Stopped { .. } => Some(crate::exit::STOPPED),
            Next::Failed => Some(crate::exit::FAILED),
        }
    }
}

/// What the monitor has been asked to do with the running instance, if anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending(Option<AfterStop>);

impl Pending {
    /// Records a stop request: a stop for good wins over a reboot, whichever came
    /// first.
    pub fn ask(&mut self, then: AfterStop) {
        if self.0 != Some(AfterStop::Exit) {
            self.0 = Some(then);
        }
    }

    /// What is asked, if anything.
    pub fn asked(self) -> Option<AfterStop> {
        self.0
    }

    /// Whether a stop for good is asked.
    pub fn stopping(self) -> bool {
        self.0 == Some(AfterStop::Exit)
    }

    /// The instance booted: an asked reboot is done, an asked stop still stands.
    pub fn booted(&mut self) {
        if self.0 == Some(AfterStop::Reboot) {
            self.0 = None;
        }
    }

    /// The run ended `how`: decides what follows, which settles the request.
    pub fn after(&mut self, how: Ended) -> Next {
        match (self.0.take(), how) {
            (Some(AfterStop::Exit), _) => Next::Stopped { on_request: true },
            (Some(AfterStop::Reboot), _) | (None, Ended::Reboot) => Next::Boot,
            (None, Ended::Clean) => Next::Stopped { on_request: false },
            (None, Ended::Failed) => Next::Failed,
        }
    }
}

/// An instance as [`supervise`] drives it: the hooks a monitor fills in.
pub trait Supervised: Instance {
    /// Waits until the current run of the instance ends, serving the monitor's socket
    /// meanwhile (or letting other threads serve it), and says how it ended.
    fn wait(&mut self) -> Ended;

    /// What follows a run that ended `how`: [`Pending::after`] on the monitor's own
    /// pending request.
    fn settle(&mut self, how: Ended) -> Next;

    /// Reports what follows (state, reason, monitor.json) before it happens.
    fn report(&mut self, next: Next);

    /// Reports a boot that failed; `again` when it was a restart.
    fn report_boot_failure(&mut self, error: Self::Error, again: bool);

    /// The last word before each boot (`again` for all but the first): a monitor
    /// whose requests arrive on other threads may pause here (a guest that keeps
    /// resetting) and find a stop asked meanwhile, which it answers with what
    /// follows instead of the boot.
    fn before_boot(&mut self, again: bool) -> Option<Next> {
        let _ = again;
        None
    }
}

/// Boots the instance and supervises it until it stops for good or fails; returns
/// the monitor's exit code.
pub fn supervise<S: Supervised + ?Sized>(instance: &mut S) -> i32 {
    let mut again = false;
    loop {
        if let Some(instead) = instance.before_boot(again) {
            instance.report(instead);
            if let Some(code) = instead.exit_code() {
                return code;
            }
        }
        if let Err(e) = instance.boot() {
            instance.report_boot_failure(e, again);
            return crate::exit::FAILED;
        }
        let ended = instance.wait();
        let next = instance.settle(ended);
        instance.report(next);
        if let Some(code) = next.exit_code() {
            return code;
        }
        again = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MonitorStatus, StopRequest};
    use std::os::fd::OwnedFd;

    /// Runs end as scripted; boots fail when scripted to; everything is recorded.
    #[derive(Default)]
    struct Script {
        runs: Vec<Ended>,
        failing_boots: Vec<usize>,
        stop_before_reboot: bool,
        pending: Pending,
        boots: usize,
        log: Vec<String>,
    }

    impl Instance for Script {
        type Error = String;
        fn boot(&mut self) -> Result<(), String> {
            self.boots += 1;
            if self.failing_boots.contains(&self.boots) {
                return Err(format!("boot {} failed", self.boots));
            }
            self.log.push(format!("boot {}", self.boots));
            Ok(())
        }
        fn request_stop(&mut self, stop: StopRequest) -> Result<String, String> {
            self.pending.ask(stop.then);
            Ok(String::new())
        }
        fn console(&mut self) -> Result<OwnedFd, String> {
            Err("no console".into())
        }
        fn status(&mut self) -> MonitorStatus {
            MonitorStatus::provisioning(1)
        }
    }

    impl Supervised for Script {
        fn wait(&mut self) -> Ended {
            self.runs.remove(0)
        }
        fn settle(&mut self, how: Ended) -> Next {
            self.pending.after(how)
        }
        fn report(&mut self, next: Next) {
            self.log.push(format!("{next:?}"));
        }
        fn report_boot_failure(&mut self, error: String, again: bool) {
            self.log.push(format!("{error} (again: {again})"));
        }
        fn before_boot(&mut self, again: bool) -> Option<Next> {
            (again && self.stop_before_reboot).then_some(Next::Stopped { on_request: true })
        }
    }

    #[test]
    fn supervise_boots_again_until_the_rule_says_otherwise() {
        let mut s = Script {
            runs: vec![Ended::Reboot, Ended::Reboot, Ended::Clean],
            ..Script::default()
        };
        assert_eq!(supervise(&mut s), 0);
        assert_eq!(
            s.log,
            [
                "boot 1",
                "Boot",
                "boot 2",
                "Boot",
                "boot 3",
                "Stopped { on_request: false }"
            ]
        );
        let mut s = Script {
            runs: vec![Ended::Reboot, Ended::Failed],
            failing_boots: vec![2],
            ..Script::default()
        };
        assert_eq!(supervise(&mut s), 1);
        assert_eq!(s.log, ["boot 1", "Boot", "boot 2 failed (again: true)"]);
        let mut s = Script {
            failing_boots: vec![1],
            ..Script::default()
        };
        assert_eq!(supervise(&mut s), 1);
        assert_eq!(s.log, ["boot 1 failed (again: false)"]);
        let mut s = Script {
            runs: vec![Ended::Failed],
            ..Script::default()
        };
        assert_eq!(supervise(&mut s), 1);
        assert_eq!(s.log, ["boot 1", "Failed"]);
        // A stop found before booting again ends it there.
        let mut s = Script {
            runs: vec![Ended::Reboot],
            stop_before_reboot: true,
            ..Script::default()
        };
        assert_eq!(supervise(&mut s), 0);
        assert_eq!(s.log, ["boot 1", "Boot", "Stopped { on_request: true }"]);
    }

    fn after(asked: &[AfterStop], how: Ended) -> Next {
        let mut p = Pending::default();
        for a in asked {
            p.ask(*a);
        }
        let next = p.after(how);
        assert_eq!(p, Pending::default(), "the request is settled");
        next
    }

    #[test]
    fn a_stop_wins_then_a_reboot_then_the_instance_decides() {
        use AfterStop::{Exit, Reboot};
        let stopped = |on_request| Next::Stopped { on_request };
        for how in [Ended::Clean, Ended::Reboot, Ended::Failed] {
            assert_eq!(after(&[Exit], how), stopped(true), "{how:?}");
            assert_eq!(after(&[Reboot, Exit], how), stopped(true), "{how:?}");
            assert_eq!(after(&[Exit, Reboot], how), stopped(true), "{how:?}");
            assert_eq!(after(&[Reboot], how), Next::Boot, "{how:?}");
        }
        assert_eq!(after(&[], Ended::Reboot), Next::Boot);
        assert_eq!(after(&[], Ended::Clean), stopped(false));
        assert_eq!(after(&[], Ended::Failed), Next::Failed);
        assert_eq!(Next::Boot.exit_code(), None);
        assert_eq!(stopped(true).exit_code(), Some(0));
        assert_eq!(Next::Failed.exit_code(), Some(1));
    }

    #[test]
    fn a_boot_settles_a_reboot_but_not_a_stop() {
        let mut p = Pending::default();
        p.ask(AfterStop::Reboot);
        p.booted();
        assert_eq!(p.asked(), None);
        p.ask(AfterStop::Exit);
        p.booted();
        assert!(p.stopping());
    }
}
