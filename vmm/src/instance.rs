//! Instance mode (`vmm instance --config <pool>/<uuid>/config.json`): the monitor init
//! spawns for one HVM instance. It owns the control socket, pidfile, monitor.json and
//! the console pty, and runs the guest in a child `vmm` process per boot, so a guest
//! reset is a fresh process (restarted here) and a crash never takes the socket down.
//! Contract: `spec::monitor`.

use crate::bootdisk;
use crate::config::{mac_from, parse_mac, DiskConfig, NetConfig, VmConfig};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::Pid;
use spec::monitor::{
    self as contract, InstanceConfig, MonitorRequest, MonitorResponse, MonitorStatus,
};
use spec::{api::states, Kind};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exit code of a child `vmm` whose guest reset (restart it).
pub const RESET_EXIT: i32 = 3;
/// A boot shorter than this that ends in a reset counts as a quick reset.
const QUICK_RESET: Duration = Duration::from_secs(5);
/// Longest pause before restarting a guest that keeps resetting.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Console log bound (the current file; one older file is kept beside it).
pub const CONSOLE_LOG_MAX: u64 = 1 << 20;
/// Kernel command line every instance gets before its own `cmdline`.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 ro";

/// Why an instance could not be run.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// config.json unreadable or not an HVM instance.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An OS operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// No kernel on the boot disk.
    #[error(transparent)]
    BootDisk(#[from] bootdisk::BootDiskError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstanceError {
    let what = what.into();
    move |source| InstanceError::Io { what, source }
}

