//! The vmm's log lines: `vmm[PID]: LEVEL message` on stderr (init keeps the monitor's
//! stderr in the instance's monitor.log). `VMM_LOG=debug` raises the level. The
//! backend is [`host::log`]'s, shared by every skerry program.
//!
//! A guest decides how often many of these lines are written (every `outb` to the boot
//! marker, every sleep-state write, every bad queue size, which `virtio-queue` itself
//! logs), so every line goes through [`LIMITER`], keyed by its call site: a burst of
//! [`BURST`] lines, then one per [`REFILL`]; when a call site opens again, one line
//! says how many were suppressed. A guest can thus write at most `BURST` lines plus
//! one per `REFILL` per call site, whatever it does.

use host::log::RateLimiter;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Lines a call site may write at once.
pub const BURST: u32 = 10;
/// A silenced call site regains one line per this period.
pub const REFILL: Duration = Duration::from_secs(1);

/// Every line of the process, whichever way it is written, shares these buckets.
pub static LIMITER: Mutex<RateLimiter> = Mutex::new(RateLimiter::new(BURST, REFILL));

static SINK: Mutex<Option<Box<dyn Write + Send>>> = Mutex::new(None);

fn write_line(line: &str) {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let line = format!("{line}\n");
    let _ = match sink.as_mut() {
        Some(w) => w.write_all(line.as_bytes()),
        None => std::io::stderr().write_all(line.as_bytes()),
    };
}

/// Writes a line without the logger's prefix (the boot marker's `vmm: boot marker N at
/// US us`, which benchmarks parse), rate-limited per caller like every log line.
#[track_caller]
pub fn plain(text: std::fmt::Arguments) {
    let at = std::panic::Location::caller();
    let site = (at.file(), at.line());
    let Some(suppressed) = RateLimiter::admit(&LIMITER, site) else {
        return;
    };
    if suppressed > 0 {
        write_line(&logger().suppressed(suppressed, site));
    }
    write_line(&text.to_string());
}

/// The vmm's logger: `vmm[PID]` lines through [`LIMITER`], to stderr or the test sink.
fn logger() -> host::log::Logger {
    host::log::Logger::new("vmm")
        .with_pid(true)
        .level_from_env("VMM_LOG")
        .sink(host::log::Sink::Lines(write_line))
        .rate_limited(&LIMITER)
}

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    logger().install();
}

/// Sends every line to `sink` instead of stderr (tests measure what a guest can make
/// the VMM write).
pub fn redirect(sink: Box<dyn Write + Send>) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
}
