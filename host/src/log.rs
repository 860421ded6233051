//! The `log` backend of every skerry program: `PREFIX: LEVEL: message` lines, on
//! stderr (imgadm, vmm) or handed to a line sink (init's console, which starts each
//! line with [`stamp`] and copies it to its log file).

use log::{Level, LevelFilter, Metadata, Record};
use std::time::Duration;

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
        let line = self.format(record.level(), record.args());
        match self.sink {
            Sink::Stderr => eprintln!("{line}"),
            Sink::Lines(f) => f(&line),
        }
    }

    fn flush(&self) {}
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
}
