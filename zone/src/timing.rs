//! Optional phase timings of a zone start, for the benchmark: with
//! `SKERRY_ZONE_TIMING=1` in the environment, `zone run` prints how long each phase
//! took to stderr when it exits. Off, a mark costs one branch on a cached flag.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Instant;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SKERRY_ZONE_TIMING").is_some_and(|v| v == "1"))
}

thread_local! {
    static MARKS: RefCell<Vec<(&'static str, Instant)>> = const { RefCell::new(Vec::new()) };
}

/// Records that the phase `label` just ended.
pub fn mark(label: &'static str) {
    if enabled() {
        MARKS.with(|m| m.borrow_mut().push((label, Instant::now())));
    }
}

/// The recorded phases as (label, microseconds since the previous mark).
pub fn phases() -> Vec<(&'static str, u128)> {
    MARKS.with(|m| {
        let m = m.borrow();
        m.windows(2)
            .map(|w| (w[1].0, (w[1].1 - w[0].1).as_micros()))
            .collect()
    })
}

/// Prints the phases to stderr (one `zone-timing <phase> <us>` line each).
pub fn report() {
    if enabled() {
        for (label, us) in phases() {
            eprintln!("zone-timing {label} {us}");
        }
    }
}
