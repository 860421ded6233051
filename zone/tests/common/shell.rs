//! A shell in a zone, driven through its console: how the tests run the mdata tools
//! (built statically by testkit) inside a zone.

use super::pool::{wait_for, Pool};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

/// A shell in the zone, on its console: runs commands and reads back what they print.
pub struct ZoneShell<'a> {
    pool: &'a Pool,
    console: std::fs::File,
}

impl<'a> ZoneShell<'a> {
    /// Attaches to the console of `pool`'s running zone, whose init is `/bin/sh`.
    pub fn attach(pool: &'a Pool) -> ZoneShell<'a> {
        let (resp, fd) = pool.request(monitor::MonitorRequest::Console);
        assert!(resp.ok, "{resp:?}");
        ZoneShell {
            pool,
            console: std::fs::File::from(fd.expect("console fd")),
        }
    }

    /// Runs `cmd` in the zone's shell; its exit code and output (stdout and stderr).
    pub fn run(&mut self, cmd: &str) -> (i32, String) {
        // Unique across shells: the upper layer keeps an earlier boot's files.
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        let line = format!(
            "({cmd}) >/.t{n}.out 2>&1; echo $? >/.t{n}.rc.tmp; mv /.t{n}.rc.tmp /.t{n}.rc\n"
        );
        self.console.write_all(line.as_bytes()).unwrap();
        let upper = self.pool.zone_dir().join("upper");
        let rc = wait_for(&format!("`{cmd}` in the zone"), || {
            std::fs::read_to_string(upper.join(format!(".t{n}.rc"))).ok()
        });
        let out = std::fs::read_to_string(upper.join(format!(".t{n}.out"))).unwrap_or_default();
        (rc.trim().parse().unwrap(), out)
    }

    /// Runs `cmd`, asserting it succeeds; its output.
    pub fn ok(&mut self, cmd: &str) -> String {
        let (rc, out) = self.run(cmd);
        assert_eq!(rc, 0, "`{cmd}` in the zone failed: {out}");
        out
    }
}