/// The guest one boot of the instance runs, as typed data: kernel and initrd taken
/// from the boot disk's /boot (extracted next to it), disks in virtio order, one tap
/// per nic. The monitor hands it to the child `vmm` as a JSON file.
pub fn child_config(cfg: &InstanceConfig) -> Result<VmConfig, InstanceError> {
    let bad = |reason: String| InstanceError::Config {
        path: contract::config_path(&cfg.pool, &cfg.uuid),
        reason,
    };
    let Kind::Hvm(hvm) = &cfg.spec.kind else {
        return Err(bad(format!(
            "instance {} is not an HVM instance",
            cfg.spec.name
        )));
    };
    let boot = hvm
        .disks
        .iter()
        .find(|d| d.boot)
        .ok_or_else(|| bad(format!("instance {} has no boot disk", cfg.spec.name)))?;
    let boot_dir = child_boot_dir(cfg);
    std::fs::create_dir_all(&boot_dir)
        .map_err(io_err(format!("creating {}", boot_dir.display())))?;
    // The disk is the guest's: it is read as the instance's own unprivileged ids.
    let (uid, gid) = crate::jail::instance_ids(&cfg.uuid, cfg.id_range_start);
    let files = bootdisk::extract_with(
        &contract::disk_path(&cfg.pool, &cfg.uuid, &boot.name),
        &boot_dir,
        &bootdisk::ExtractOptions {
            uid,
            gid,
            ..Default::default()
        },
    )?;
    let mut cmdline = format!("{BASE_CMDLINE} {}", files.root_arg());
    if let Some(extra) = &hvm.cmdline {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let vcpus =
        u8::try_from(hvm.vcpus).map_err(|_| bad(format!("{} vCPUs: at most 255", hvm.vcpus)))?;
    // The boot disk is /dev/vda; the others follow in declaration order.
    let disks = std::iter::once(boot)
        .chain(hvm.disks.iter().filter(|d| !d.boot))
        .map(|d| DiskConfig {
            path: contract::disk_path(&cfg.pool, &cfg.uuid, &d.name),
            read_only: false,
        })
        .collect();
    let nets = cfg
        .spec
        .nics
        .iter()
        .enumerate()
        .map(|(idx, nic)| {
            let mac = match &nic.mac {
                Some(m) => parse_mac(m).map_err(|e| bad(format!("nic {}: {e}", nic.name)))?,
                None => mac_from(&format!("{}/{idx}", cfg.uuid)),
            };
            let bridge = cfg
                .bridges
                .get(&nic.tag)
                .cloned()
                .unwrap_or_else(|| contract::default_bridge_name(&nic.tag));
            Ok(NetConfig {
                tap: contract::host_ifname(&cfg.uuid, idx),
                mac,
                bridge: Some(bridge),
            })
        })
        .collect::<Result<_, InstanceError>>()?;
    Ok(VmConfig {
        kernel: files.kernel,
        initrd: files.initrd,
        cmdline,
        memory: cfg.spec.memory,
        vcpus,
        disks,
        nets,
    })
}

/// Where a boot's kernel and initrd are extracted to, and its [`child_config`] file
/// written (`<pool>/<uuid>/boot/`).
fn child_boot_dir(cfg: &InstanceConfig) -> PathBuf {
    cfg.pool.join(&cfg.uuid).join("boot")
}

/// The file the child `vmm` reads its guest from (`--config-file`).
pub fn child_config_path(cfg: &InstanceConfig) -> PathBuf {
    child_boot_dir(cfg).join("vm.json")
}

/// The `vmm` arguments for one boot of the instance: how the child runs (jailed, in
/// its cgroup, its console log, its exit codes); the guest itself is in `config_file`.
pub fn child_args(cfg: &InstanceConfig, config_file: &Path) -> Vec<String> {
    let (uid, gid) = crate::jail::instance_ids(&cfg.uuid, cfg.id_range_start);
    vec![
        "--config-file".into(),
        config_file.display().to_string(),
        "--reset-exit-code".into(),
        RESET_EXIT.to_string(),
        // The monitor enforces stop timeouts itself.
        "--stop-timeout".into(),
        "86400".into(),
        "--console-log".into(),
        contract::console_log_path(&cfg.pool, &cfg.uuid)
            .display()
            .to_string(),
        "--jail".into(),
        "--jail-uid".into(),
        uid.to_string(),
        "--jail-gid".into(),
        gid.to_string(),
        "--cgroup".into(),
        cgroup_name(&cfg.uuid),
    ]
}

/// The cgroup of an instance's VMM (under `skerry/`).
pub fn cgroup_name(uuid: &str) -> String {
    format!("vmm-{uuid}")
}

struct State {
    status: MonitorStatus,
    child: Option<u32>,
    stopping: bool,
    reboot: bool,
}

struct Monitor {
    cfg: InstanceConfig,
    state: Mutex<State>,
    changed: Condvar,
    console: OwnedFd,
    console_slave: PathBuf,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Monitor {
    fn save(&self, st: &State) {
        let path = contract::status_path(&self.cfg.pool, &self.cfg.uuid);
        if let Err(e) = spec::atomic::write_json_atomic(&path, &st.status) {
            log::error!("writing {}: {e}", path.display());
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut st = crate::devices::bus::lock(&self.state);
        f(&mut st);
        self.save(&st);
        self.changed.notify_all();
    }

    fn spawn_child(&self) -> Result<Child, InstanceError> {
        let vm = child_config(&self.cfg)?;
        let config_file = child_config_path(&self.cfg);
        spec::atomic::write_json_atomic(&config_file, &vm)
            .map_err(io_err(format!("writing {}", config_file.display())))?;
        let args = child_args(&self.cfg, &config_file);
        let exe = std::env::current_exe().map_err(io_err("finding the vmm binary"))?;
        let slave = self.open_console_slave()?;
        let out = slave
            .try_clone()
            .map_err(io_err("duplicating the console"))?;
        Command::new(exe)
            .args(&args)
            .stdin(Stdio::from(slave))
            .stdout(Stdio::from(out))
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io_err("starting the guest's vmm"))
    }

    fn open_console_slave(&self) -> Result<OwnedFd, InstanceError> {
        let name = &self.console_slave;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(name)
            .map_err(io_err(format!("opening {}", name.display())))?;
        Ok(f.into())
    }

    /// Boots and supervises until the instance stops for good; returns the exit code.
    fn run(self: &Arc<Self>) -> i32 {
        let mut quick_resets = 0u32;
        loop {
            if crate::devices::bus::lock(&self.state).stopping {
                self.update(|st| {
                    st.status.state = states::STOPPED.into();
                    st.status.reason = "stopped".into();
                });
                return 0;
            }
            let booted = std::time::Instant::now();
            let mut child = match self.spawn_child() {
                Ok(c) => c,
                Err(e) => {
                    log::error!("{e}");
                    self.update(|st| {
                        st.status.state = states::FAILED.into();
                        st.status.reason = e.to_string();
                        st.status.instance_pid = None;
                    });
                    return 1;
                }
            };
            let pid = child.id();
            let mut stop_now = false;
            self.update(|st| {
                stop_now = st.stopping;
                st.child = Some(pid);
                st.reboot = false;
                st.status.state = if st.stopping {
                    states::STOPPING
                } else {
                    states::RUNNING
                }
                .into();
                st.status.instance_pid = Some(pid);
                st.status.started_at = Some(now());
                st.status.reason.clear();
            });
            if stop_now {
                // A stop request raced with this boot: it wins.
                let pid = Pid::from_raw(pid as i32);
                let _ = kill(pid, Signal::SIGQUIT);
                self.kill_after(pid, Duration::from_secs(2));
            }
            let status = child.wait();
            crate::jail::remove_cgroup(&cgroup_name(&self.cfg.uuid));
            let code = status.as_ref().ok().and_then(|s| s.code());
            let mut st = crate::devices::bus::lock(&self.state);
            st.child = None;
            st.status.instance_pid = None;
            let restart = !st.stopping && (st.reboot || code == Some(RESET_EXIT));
            if restart {
                st.status.reason = "guest rebooted".into();
                self.save(&st);
                // A guest that resets right away (triple faults at boot, say) is
                // restarted with a growing pause, so it cannot spin a CPU; a stop
                // request ends the pause.
                quick_resets = if booted.elapsed() < QUICK_RESET {
                    quick_resets + 1
                } else {
                    0
                };
                if quick_resets > 3 {
                    let pause = RESTART_BACKOFF_MAX
                        .min(Duration::from_millis(100 << (quick_resets - 3).min(6)));
                    log::warn!("guest reset {quick_resets} times in a row within {QUICK_RESET:?}; restarting in {pause:?}");
                    let _ = self
                        .changed
                        .wait_timeout_while(st, pause, |s| !s.stopping)
                        .map(|(st, _)| drop(st));
                }
                continue;
            }
            let (state, reason, exit) = match (st.stopping, code) {
                (true, _) | (false, Some(0)) => (states::STOPPED, "stopped".to_owned(), 0),
                (false, Some(c)) => (states::FAILED, format!("vmm exited with status {c}"), 1),
                (false, None) => (states::FAILED, format!("vmm killed: {status:?}"), 1),
            };
            st.status.state = state.into();
            st.status.reason = reason;
            self.save(&st);
            self.changed.notify_all();
            return exit;
        }
    }

    fn request_stop(self: &Arc<Self>, force: bool, grace: Duration, reboot: bool) {
        let pid = {
            let mut st = crate::devices::bus::lock(&self.state);
            if reboot {
                st.reboot = true;
            } else {
                st.stopping = true;
                st.status.state = states::STOPPING.into();
                self.save(&st);
            }
            st.child
        };
        let Some(pid) = pid else { return };
        let pid = Pid::from_raw(pid as i32);
        if force {
            // SIGQUIT: the jail's outer process kills the guest's vmm and reaps it;
            // SIGKILL after a moment if even that does not happen.
            let _ = kill(pid, Signal::SIGQUIT);
            self.kill_after(pid, Duration::from_secs(2));
            return;
        }
        // SIGTERM makes the child press the ACPI power button.
        let _ = kill(pid, Signal::SIGTERM);
        self.kill_after(pid, grace);
    }

    /// SIGKILLs `pid` if it is still the running guest process after `grace`.
    fn kill_after(self: &Arc<Self>, pid: Pid, grace: Duration) {
        let me = self.clone();
        std::thread::spawn(move || {
            let st = crate::devices::bus::lock(&me.state);
            let (st, timeout) = me
                .changed
                .wait_timeout_while(st, grace, |s| s.child == Some(pid.as_raw() as u32))
                .unwrap_or_else(|e| e.into_inner());
            if timeout.timed_out() && st.child == Some(pid.as_raw() as u32) {
                log::warn!("guest did not stop within {grace:?}; killing its vmm");
                let _ = kill(pid, Signal::SIGKILL);
            }
        });
    }

    fn handle(self: &Arc<Self>, req: MonitorRequest, stream: &UnixStream) -> MonitorResponse {
        let ok = |message: &str| MonitorResponse {
            ok: true,
            message: message.into(),
            status: None,
        };
        match req {
            MonitorRequest::Status => MonitorResponse {
                status: Some(crate::devices::bus::lock(&self.state).status.clone()),
                ..ok("")
            },
            MonitorRequest::Stop {
                force,
                timeout_secs,
            } => {
                self.request_stop(force, Duration::from_secs(timeout_secs.into()), false);
                ok("stopping")
            }
            MonitorRequest::Reboot { force } => {
                self.request_stop(force, Duration::from_secs(30), true);
                ok("rebooting")
            }
            MonitorRequest::Console => {
                let mut line = serde_json::to_vec(&ok("console")).unwrap_or_default();
                line.push(b'\n');
                let fds = [self.console.as_raw_fd()];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                let iov = [std::io::IoSlice::new(&line)];
                if let Err(e) =
                    sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
                {
                    log::warn!("handing over the console: {e}");
                }
                // Already answered, with the fd attached.
                MonitorResponse {
                    ok: true,
                    message: String::new(),
                    status: None,
                }
            }
        }
    }

    fn serve(self: &Arc<Self>, listener: UnixListener) {
        for stream in listener.incoming().flatten() {
            let me = self.clone();
            std::thread::spawn(move || {
                let Ok(read) = stream.try_clone() else { return };
                for line in BufReader::new(read).lines() {
                    let Ok(line) = line else { return };
                    let console = line.contains("\"console\"");
                    let resp = match serde_json::from_str::<MonitorRequest>(&line) {
                        Ok(req) => me.handle(req, &stream),
                        Err(e) => MonitorResponse {
                            ok: false,
                            message: format!("bad request: {e}"),
                            status: None,
                        },
                    };
                    if console && resp.message.is_empty() {
                        continue;
                    }
                    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
                    out.push(b'\n');
                    if (&stream).write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    }
}

fn read_config(path: &Path) -> Result<InstanceConfig, InstanceError> {
    let bad = |reason: String| InstanceError::Config {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
}

/// Own session, stdio away from the parent's, so init dying cannot hurt the monitor;
/// log lines go to the instance's monitor.log.
fn detach(log: &Path) -> Result<(), InstanceError> {
    let _ = nix::unistd::setsid();
    let null = std::fs::File::open("/dev/null").map_err(io_err("opening /dev/null"))?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("opening {}", log.display())))?;
    for (fd, target) in [(&null, 0), (&out, 1), (&out, 2)] {
        // SAFETY: dup2 onto the stdio numbers, from descriptors this function owns.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(io_err("redirecting stdio")(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn raw_pty() -> Result<(OwnedFd, PathBuf), InstanceError> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let pty = nix::pty::openpty(None, None).map_err(|e| InstanceError::Io {
        what: "opening the console pty".into(),
        source: e.into(),
    })?;
    if let Ok(mut t) = tcgetattr(&pty.slave) {
        cfmakeraw(&mut t);
        let _ = tcsetattr(&pty.slave, SetArg::TCSANOW, &t);
    }
    let name = nix::unistd::ttyname(&pty.slave).map_err(|e| InstanceError::Io {
        what: "naming the console pty".into(),
        source: e.into(),
    })?;
    // The slave is reopened per boot; this one closes here.
    Ok((pty.master, name))
}

/// Entry point of `vmm instance`; returns the process exit code (see the contract).
pub fn main(config_path: &Path) -> Result<i32, InstanceError> {
    let cfg = read_config(config_path)?;
    detach(&cfg.pool.join(&cfg.uuid).join("monitor.log"))?;
    if !matches!(cfg.spec.kind, Kind::Hvm(_)) {
        return Err(InstanceError::Config {
            path: config_path.to_owned(),
            reason: format!("instance {} is not an HVM instance", cfg.spec.name),
        });
    }
    std::fs::create_dir_all(&cfg.run_dir)
        .map_err(io_err(format!("creating {}", cfg.run_dir.display())))?;
    // First of all: a live monitor of this instance keeps it, and is never disturbed.
    let lock_path = contract::lock_path(&cfg.run_dir, &cfg.uuid);
    let mut lock = contract::MonitorLock::take(&lock_path).map_err(|e| match e {
        contract::LockError::Io { path, source } => InstanceError::Io {
            what: format!("locking {}", path.display()),
            source,
        },
        contract::LockError::Held { path, pid } => InstanceError::Config {
            path,
            reason: format!("another monitor (pid {pid}) holds it: it owns this instance"),
        },
    })?;
    let sock = contract::socket_path(&cfg.run_dir, &cfg.uuid);
    if UnixStream::connect(&sock).is_ok() {
        return Err(InstanceError::Config {
            path: sock,
            reason: "another monitor is already serving this instance".into(),
        });
    }
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(io_err(format!("binding {}", sock.display())))?;
    // Only root (init) may stop guests or take their consoles.
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io_err(format!("restricting {}", sock.display())))?;
    let pidfile = contract::pidfile_path(&cfg.run_dir, &cfg.uuid);
    spec::atomic::write_atomic(&pidfile, format!("{}\n", std::process::id()).as_bytes())
        .map_err(io_err(format!("writing {}", pidfile.display())))?;

    let (console, console_slave) = raw_pty()?;
    let monitor = Arc::new(Monitor {
        state: Mutex::new(State {
            status: MonitorStatus {
                pid: std::process::id(),
                state: states::PROVISIONING.into(),
                instance_pid: None,
                started_at: None,
                reason: String::new(),
                details: [("vmm".to_string(), "skerry".to_string())].into(),
            },
            child: None,
            stopping: false,
            reboot: false,
        }),
        changed: Condvar::new(),
        console,
        console_slave,
        cfg,
    });
    {
        let m = monitor.clone();
        std::thread::spawn(move || m.serve(listener));
    }
    {
        // SIGTERM/SIGINT to the monitor: graceful stop of the guest.
        let m = monitor.clone();
        std::thread::spawn(move || {
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(Signal::SIGTERM);
            set.add(Signal::SIGINT);
            while set.wait().is_ok() {
                m.request_stop(false, Duration::from_secs(30), false);
            }
        });
    }
    let code = monitor.run();
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&pidfile);
    lock.release();
    Ok(code)
}
