//! Carrying out the first-boot [`Step`]s under a root directory (`/` on a guest, a
//! temporary tree in tests), or only printing them (dry run).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Step, STATE_DIR};

/// How to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The guest's root: files are written under it, the user-script runs in it.
    /// Only when it is `/` is the kernel's hostname set too.
    pub root: PathBuf,
    /// Print every step and change nothing.
    pub dry_run: bool,
    /// The `ip` program (iproute2's or busybox's).
    pub ip_program: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            root: PathBuf::from("/"),
            dry_run: false,
            ip_program: PathBuf::from("ip"),
        }
    }
}

/// A step that failed; the others still run.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A file could not be written.
    #[error("could not write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A program could not be started.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: io::Error,
    },
    /// A program ran and failed.
    #[error("{command} failed: {status}")]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// The kernel's hostname could not be set.
    #[error("could not set the hostname to {name}: {source}")]
    Hostname {
        /// The name.
        name: String,
        /// The cause.
        source: nix::Error,
    },
}

/// The links of the guest: (name, MAC) from `<root>/sys/class/net/*/address`.
pub fn links(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir(root.join("sys/class/net")) else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(mac) = fs::read_to_string(entry.path().join("address")) {
            out.push((name, mac.trim().to_string()));
        }
    }
    out.sort();
    out
}

/// Where the marker saying this instance ran its user-script lives.
pub fn user_script_marker(root: &Path, uuid: &str) -> PathBuf {
    root.join(STATE_DIR)
        .join(format!("user-script.{uuid}.done"))
}

/// Applies `steps` in order, logging each to `log`; returns the failures (a failed
/// step does not stop the ones after it: a guest with a wrong route still gets its
/// SSH key).
pub fn apply(steps: &[Step], opts: &Options, log: &mut dyn Write) -> Vec<ApplyError> {
    let mut errors = Vec::new();
    let verb = if opts.dry_run { "would " } else { "" };
    for step in steps {
        let result = match step {
            Step::Warn(msg) => {
                let _ = writeln!(log, "warning: {msg}");
                Ok(())
            }
            Step::Hostname(name) => {
                let _ = writeln!(log, "{verb}set hostname {name}");
                if opts.dry_run {
                    Ok(())
                } else {
                    set_hostname(opts, name)
                }
            }
            Step::WriteFile {
                path,
                contents,
                mode,
                dir_mode,
            } => {
                let _ = writeln!(log, "{verb}write /{} (mode {mode:04o})", path.display());
                if opts.dry_run {
                    Ok(())
                } else {
                    write_file(
                        &opts.root.join(path),
                        contents.as_bytes(),
                        *mode,
                        Some(*dir_mode),
                    )
                }
            }
            Step::Ip(args) => {
                let _ = writeln!(log, "{verb}run ip {}", args.join(" "));
                if opts.dry_run {
                    Ok(())
                } else {
                    let mut cmd = Command::new(&opts.ip_program);
                    cmd.args(args);
                    run(cmd, &format!("ip {}", args.join(" ")))
                }
            }
            Step::Dhcp(link) => {
                let _ = writeln!(log, "{verb}start DHCP on {link}");
                if opts.dry_run {
                    Ok(())
                } else {
                    dhcp(link)
                }
            }
            Step::UserScript { script, uuid } => user_script(opts, script, uuid, verb, log),
        };
        if let Err(e) = result {
            let _ = writeln!(log, "error: {e}");
            errors.push(e);
        }
    }
    errors
}

fn set_hostname(opts: &Options, name: &str) -> Result<(), ApplyError> {
    write_file(
        &opts.root.join("etc/hostname"),
        format!("{name}\n").as_bytes(),
        0o644,
        None,
    )?;
    // Only the live system's kernel is ours to rename; a root directory is an image.
    if opts.root == Path::new("/") {
        nix::unistd::sethostname(name).map_err(|source| ApplyError::Hostname {
            name: name.to_string(),
            source,
        })?;
    }
    Ok(())
}

fn write_file(
    path: &Path,
    data: &[u8],
    mode: u32,
    dir_mode: Option<u32>,
) -> Result<(), ApplyError> {
    let err = |source| ApplyError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
        if let Some(m) = dir_mode {
            fs::set_permissions(dir, fs::Permissions::from_mode(m)).map_err(err)?;
        }
    }
    spec::atomic::write_atomic(path, data).map_err(err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)
}

fn run(mut cmd: Command, shown: &str) -> Result<(), ApplyError> {
    let status = cmd.status().map_err(|source| ApplyError::Spawn {
        program: shown.split(' ').next().unwrap_or(shown).to_string(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ApplyError::Failed {
            command: shown.to_string(),
            status,
        })
    }
}

/// busybox images have `udhcpc`, Debian ones `dhclient`: whichever is there.
fn dhcp(link: &str) -> Result<(), ApplyError> {
    let mut udhcpc = Command::new("udhcpc");
    udhcpc.args(["-b", "-i", link]);
    match run(udhcpc, &format!("udhcpc -b -i {link}")) {
        Err(ApplyError::Spawn { .. }) => {
            let mut dhclient = Command::new("dhclient");
            dhclient.arg(link);
            run(dhclient, &format!("dhclient {link}"))
        }
        other => other,
    }
}

fn user_script(
    opts: &Options,
    script: &str,
    uuid: &str,
    verb: &str,
    log: &mut dyn Write,
) -> Result<(), ApplyError> {
    let marker = user_script_marker(&opts.root, uuid);
    if marker.exists() {
        let _ = writeln!(log, "user-script already ran for instance {uuid}");
        return Ok(());
    }
    let _ = writeln!(log, "{verb}run user-script (first boot of instance {uuid})");
    if opts.dry_run {
        return Ok(());
    }
    let path = opts.root.join(STATE_DIR).join("user-script");
    write_file(&path, script.as_bytes(), 0o700, Some(0o700))?;
    // As on SmartOS the script is a program; one without `#!` is a shell script.
    let mut cmd = if script.starts_with("#!") {
        Command::new(&path)
    } else {
        let mut c = Command::new("/bin/sh");
        c.arg(&path);
        c
    };
    cmd.current_dir(&opts.root);
    let result = run(cmd, "user-script");
    // Once per instance, whatever its outcome: a failing script is not re-run at
    // every boot (the marker records how it ended).
    let outcome = match &result {
        Ok(()) => "exit status 0".to_string(),
        Err(e) => e.to_string(),
    };
    write_file(
        &marker,
        format!("{outcome}\n").as_bytes(),
        0o644,
        Some(0o700),
    )?;
    result
}
