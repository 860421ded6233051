//! What a monitor runs, seen from the socket: the [`Instance`] trait both monitors
//! implement (a zone, an HVM guest), and [`answer`], the one mapping from requests to
//! what is asked of the instance.

use crate::{MonitorRequest, MonitorStatus, Reply};
use std::fmt::Display;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// What follows a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// The monitor exits: the instance stays down.
    Exit,
    /// The monitor boots the instance again.
    Reboot,
}

/// A request to stop the running instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequest {
    /// Kill at once, skipping the graceful part.
    pub force: bool,
    /// How long the graceful part may take before the kill; `None` for the monitor's
    /// own default (a reboot request names none).
    pub grace: Option<Duration>,
    /// Exit or boot again.
    pub then: AfterStop,
}

/// One instance, as its monitor runs it.
pub trait Instance {
    /// Why something could not be done, in words for the operator.
    type Error: Display;

    /// Boots the instance (once; a reboot boots it again).
    fn boot(&mut self) -> Result<(), Self::Error>;

    /// Asks the running instance to stop, gracefully unless `stop.force`; the kill
    /// follows after the grace period. Returns a note on how it was asked.
    fn request_stop(&mut self, stop: StopRequest) -> Result<String, Self::Error>;

    /// The console for one more client: a pty master or a relay socket.
    fn console(&mut self) -> Result<OwnedFd, Self::Error>;

    /// The current status, details refreshed.
    fn status(&mut self) -> MonitorStatus;

    /// Rereads the instance's `config.json` and applies what applies without a restart
    /// (customer metadata, limits, a zone's nics); returns a note on what changed. A
    /// value the running instance cannot take is an error, before anything changes. `None`: this monitor
    /// applies nothing live (the default), and a `Reload` is refused.
    fn reload(&mut self) -> Option<Result<String, Self::Error>> {
        None
    }
}

/// Carries out `req` on `instance`; a failure is answered as a refusal.
pub fn answer<I: Instance + ?Sized>(instance: &mut I, req: MonitorRequest) -> Reply {
    let stop = |force, grace, then| StopRequest { force, grace, then };
    let result = match req {
        MonitorRequest::Status => return Reply::status(instance.status()),
        MonitorRequest::Stop {
            force,
            timeout_secs,
        } => instance
            .request_stop(stop(
                force,
                Some(Duration::from_secs(timeout_secs.into())),
                AfterStop::Exit,
            ))
            .map(Reply::ok),
        MonitorRequest::Reboot { force } => instance
            .request_stop(stop(force, None, AfterStop::Reboot))
            .map(Reply::ok),
        MonitorRequest::Console => instance
            .console()
            .map(|fd| Reply::ok("console attached").with_fd(fd)),
        MonitorRequest::Reload => match instance.reload() {
            Some(result) => result.map(Reply::ok),
            None => {
                return Reply::refused(
                    "this monitor applies no change without a restart: restart the instance",
                )
            }
        },
    };
    result.unwrap_or_else(|e| Reply::refused(e.to_string()))
}
