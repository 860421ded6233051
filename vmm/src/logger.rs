//! A minimal logger: `vmm[pid]: LEVEL message` lines on stderr (init keeps the monitor's
//! stderr in the instance's monitor.log). `VMM_LOG=debug` raises the level.
//!
//! A guest decides how often many of these lines are written (every `outb` to the boot
//! marker, every sleep-state write, every bad queue size, which `virtio-queue` itself
//! logs), so every line goes through a [`RateLimiter`] keyed by its call site: a burst
//! of [`BURST`] lines, then one per [`REFILL`]; when a call site opens again, one line
//! says how many were suppressed. A guest can thus write at most `BURST` lines plus
//! one per `REFILL` per call site, whatever it does.

use log::{Level, LevelFilter, Metadata, Record};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines a call site may write at once.
pub const BURST: u32 = 10;
/// A silenced call site regains one line per this period.
pub const REFILL: Duration = Duration::from_secs(1);

/// A call site: source file and line.
pub type Site = (&'static str, u32);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    last: Instant,
    suppressed: u64,
}

/// Token buckets, one per call site (a finite set: the map stays small).
#[derive(Debug)]
pub struct RateLimiter {
    burst: u32,
    refill: Duration,
    buckets: BTreeMap<Site, Bucket>,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` lines of this site were dropped since the last one.
    Write {
        /// Lines dropped before this one.
        suppressed: u64,
    },
    /// Drop it.
    Drop,
}

impl RateLimiter {
    /// `burst` lines at once per site, then one per `refill`.
    pub const fn new(burst: u32, refill: Duration) -> Self {
        RateLimiter {
            burst,
            refill,
            buckets: BTreeMap::new(),
        }
    }

    /// Decides about one line from `site` at `now`.
    pub fn check(&mut self, site: Site, now: Instant) -> Verdict {
        let (burst, refill) = (self.burst, self.refill);
        let b = self.buckets.entry(site).or_insert(Bucket {
            tokens: burst,
            last: now,
            suppressed: 0,
        });
        let periods = now.saturating_duration_since(b.last).as_nanos() / refill.as_nanos().max(1);
        if periods > 0 {
            let add = u32::try_from(periods).unwrap_or(u32::MAX);
            b.tokens = b.tokens.saturating_add(add).min(burst);
            b.last = if b.tokens == burst {
                now
            } else {
                // Keep the fraction of a period already elapsed.
                b.last + refill * add
            };
        }
        if b.tokens == 0 {
            b.suppressed += 1;
            return Verdict::Drop;
        }
        b.tokens -= 1;
        let suppressed = std::mem::take(&mut b.suppressed);
        Verdict::Write { suppressed }
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(BURST, REFILL)
    }
}

/// Every line of the process, whichever way it is written, shares these.
static LIMITER: Mutex<RateLimiter> = Mutex::new(RateLimiter::new(BURST, REFILL));
/// `None`: stderr.
static SINK: Mutex<Option<Box<dyn Write + Send>>> = Mutex::new(None);

fn write_line(line: &str) {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let _ = match sink.as_mut() {
        Some(w) => w.write_all(line.as_bytes()),
        None => std::io::stderr().write_all(line.as_bytes()),
    };
}

/// Writes `text` (a full line without its newline) unless `site` is over its rate,
/// preceded by a note of what was suppressed when the site opens again.
fn limited(site: Site, text: std::fmt::Arguments) {
    let verdict = LIMITER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(site, Instant::now());
    let Verdict::Write { suppressed } = verdict else {
        return;
    };
    let mut line = String::new();
    if suppressed > 0 {
        line = format!(
            "vmm[{}]: warn: {suppressed} messages suppressed ({}:{})\n",
            std::process::id(),
            site.0,
            site.1
        );
    }
    line.push_str(&text.to_string());
    line.push('\n');
    write_line(&line);
}

/// Writes a line without the logger's prefix (the boot marker's `vmm: boot marker N at
/// US us`, which benchmarks parse), rate-limited per caller like every log line.
#[track_caller]
pub fn plain(text: std::fmt::Arguments) {
    let at = std::panic::Location::caller();
    limited((at.file(), at.line()), text);
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warn",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            let site = (
                record.file_static().unwrap_or("?"),
                record.line().unwrap_or(0),
            );
            limited(
                site,
                format_args!("vmm[{}]: {level}: {}", std::process::id(), record.args()),
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    let level = match std::env::var("VMM_LOG").as_deref() {
        Ok("debug") => LevelFilter::Debug,
        Ok("trace") => LevelFilter::Trace,
        Ok("warn") => LevelFilter::Warn,
        Ok("error") => LevelFilter::Error,
        _ => LevelFilter::Info,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Sends every line to `sink` instead of stderr (tests measure what a guest can make
/// the VMM write).
pub fn redirect(sink: Box<dyn Write + Send>) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_gets_a_burst_then_one_line_per_period_and_counts_the_rest() {
        let mut l = RateLimiter::new(3, Duration::from_secs(1));
        let t = Instant::now();
        let site = ("a.rs", 1);
        for _ in 0..3 {
            assert_eq!(l.check(site, t), Verdict::Write { suppressed: 0 });
        }
        for _ in 0..1000 {
            assert_eq!(l.check(site, t), Verdict::Drop);
        }
        // Another site has its own bucket.
        assert_eq!(l.check(("b.rs", 1), t), Verdict::Write { suppressed: 0 });
        let t1 = t + Duration::from_millis(1500);
        assert_eq!(l.check(site, t1), Verdict::Write { suppressed: 1000 });
        assert_eq!(l.check(site, t1), Verdict::Drop);
        // 0.5 s of the next period was already counted.
        assert_eq!(
            l.check(site, t + Duration::from_millis(2000)),
            Verdict::Write { suppressed: 1 }
        );
        // A long quiet spell refills to the burst, not beyond.
        let t2 = t + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(matches!(l.check(site, t2), Verdict::Write { .. }));
        }
        assert_eq!(l.check(site, t2), Verdict::Drop);
    }
}
