//! The `log` backend of every skerry program: `PREFIX: LEVEL: message` lines, on
//! stderr (imgadm, vmm) or handed to a line sink (init's console, which starts each
//! line with [`stamp`] and copies it to its log file).

use log::{Level, LevelFilter, Metadata, Record};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where formatted lines go.
pub enum Sink {
    /// One `eprintln!` per line.
    Stderr,
    /// A function given each line, without a trailing newline.
    Lines(fn(&str)),
}

/// A configured logger; [`Logger::install`] makes it the process's `log` backend.
pub struct Logger {
    prefix: String,
    level: LevelFilter,
    warn_word: &'static str,
    with_pid: bool,
    sink: Sink,
    limiter: Option<&'static Mutex<RateLimiter>>,
}

impl Logger {
    /// `PREFIX: info: ...` lines on stderr, at level info.
    pub fn new(prefix: impl Into<String>) -> Logger {
        Logger {
            prefix: prefix.into(),
            level: LevelFilter::Info,
            warn_word: "warn",
            with_pid: false,
            sink: Sink::Stderr,
            limiter: None,
        }
    }

    /// Sets the level.
    pub fn level(mut self, level: LevelFilter) -> Logger {
        self.level = level;
        self
    }

    /// Sets the level from environment variable `var` (`error`, `warn`, `debug`,
    /// `trace`); unset or anything else keeps the current one.
    pub fn level_from_env(mut self, var: &str) -> Logger {
        if let Some(level) = parse_level(std::env::var(var).ok().as_deref()) {
            self.level = level;
        }
        self
    }

    /// The word for warnings (`warn` by default; imgadm says `warning`).
    pub fn warn_word(mut self, word: &'static str) -> Logger {
        self.warn_word = word;
        self
    }

    /// Follows the prefix with the process id at the time of each line
    /// (`vmm[1234]`): the vmm forks into a PID namespace after installing its logger,
    /// and its lines then say `vmm[1]`.
    pub fn with_pid(mut self, on: bool) -> Logger {
        self.with_pid = on;
        self
    }

    /// Sends lines to `sink` instead of stderr.
    pub fn sink(mut self, sink: Sink) -> Logger {
        self.sink = sink;
        self
    }

    /// Passes every line through `limiter`, keyed by its call site: a process whose
    /// log lines an untrusted party can trigger (a guest, for the vmm) writes a bounded
    /// amount whatever it is made to do. When a silenced site opens again, a warning
    /// says how many of its lines were dropped.
    pub fn rate_limited(mut self, limiter: &'static Mutex<RateLimiter>) -> Logger {
        self.limiter = Some(limiter);
        self
    }

    /// The warning that `suppressed` lines of call site `site` were dropped by the
    /// rate limiter.
    pub fn suppressed(&self, suppressed: u64, site: Site) -> String {
        self.format(
            Level::Warn,
            &format_args!("{suppressed} messages suppressed ({}:{})", site.0, site.1),
        )
    }

    /// The line for a record at `level` saying `args`.
    pub fn format(&self, level: Level, args: &std::fmt::Arguments<'_>) -> String {
        let word = match level {
            Level::Error => "error",
            Level::Warn => self.warn_word,
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        if self.with_pid {
            format!("{}[{}]: {word}: {args}", self.prefix, std::process::id())
        } else {
            format!("{}: {word}: {args}", self.prefix)
        }
    }

    /// Installs the logger as the process's `log` backend; returns false (and does
    /// nothing) when one is installed already.
    pub fn install(self) -> bool {
        let level = self.level;
        if log::set_boxed_logger(Box::new(self)).is_ok() {
            log::set_max_level(level);
            true
        } else {
            false
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(limiter) = self.limiter {
            let site = (
                record.file_static().unwrap_or("?"),
                record.line().unwrap_or(0),
            );
            match RateLimiter::admit(limiter, site) {
                None => return,
                Some(0) => {}
                Some(suppressed) => self.emit(&self.suppressed(suppressed, site)),
            }
        }
        self.emit(&self.format(record.level(), record.args()));
    }

    fn flush(&self) {}
}

impl Logger {
    fn emit(&self, line: &str) {
        match self.sink {
            Sink::Stderr => eprintln!("{line}"),
            Sink::Lines(f) => f(line),
        }
    }
}

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
    /// Asks `limiter` about one line from `site` now: `None` to drop it, or how many
    /// lines of that site were dropped before it.
    pub fn admit(limiter: &Mutex<RateLimiter>, site: Site) -> Option<u64> {
        match limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(site, Instant::now())
        {
            Verdict::Write { suppressed } => Some(suppressed),
            Verdict::Drop => None,
        }
    }

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

fn parse_level(value: Option<&str>) -> Option<LevelFilter> {
    match value? {
        "error" => Some(LevelFilter::Error),
        "warn" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// Time on the monotonic clock (since boot, on a node).
pub fn monotonic() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .unwrap_or_default()
}

/// `[   12.345678] ` for now, like the kernel's own messages, so lines interleave
/// sensibly with dmesg on a node's console.
pub fn stamp() -> String {
    let t = monotonic();
    format!("[{:5}.{:06}] ", t.as_secs(), t.subsec_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_each_programs_format() {
        let vmm = Logger::new("vmm").with_pid(true);
        assert_eq!(
            vmm.format(Level::Warn, &format_args!("slow disk")),
            format!("vmm[{}]: warn: slow disk", std::process::id())
        );
        let imgadm = Logger::new("imgadm").warn_word("warning");
        assert_eq!(
            imgadm.format(Level::Warn, &format_args!("source x: down")),
            "imgadm: warning: source x: down"
        );
        assert_eq!(
            imgadm.format(Level::Error, &format_args!("e")),
            "imgadm: error: e"
        );
        let init = Logger::new("init");
        assert_eq!(
            init.format(Level::Debug, &format_args!("up")),
            "init: debug: up"
        );
    }

    #[test]
    fn levels_come_from_the_environment_or_stay() {
        assert_eq!(parse_level(Some("debug")), Some(LevelFilter::Debug));
        assert_eq!(parse_level(Some("error")), Some(LevelFilter::Error));
        assert_eq!(parse_level(Some("loud")), None);
        assert_eq!(parse_level(None), None);
        let l = Logger::new("x").level_from_env("HOST_LOG_TEST_UNSET_VARIABLE");
        assert_eq!(l.level, LevelFilter::Info);
    }

    #[test]
    fn stamp_looks_like_the_kernel() {
        let s = stamp();
        assert!(s.starts_with('[') && s.ends_with("] "), "{s}");
        let inner = &s[1..s.len() - 2];
        let (secs, micros) = inner.trim().split_once('.').unwrap();
        assert!(secs.parse::<u64>().is_ok() && micros.len() == 6, "{s}");
    }

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
