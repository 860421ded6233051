//! A zone and whatever shares its monitor's log cannot fill the pool: a zone that
//! floods its console, and a process flooding monitor.log through its own descriptor
//! (as the jailed vmm holds one, or anything a monitor starts), leave at most two
//! bounded parts of each log.

mod common;

use common::pool::{wait_exit, wait_for, MonitorGuard, Pool};
use common::require_root;
use monitor::{self as contract, MonitorRequest, MONITOR_LOG_MAX};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_console_flood_keeps_two_bounded_parts() {
    require_root();
    let pool = Pool::new(&["/bin/sh", "-c", "yes 'console flood from the zone'"]);
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    pool.wait_running();
    let log = contract::console_log_path(pool.dir(), &pool.config.uuid);
    let old = zone::console::rotated_path(&log);
    // Wait for the flood to have rotated the log at least once, then some more.
    wait_for("the console log to rotate", || old.exists().then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let (cur, prev) = (size(&log), size(&old));
    pool.request(MonitorRequest::Stop {
        force: true,
        timeout_secs: 0,
    });
    wait_exit(&mut child);
    let limit = zone::console::LOG_LIMIT;
    assert!(
        cur <= limit && prev <= limit,
        "console.log {cur}, .0 {prev}"
    );
    assert!(prev > limit / 2, "the flood did not fill a part: .0 {prev}");
}

#[test]
fn a_monitor_log_flood_through_a_shared_descriptor_is_cut_back() {
    require_root();
    let pool = Pool::new(&["/bin/sh", "-c", "sleep 600"]);
    let mut child = pool.spawn();
    let _guard = MonitorGuard(&pool);
    pool.wait_running();
    let log = contract::monitor_log_path(pool.dir(), &pool.config.uuid);
    let mut hostile = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let chunk = vec![b'x'; 64 << 10];
    let flood = 64 * MONITOR_LOG_MAX;
    let mut written = 0;
    while written < flood {
        hostile.write_all(&chunk).unwrap();
        written += chunk.len() as u64;
    }
    // Within a check interval or two, the monitor has cut it back.
    wait_for("monitor.log to be bounded", || {
        (size(&log) <= MONITOR_LOG_MAX).then_some(())
    });
    let old = contract::rotated_monitor_log(&log);
    assert!(size(&old) <= MONITOR_LOG_MAX, ".0 is {}", size(&old));
    // The monitor still writes its own lines to the log, at its new end.
    hostile.write_all(b"\nafter the flood\n").unwrap();
    pool.request(MonitorRequest::Stop {
        force: true,
        timeout_secs: 0,
    });
    assert_eq!(wait_exit(&mut child), 0);
    assert!(size(&log) <= MONITOR_LOG_MAX, "{}", size(&log));
    let text = std::fs::read(&log).unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains("after the flood"),
        "the log was replaced rather than truncated"
    );
}
