//! Logging in to a node over SSH with Debian's OpenSSH client (`ssh`, `ssh-keygen`):
//! keys made for the test, the node reached through run-node's `--ssh-port`.

use crate::{io_err, E2eError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A key pair made with `ssh-keygen` for one test.
#[derive(Debug, Clone)]
pub struct SshKey {
    /// The private key file.
    pub private: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA... COMMENT`).
    pub public: String,
}

impl SshKey {
    /// Makes an ed25519 key without a passphrase in `dir`, named and commented `name`.
    pub fn generate(dir: &Path, name: &str) -> Result<SshKey> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let private = dir.join(name);
        crate::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&private),
        )?;
        let pub_path = private.with_extension("pub");
        let public = std::fs::read_to_string(&pub_path)
            .map_err(io_err(format!("reading {}", pub_path.display())))?
            .trim()
            .to_string();
        Ok(SshKey { private, public })
    }
}

/// What one `ssh` run gave.
#[derive(Debug, Clone)]
pub struct SshOutput {
    /// ssh's exit status (255: ssh itself failed, e.g. the login was refused).
    pub status: i32,
    /// The remote command's stdout.
    pub stdout: String,
    /// ssh's and the command's stderr.
    pub stderr: String,
}

/// `root@127.0.0.1:port`, the node behind run-node's forward, with its own
/// known_hosts file: the first login records the node's host key, later ones can
/// insist on it.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// The forwarded port on 127.0.0.1.
    pub port: u16,
    /// The known_hosts file for this node.
    pub known_hosts: PathBuf,
}

impl SshTarget {
    /// Runs `command` as root on the node with `key` (only that key is offered),
    /// feeding it `stdin`. `strict`: the node's host key must be the one already in
    /// known_hosts; otherwise a new one is recorded.
    pub fn run(&self, key: &SshKey, command: &str, stdin: &str, strict: bool) -> Result<SshOutput> {
        let mut cmd = Command::new("ssh");
        cmd.arg("-p")
            .arg(self.port.to_string())
            .arg("-i")
            .arg(&key.private)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=60", "-o", "LogLevel=ERROR"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("-o")
            .arg(if strict {
                "StrictHostKeyChecking=yes"
            } else {
                "StrictHostKeyChecking=accept-new"
            })
            .args(["-F", "/dev/null", "root@127.0.0.1", command])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("ssh -p {} root@127.0.0.1 {command:?}", self.port);
        let mut child = cmd.spawn().map_err(io_err(format!("starting {what}")))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .map_err(io_err(format!("writing to {what}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(io_err(format!("waiting for {what}")))?;
        Ok(SshOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Like [`SshTarget::run`] without input; an exit status other than 0 is an error.
    pub fn ok(&self, key: &SshKey, command: &str, strict: bool) -> Result<String> {
        let out = self.run(key, command, "", strict)?;
        if out.status != 0 {
            return Err(E2eError::Command {
                what: format!("ssh -p {} root@127.0.0.1 {command:?}", self.port),
                detail: format!("exit {}\n{}{}", out.status, out.stdout, out.stderr),
            });
        }
        Ok(out.stdout)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for run-node's forward).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("binding 127.0.0.1:0"))?;
    let port = l.local_addr().map_err(io_err("local address"))?.port();
    Ok(port)
}
