//! What init tells people: timestamped console lines, the log, and the boot timeline.
//!
//! Every line starts with the monotonic clock, like the kernel's own messages
//! (`[   12.345678] `), so init's lines interleave sensibly with dmesg on a node's
//! console. `skerry: ...` lines are the stable ones that tests and people grep for.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use host::log::{monotonic, stamp};

fn log_file() -> &'static Mutex<Option<File>> {
    static FILE: OnceLock<Mutex<Option<File>>> = OnceLock::new();
    FILE.get_or_init(|| Mutex::new(None))
}

/// Also append every line to `path` (`/run/skerry/log` on a node).
pub fn log_to_file(path: &std::path::Path) -> std::io::Result<()> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    if let Ok(mut g) = log_file().lock() {
        *g = Some(f);
    }
    Ok(())
}

fn emit(line: &str) {
    let line = format!("{}{line}\n", stamp());
    // One write per line so concurrent lines never interleave mid-line.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
    let _ = std::io::stdout().flush();
    if let Ok(mut g) = log_file().lock() {
        if let Some(f) = g.as_mut() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// `skerry: instance NAME TYPE STATE` (with the reason, when there is one).
pub fn instance_line(name: &str, kind: &str, state: &str, reason: &str) {
    if reason.is_empty() {
        emit(&format!("skerry: instance {name} {kind} {state}"));
    } else {
        emit(&format!(
            "skerry: instance {name} {kind} {state} ({reason})"
        ));
    }
}

/// `skerry: node ready (N running)`.
pub fn node_ready(running: usize) {
    emit(&format!("skerry: node ready ({running} running)"));
}

/// A free-form `skerry: ...` line.
pub fn say(msg: &str) {
    emit(&format!("skerry: {msg}"));
}

/// Installs the `log` backend: `init: LEVEL: message` lines with the same timestamps
/// and destinations as every other console line (`SKERRY_LOG=debug` for more).
pub fn init_logging() {
    host::log::Logger::new("init")
        .level_from_env("SKERRY_LOG")
        .sink(host::log::Sink::Lines(emit))
        .install();
}

/// The boot timeline: each phase and how long it took.
#[derive(Debug, Default)]
pub struct Timeline {
    phases: Mutex<Vec<(String, u64)>>,
}

impl Timeline {
    /// Records `name` as having taken `d`, and logs it.
    pub fn record(&self, name: &str, d: Duration) {
        log::info!("phase {name}: {:.3} ms", d.as_secs_f64() * 1000.0);
        self.insert(name, d);
    }

    /// Records a phase already logged (PID 1's early phases).
    pub fn insert(&self, name: &str, d: Duration) {
        if let Ok(mut p) = self.phases.lock() {
            p.push((name.to_string(), d.as_micros() as u64));
        }
    }

    /// Runs `f` as phase `name`.
    pub fn phase<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.record(name, start.elapsed());
        out
    }

    /// Phases so far, `(name, microseconds)`.
    pub fn phases(&self) -> Vec<(String, u64)> {
        self.phases.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_keeps_phases_in_order() {
        let t = Timeline::default();
        t.phase("a", || ());
        t.record("b", Duration::from_millis(2));
        let p = t.phases();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1], ("b".to_string(), 2000));
    }
}
