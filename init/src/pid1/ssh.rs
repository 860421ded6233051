//! SSH into the node: Debian's dropbear, started by PID 1 on the node's admin address.
//!
//! - Host keys are made by `dropbearkey` the first time and kept in the pool
//!   (`<pool>/config/ssh/`), so a node keeps its identity across reboots. Without a
//!   pool they are made under `/run` and change at every boot (the log says so).
//! - Root's `authorized_keys` is written at every boot from node.kdl's `ssh-key`s and
//!   the command line's `skerry.ssh-key=`s: the root filesystem is a tmpfs, so a key
//!   removed from both is gone after the next boot.
//! - Password logins are off (`-s`); the only way in is a listed key.
//! - dropbear's log (stderr) is relayed line by line into init's log (console and
//!   `/run/skerry/log`), bounded in line length and rate: connecting clients choose
//!   part of what it says. A refused login reads `ssh: login refused: ...`.
//! - If dropbear ends (killed, crashed, out of memory), init starts it again
//!   ([`Dropbear::supervise`]): SSH is the way into a node whose daemon is down, and
//!   losing it until the next boot would leave only the console.

use super::error::{io, BootError};
use crate::monitor::watch::Exit;
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The SSH server binary in the node image.
pub const DROPBEAR: &str = "/usr/sbin/dropbear";
/// Its key generator.
pub const DROPBEARKEY: &str = "/usr/bin/dropbearkey";
/// Host key types made at first boot (both quick to make, even under TCG).
const HOST_KEY_TYPES: [&str; 2] = ["ed25519", "ecdsa"];
/// Longest dropbear log line relayed; the rest of a longer one is dropped.
const MAX_LOG_LINE: u64 = 1024;
/// The first pause before starting dropbear again, and the pause again once it has
/// stayed up for [`STEADY`].
const MIN_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause: while dropbear keeps ending at once, each pause doubles up to
/// this, so a dropbear that cannot run costs a start a minute, not a busy loop.
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// How long dropbear must stay up for its next end to count as a first one.
const STEADY: Duration = Duration::from_secs(60);

/// Whether an ended dropbear may be started again: `false` from the shutdown on
/// ([`stop_restarting`]). Held across a start, so that once the shutdown has set it no
/// start is under way, and its kill of every process leaves no dropbear behind.
static RESTARTS: Mutex<bool> = Mutex::new(true);

/// From now on an ended dropbear stays ended: the node is shutting down (and is about
/// to kill every process, dropbear among them).
pub fn stop_restarting() {
    *RESTARTS.lock().unwrap_or_else(|e| e.into_inner()) = false;
}

/// A running dropbear, with what started it, to start it again.
pub struct Dropbear {
    pid: u32,
    pool: Option<PathBuf>,
    addr: Ipv4Addr,
    keys: Vec<String>,
}

impl Dropbear {
    /// Keeps dropbear running, forever: when it ends, says so and how, and starts it
    /// again after a pause ([`MIN_PAUSE`], doubling to [`MAX_PAUSE`] while it keeps
    /// ending within [`STEADY`]). A failed start is retried the same way.
    pub async fn supervise(mut self) {
        let mut pause = MIN_PAUSE;
        let mut since = Instant::now();
        loop {
            let ended = crate::monitor::watch::wait_exit(self.pid).await;
            if !*RESTARTS.lock().unwrap_or_else(|e| e.into_inner()) {
                return;
            }
            if since.elapsed() >= STEADY {
                pause = MIN_PAUSE;
            }
            let how = match ended {
                Exit::Code(c) => format!("exited with code {c}"),
                Exit::Signal(s) => format!("was killed by {s}"),
                Exit::Unknown => "ended".to_string(),
            };
            log::warn!(
                "ssh: dropbear (pid {}) {how}; starting it again in {} s",
                self.pid,
                pause.as_secs()
            );
            loop {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                since = Instant::now();
                let (pool, addr, keys) = (self.pool.clone(), self.addr, self.keys.clone());
                let started = tokio::task::spawn_blocking(move || {
                    let restarts = RESTARTS.lock().unwrap_or_else(|e| e.into_inner());
                    match *restarts {
                        true => {
                            Some(start(pool.as_deref(), addr, &keys).map_err(|e| e.to_string()))
                        }
                        false => None,
                    }
                })
                .await
                .unwrap_or_else(|e| Some(Err(e.to_string())));
                match started {
                    // Shutting down.
                    None => return,
                    Some(Ok(again)) => {
                        self = again;
                        break;
                    }
                    Some(Err(e)) => log::error!(
                        "ssh: starting dropbear again: {e}; next try in {} s",
                        pause.as_secs()
                    ),
                }
            }
        }
    }
}

