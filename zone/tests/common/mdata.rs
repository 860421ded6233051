//! The mdata tools as a zone runs them: built statically (the busybox rootfs has no
//! libc), copied into a test rootfs, and driven through the zone's console.

use super::pool::{wait_for, Pool};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The four tools mdata-client has.
pub const TOOLS: [&str; 4] = ["mdata-get", "mdata-put", "mdata-list", "mdata-delete"];

/// The directory holding the statically linked mdata tools, built once per test
/// process (cargo's own lock orders concurrent builds) in their own target directory
/// under the workspace's, so the test build's directory is never contended.
pub fn static_tools() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = workspace.join("target/mdata-static");
        let triple = "x86_64-unknown-linux-gnu";
        let out = Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .current_dir(&workspace)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args(["build", "-q", "-p", "mdata", "--bins", "--target", triple])
            .arg("--target-dir")
            .arg(&target)
            .output()
            .expect("running cargo to build the static mdata tools");
        assert!(
            out.status.success(),
            "building the static mdata tools failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = target.join(triple).join("debug");
        for tool in TOOLS {
            let ldd = Command::new("ldd").arg(dir.join(tool)).output().unwrap();
            let text = String::from_utf8_lossy(&ldd.stdout).to_string()
                + &String::from_utf8_lossy(&ldd.stderr);
            assert!(
                text.contains("statically linked") || text.contains("not a dynamic"),
                "{tool} is not static: {text}"
            );
        }
        dir
    })
}

/// Copies the static tools into `rootfs`'s /usr/sbin (where mdata-client installs them).
pub fn install_tools(rootfs: &Path) {
    let sbin = rootfs.join("usr/sbin");
    std::fs::create_dir_all(&sbin).unwrap();
    for tool in TOOLS {
        std::fs::copy(static_tools().join(tool), sbin.join(tool)).unwrap();
    }
}

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
