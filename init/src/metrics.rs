//! Starting and keeping up the metrics server (`skerry-metrics`) when node.kdl asks
//! for one (`metrics listen="ADDR:PORT"`). It is a separate process on purpose: it
//! parses whatever a network client sends, and nothing a client sends may reach
//! PID 1. init only spawns it, watches it exit, and starts it again with a backoff.

use crate::monitor::watch;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// First restart delay; doubled after each quick exit up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest restart delay (a port taken by someone else is retried this often).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A server that ran this long was healthy: the next restart is quick again.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The metrics server's command line.
pub fn command(bin: &PathBuf, listen: SocketAddr) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--listen")
        .arg(listen.to_string())
        .arg("--exit-with-parent")
        .stdin(Stdio::null());
    cmd
}

/// Spawns `bin --listen ADDR` and restarts it whenever it exits, for as long as the
/// runtime lives. Its stdout and stderr are init's (the node console).
pub fn supervise(bin: PathBuf, listen: SocketAddr) {
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            match command(&bin, listen).spawn() {
                Ok(child) => {
                    let pid = child.id();
                    log::info!("metrics server {pid} on http://{listen}/metrics");
                    // The child is reaped by wait_exit (or PID 1's reaper), not by Child.
                    drop(child);
                    let exit = watch::wait_exit(pid).await;
                    log::warn!("metrics server {pid} ended: {exit}");
                }
                Err(e) => log::error!("cannot start {}: {e}", bin.display()),
            }
            if started.elapsed() >= HEALTHY_AFTER {
                backoff = FIRST_BACKOFF;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}