/// Where the host keys live: the pool when there is one, else `/run` (lost at reboot).
pub fn host_key_dir(pool: Option<&Path>) -> PathBuf {
    match pool {
        Some(p) => spec::pool::config_dir(p).join("ssh"),
        None => PathBuf::from("/run/skerry/ssh"),
    }
}

/// Writes `home/.ssh/authorized_keys` (0600, in a 0700 directory, as dropbear
/// insists) with one key per line.
pub fn write_authorized_keys(home: &Path, keys: &[String]) -> Result<PathBuf, BootError> {
    let dir = home.join(".ssh");
    std::fs::create_dir_all(&dir).map_err(io(dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(dir.display()))?;
    let path = dir.join("authorized_keys");
    let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
    spec::atomic::write_atomic(&path, text.as_bytes()).map_err(io(path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(path.display()))?;
    Ok(path)
}

/// Makes each missing host key in `dir` with `dropbearkey` (into a temporary name,
/// renamed when complete, so an interrupted boot never leaves half a key); returns the
/// key files.
pub fn ensure_host_keys(dropbearkey: &str, dir: &Path) -> Result<Vec<PathBuf>, BootError> {
    std::fs::create_dir_all(dir).map_err(io(dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(dir.display()))?;
    let mut keys = Vec::new();
    for kind in HOST_KEY_TYPES {
        let path = dir.join(format!("dropbear_{kind}_host_key"));
        if !path.exists() {
            let tmp = dir.join(format!(".dropbear_{kind}_host_key.new"));
            let _ = std::fs::remove_file(&tmp);
            let out = Command::new(dropbearkey)
                .args(["-t", kind, "-f"])
                .arg(&tmp)
                .stdin(Stdio::null())
                .output()
                .map_err(io(dropbearkey))?;
            if !out.status.success() {
                return Err(BootError::Io {
                    what: format!("{dropbearkey} -t {kind} -f {}", tmp.display()),
                    source: std::io::Error::other(format!(
                        "{}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                });
            }
            std::fs::rename(&tmp, &path).map_err(io(path.display()))?;
            log::info!("ssh: made host key {}", path.display());
        }
        keys.push(path);
    }
    Ok(keys)
}

/// The public half and fingerprint of a host key, for the console (`dropbearkey -y`).
fn describe(dropbearkey: &str, key: &Path) -> Option<String> {
    let out = Command::new(dropbearkey)
        .arg("-y")
        .arg("-f")
        .arg(key)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let public = text.lines().find(|l| l.contains(' ') && !l.contains(':'))?;
    let fingerprint = text
        .lines()
        .find_map(|l| l.strip_prefix("Fingerprint: "))
        .unwrap_or("?");
    Some(format!(
        "{} {fingerprint}",
        public.split_whitespace().next().unwrap_or("?")
    ))
}

/// Starts dropbear on `addr`:22 with the pool's host keys and `keys` as root's
/// authorized keys; returns it, to be kept running ([`Dropbear::supervise`]). Its log
/// is relayed into init's log.
pub fn start(pool: Option<&Path>, addr: Ipv4Addr, keys: &[String]) -> Result<Dropbear, BootError> {
    let authorized = write_authorized_keys(Path::new("/root"), keys)?;
    if keys.is_empty() {
        log::warn!(
            "ssh: no ssh-key in node.kdl nor skerry.ssh-key= on the command line: nobody can log in over SSH"
        );
    }
    let dir = host_key_dir(pool);
    if pool.is_none() {
        log::warn!(
            "ssh: no pool: host keys in {} change at every boot",
            dir.display()
        );
    }
    let host_keys = ensure_host_keys(DROPBEARKEY, &dir)?;
    let mut cmd = Command::new(DROPBEAR);
    // -F foreground (init reaps it), -E log to stderr (relayed below), -s no password
    // logins, -P its pidfile.
    cmd.args(["-F", "-E", "-s", "-P", "/run/dropbear.pid", "-p"])
        .arg(format!("{addr}:22"));
    for k in &host_keys {
        cmd.arg("-r").arg(k);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(DROPBEAR))?;
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || relay_log(stderr));
    }
    for k in &host_keys {
        if let Some(d) = describe(DROPBEARKEY, k) {
            crate::console::say(&format!("ssh host key {d}"));
        }
    }
    crate::console::say(&format!(
        "ssh on {addr}:22 (dropbear, {} authorized key(s) in {}, password logins off)",
        keys.len(),
        authorized.display()
    ));
    Ok(Dropbear {
        pid: child.id(),
        pool: pool.map(Path::to_path_buf),
        addr,
        keys: keys.to_vec(),
    })
}

/// Reads dropbear's log lines (each cut at [`MAX_LOG_LINE`] bytes) and logs them,
/// at most a burst of 20 and then 5 a second; dropped lines are counted when logging
/// resumes.
fn relay_log(from: impl Read) {
    static LIMIT: Mutex<host::log::RateLimiter> =
        Mutex::new(host::log::RateLimiter::new(20, Duration::from_millis(200)));
    let mut reader = BufReader::new(from);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match (&mut reader).take(MAX_LOG_LINE).read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if raw.last() != Some(&b'\n') {
            // Cut: skip the rest of this line, still bounded per read.
            let mut rest = Vec::new();
            while (&mut reader)
                .take(MAX_LOG_LINE)
                .read_until(b'\n', &mut rest)
                .is_ok_and(|n| n > 0 && rest.last() != Some(&b'\n'))
            {
                rest.clear();
            }
        }
        let line = String::from_utf8_lossy(&raw);
        match host::log::RateLimiter::admit(&LIMIT, ("dropbear", 0)) {
            None => continue,
            Some(0) => {}
            Some(n) => log::warn!("dropbear: {n} log lines suppressed"),
        }
        log_line(line.trim_end());
    }
}

/// One dropbear line in init's log: refused logins as warnings that say so.
fn log_line(line: &str) {
    // dropbear's own prefix: "[pid] Mon DD HH:MM:SS "; init's lines carry the time.
    let text = match line.find("] ") {
        Some(i) if line.starts_with('[') => line[i + 2..].get(16..).unwrap_or(line),
        _ => line,
    };
    // A client picks part of the text (its user name): no control characters through.
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.contains("Exit before auth") || text.contains("Bad password") {
        log::warn!("ssh: login refused: {text}");
    } else {
        log::info!("ssh: {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_keys_are_private_and_one_per_line() {
        let home = tempfile::tempdir().unwrap();
        let keys = vec!["ssh-ed25519 AAAA a@b".to_string(), "ssh-rsa BBBB".into()];
        let path = write_authorized_keys(home.path(), &keys).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ssh-ed25519 AAAA a@b\nssh-rsa BBBB\n"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // The next boot's list replaces this one.
        write_authorized_keys(home.path(), &keys[1..]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ssh-rsa BBBB\n");
    }

    /// Needs Debian's dropbear-bin (tests/deps/image.txt): the host keys are made once
    /// and then kept.
    #[test]
    fn host_keys_are_made_once_and_kept() {
        let pool = tempfile::tempdir().unwrap();
        let dir = host_key_dir(Some(pool.path()));
        assert!(dir.ends_with("config/ssh"), "{}", dir.display());
        let bin = "dropbearkey";
        let keys = ensure_host_keys(bin, &dir)
            .unwrap_or_else(|e| panic!("{e} (is dropbear-bin installed? bash tests/setup)"));
        assert_eq!(keys.len(), HOST_KEY_TYPES.len());
        let before: Vec<Vec<u8>> = keys.iter().map(|k| std::fs::read(k).unwrap()).collect();
        let again = ensure_host_keys(bin, &dir).unwrap();
        let after: Vec<Vec<u8>> = again.iter().map(|k| std::fs::read(k).unwrap()).collect();
        assert_eq!(
            before, after,
            "a second boot must keep the node's host keys"
        );
        let d = describe(bin, &keys[0]).unwrap();
        assert!(d.starts_with("ssh-ed25519 SHA256:"), "{d}");
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
