//! The one rule both monitors follow when their instance's run ends: what was asked
//! of it ([`Pending`]) and how it ended ([`Ended`]) decide whether it boots again,
//! stays stopped or has failed ([`Next`]), and with which exit code the monitor ends.

use crate::AfterStop;

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

#[cfg(test)]
mod tests {
    use super::*;

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
