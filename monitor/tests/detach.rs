//! `detach` in a child process (it rewires the stdio and the session of its caller):
//! the test binary runs itself with MONITOR_TEST_DETACH_LOG set.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "MONITOR_TEST_DETACH_LOG";

/// In the child: detach, then show where stdio went.
fn child(log: &Path) {
    let before = nix::unistd::getsid(None).unwrap();
    match monitor::detach(log) {
        Ok(()) => {
            let sid = nix::unistd::getsid(None).unwrap();
            let leader = sid == nix::unistd::getpid();
            let mut input = Vec::new();
            let read = std::io::stdin().read_to_end(&mut input).unwrap();
            let line = format!("out: session leader {leader} (was {before}), stdin {read} bytes\n");
            nix::unistd::write(std::io::stdout(), line.as_bytes()).unwrap();
            nix::unistd::write(std::io::stderr(), b"err: here too\n").unwrap();
        }
        Err(e) => {
            nix::unistd::write(std::io::stdout(), format!("refused: {e}\n").as_bytes()).unwrap();
        }
    }
}

fn run_child(log: &Path) -> (String, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "detach_sends_stdio_to_the_log", "--nocapture"])
        .env(CHILD_ENV, log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // What the child would read, had its stdin stayed ours.
    let mut stdin = child.stdin.take().unwrap();
    let _ = std::io::Write::write_all(&mut stdin, b"typed\n");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read_to_string(log).unwrap_or_default(),
    )
}

#[test]
fn detach_sends_stdio_to_the_log() {
    if let Some(log) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&log));
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("monitor.log");
    std::fs::write(&log, "earlier line\n").unwrap();
    let (stdout, logged) = run_child(&log);
    assert!(!stdout.contains("out:"), "stdout not redirected: {stdout}");
    assert!(
        logged.starts_with("earlier line\n"),
        "the log is appended to: {logged}"
    );
    assert!(logged.contains("out: session leader true"), "{logged}");
    assert!(
        logged.contains("stdin 0 bytes"),
        "stdin is /dev/null: {logged}"
    );
    assert!(logged.contains("err: here too"), "{logged}");
    // A log that cannot be opened is an error naming it, and nothing is redirected.
    let missing = dir.path().join("no/such/dir/monitor.log");
    let (stdout, _) = run_child(&missing);
    assert!(
        stdout.contains("refused: opening") && stdout.contains("no/such/dir"),
        "{stdout}"
    );
}
