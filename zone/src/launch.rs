//! Starting one zone: the process choreography between the runtime (host root, in its
//! private mount namespace) and the zone.
//!
//! ```text
//! runtime                      intermediate (fork)            zone init (fork, pid 1)
//!   |-- fork ------------------> unshare(USER)
//!   |<-------------- "U" -------|
//!   uid/gid maps, idmapped
//!   image + overlay, cgroup
//!   |-- "G" ------------------>  setresuid(0), unshare(NS UTS
//!   |                            IPC NET CGROUP PID), fork ---> waits for "G"
//!   |<---------- zone pid ------| exits
//!   veths into the zone netns
//!   |-- "G" -------------------------------------------------> hostname, mounts,
//!   |                                                          pivot_root, caps,
//!   |<------ error text, or EOF when exec succeeded ----------- seccomp, exec
//! ```
//!
//! The runtime is a child subreaper, so the zone init becomes its child when the
//! intermediate exits. Every fork happens while the runtime is single-threaded (the
//! netlink thread only runs between forks), so the children may allocate freely.

use crate::cgroups::{Hierarchy, Limits, ZoneCgroup};
use crate::console::Pty;
use crate::error::{Context, Result, ZoneError};
use crate::idmap::IdMap;
use crate::net::{self, NicPlan};
use crate::rootfs::{self, Stage, Upper};
use crate::security;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Everything needed to start a zone.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Names the zone's cgroup and appears in errors.
    pub name: String,
    /// The image's unpacked rootfs (read-only overlay lower layer).
    pub image: PathBuf,
    /// The writable layer.
    pub upper: Upper,
    /// The zone's host id range.
    pub idmap: IdMap,
    /// The zone's hostname.
    pub hostname: String,
    /// The zone init (or command) and its arguments.
    pub command: Vec<String>,
    /// Environment of the zone init, on top of PATH, HOME and `container=skerry`.
    pub env: Vec<(String, String)>,
    /// cgroup limits.
    pub limits: Limits,
    /// Network interfaces.
    pub nics: Vec<NicPlan>,
    /// Written to the zone's /etc/resolv.conf when not empty.
    pub resolvers: Vec<IpAddr>,
    /// Kill the zone if the runtime dies (`zone run`; a monitor's zone outlives nothing
    /// but its monitor either, and sets this too).
    pub die_with_runtime: bool,
}

/// PATH inside a zone.
pub const ZONE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Prepares the calling process to host zones: a private mount namespace for the
/// staging mounts, and child-subreaper status so zone inits become its children.
/// Call it once, while single-threaded.
pub fn prepare_runtime() -> Result<()> {
    rootfs::enter_private_mount_ns()?;
    nix::sys::prctl::set_child_subreaper(true).ctx(|| "prctl(PR_SET_CHILD_SUBREAPER)".into())
}

/// How a zone's init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneExit {
    /// exit(code).
    Exited(i32),
    /// Killed by a signal. For a pid namespace init, SIGHUP means reboot(2) RESTART and
    /// SIGINT means POWER_OFF/HALT.
    Signaled(Signal),
}

impl ZoneExit {
    /// Shell convention: the code, or 128 + the signal number.
    pub fn code(&self) -> i32 {
        match self {
            ZoneExit::Exited(c) => *c,
            ZoneExit::Signaled(s) => 128 + *s as i32,
        }
    }

    /// Whether the zone called reboot(2) with RESTART.
    pub fn is_reboot(&self) -> bool {
        *self == ZoneExit::Signaled(Signal::SIGHUP)
    }

    /// Human-readable description for status and logs.
    pub fn describe(&self) -> String {
        match self {
            ZoneExit::Exited(c) => format!("exited with status {c}"),
            ZoneExit::Signaled(Signal::SIGHUP) => "rebooted itself (reboot(2) RESTART)".into(),
            ZoneExit::Signaled(Signal::SIGINT) => "powered off (reboot(2) POWER_OFF/HALT)".into(),
            ZoneExit::Signaled(s) => format!("killed by {s}"),
        }
    }
}

/// A running zone.
#[derive(Debug)]
pub struct Zone {
    /// The zone init's pid (host view).
    pub pid: Pid,
    /// A pidfd of the zone init: readable once it has exited; signals through it cannot
    /// hit a recycled pid.
    pub pidfd: OwnedFd,
    /// The zone's cgroup.
    pub cgroup: Box<dyn ZoneCgroup>,
    nics: Vec<NicPlan>,
    reaped: Option<ZoneExit>,
}

impl Zone {
    /// Sends `sig` to the zone init.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        if self.reaped.is_some() {
            return Ok(());
        }
        // SAFETY: pidfd_send_signal with a pidfd we own, a valid signal number and no
        // siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(ZoneError::io(
                    format!("sending {sig} to zone init {}", self.pid),
                    e,
                ));
            }
        }
        Ok(())
    }

    /// Kills the whole zone: SIGKILL to its init takes every process of its pid
    /// namespace with it.
    pub fn kill(&self) -> Result<()> {
        self.signal(Signal::SIGKILL)
    }

    /// Reaps the zone init if it has exited (`block` = wait for it).
    pub fn try_wait(&mut self, block: bool) -> Result<Option<ZoneExit>> {
        if let Some(e) = self.reaped {
            return Ok(Some(e));
        }
        let flags = if block {
            None
        } else {
            Some(WaitPidFlag::WNOHANG)
        };
        loop {
            match waitpid(self.pid, flags) {
                Ok(WaitStatus::Exited(_, code)) => self.reaped = Some(ZoneExit::Exited(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => self.reaped = Some(ZoneExit::Signaled(sig)),
                Ok(WaitStatus::StillAlive) => return Ok(None),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(ZoneError::io(
                        format!("waiting for zone init {}", self.pid),
                        e.into(),
                    ))
                }
            }
            reap_orphans();
            return Ok(self.reaped);
        }
    }

    /// After the init has exited: kills stragglers, removes the cgroup and the veths.
    pub fn cleanup(&mut self) -> Result<()> {
        if self.reaped.is_none() {
            self.kill()?;
            self.try_wait(true)?;
        }
        net::teardown(&self.nics);
        let r = self.cgroup.remove();
        reap_orphans();
        r
    }
}

/// Reaps whatever else died under us (a subreaper inherits zone processes that were
/// re-parented while their pid namespace was torn down).
pub fn reap_orphans() {
    while let Ok(status) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// What the zone init sends back when its setup fails: a kind and a message.
const ERR_NOT_FOUND: u8 = b'N';
const ERR_SETUP: u8 = b'S';

/// Starts a zone: cgroup, namespaces, rootfs, network, exec. `stage` is mounted on the
/// first start and reused on restarts. On error nothing of the zone is left.
pub fn start(
    spec: &LaunchSpec,
    stage: &mut Stage,
    hierarchy: &Hierarchy,
    pty: Option<&Pty>,
) -> Result<Zone> {
    if spec.command.is_empty() {
        return Err(ZoneError::Invalid(format!(
            "zone {}: no command to run",
            spec.name
        )));
    }
    rootfs::check_rootfs(&spec.image)?;
    let cgroup = hierarchy.create(&spec.name)?;
    crate::timing::mark("cgroup-create");
    match start_in(spec, stage, cgroup.as_ref(), pty) {
        Ok((pid, pidfd)) => Ok(Zone {
            pid,
            pidfd,
            cgroup,
            nics: spec.nics.clone(),
            reaped: None,
        }),
        Err(e) => {
            net::teardown(&spec.nics);
            let _ = cgroup.remove();
            reap_orphans();
            Err(e)
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe2".into())
}

fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> bool {
    let mut f = std::fs::File::from(fd.try_clone().expect("dup of a pipe fd"));
    f.read_exact(buf).is_ok()
}

fn write_all(fd: &OwnedFd, buf: &[u8]) -> bool {
    let mut f = std::fs::File::from(fd.try_clone().expect("dup of a pipe fd"));
    f.write_all(buf).is_ok()
}

/// Kills and reaps a child that is not the zone init yet.
fn abort_child(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

fn start_in(
    spec: &LaunchSpec,
    stage: &mut Stage,
    cgroup: &dyn ZoneCgroup,
    pty: Option<&Pty>,
) -> Result<(Pid, OwnedFd)> {
    cgroup.set_limits(&spec.limits)?;
    let child = ChildPlan::new(spec, stage.root(), pty)?;
    crate::timing::mark("limits+seccomp-compile");
    let (c_rx, p_tx) = pipe()?;
    let (p_rx, c_tx) = pipe()?;
    let (z_rx, go_tx) = pipe()?;
    let (err_rx, err_tx) = pipe()?;
    // SAFETY: the runtime is single-threaded here (see the module doc), so the child may
    // run arbitrary code, including allocation.
    let inter = match unsafe { fork() }.ctx(|| "fork".into())? {
        ForkResult::Child => {
            drop((p_tx, p_rx, go_tx, err_rx));
            let code = intermediate(&child, c_rx, c_tx, z_rx, err_tx);
            // SAFETY: _exit skips atexit handlers and destructors that belong to the
            // parent's copy of the state.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((c_rx, c_tx, z_rx, err_tx));
    let fail = |what: &str| -> ZoneError {
        abort_child(inter);
        child_error(&err_rx, spec).unwrap_or_else(|| ZoneError::Setup(what.to_string()))
    };
    let mut b = [0u8; 1];
    if !read_exact(&p_rx, &mut b) || b[0] != b'U' {
        return Err(fail("creating the user namespace"));
    }
    crate::timing::mark("fork+userns");
    let prep = (|| -> Result<()> {
        spec.idmap.write_for(inter.as_raw())?;
        if !stage.is_mounted() {
            let ns_path = format!("/proc/{inter}/ns/user");
            let userns = std::fs::File::open(&ns_path).ctx(|| format!("opening {ns_path}"))?;
            stage.mount(&spec.image, &spec.upper, userns.as_fd(), &spec.idmap)?;
        }
        crate::timing::mark("idmap+overlay");
        cgroup.add_process(inter.as_raw())
    })();
    if let Err(e) = prep {
        abort_child(inter);
        return Err(e);
    }
    crate::timing::mark("cgroup-join");
    if !write_all(&p_tx, b"G") {
        return Err(fail("releasing the intermediate process"));
    }
    let mut pidbuf = [0u8; 4];
    if !read_exact(&p_rx, &mut pidbuf) {
        return Err(fail("creating the zone namespaces"));
    }
    let _ = waitpid(inter, None);
    crate::timing::mark("namespaces+zone-fork");
    let zpid = Pid::from_raw(i32::from_le_bytes(pidbuf));
    let pidfd = match crate::sys::pidfd_open(zpid.as_raw()) {
        Ok(fd) => fd,
        Err(e) => {
            abort_child(zpid);
            return Err(ZoneError::io(format!("pidfd_open({zpid})"), e));
        }
    };
    if let Err(e) = net::setup(zpid.as_raw(), &spec.nics) {
        abort_child(zpid);
        return Err(e);
    }
    crate::timing::mark("network");
    if !write_all(&go_tx, b"G") {
        abort_child(zpid);
        return Err(ZoneError::Setup("releasing the zone init".into()));
    }
    drop(go_tx);
    if let Some(e) = child_error(&err_rx, spec) {
        abort_child(zpid);
        return Err(e);
    }
    crate::timing::mark("rootfs+pivot+caps+exec");
    Ok((zpid, pidfd))
}

/// Reads the error report of a failed child (None on a clean EOF = exec succeeded).
fn child_error(err_rx: &OwnedFd, spec: &LaunchSpec) -> Option<ZoneError> {
    let mut f = std::fs::File::from(err_rx.try_clone().ok()?);
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let (&kind, msg) = buf.split_first()?;
    let msg = String::from_utf8_lossy(msg).into_owned();
    Some(match kind {
        ERR_NOT_FOUND => ZoneError::CommandNotFound {
            command: msg,
            rootfs: spec.image.clone(),
        },
        _ => ZoneError::Setup(format!("zone {}: {msg}", spec.name)),
    })
}

/// What the children need, prepared before forking.
struct ChildPlan {
    root: PathBuf,
    hostname: String,
    argv: Vec<CString>,
    envp: Vec<CString>,
    console: Option<(i32, PathBuf)>,
    resolvers: Vec<IpAddr>,
    dhcp_nics: Vec<String>,
    die_with_runtime: bool,
    seccomp: seccompiler::BpfProgram,
}

impl ChildPlan {
    fn new(spec: &LaunchSpec, root: PathBuf, pty: Option<&Pty>) -> Result<ChildPlan> {
        let cstr = |s: &str| {
            CString::new(s).map_err(|_| ZoneError::Invalid(format!("{s:?} contains a NUL byte")))
        };
        let argv = spec
            .command
            .iter()
            .map(|a| cstr(a))
            .collect::<Result<Vec<_>>>()?;
        let mut env = vec![
            ("PATH".to_string(), ZONE_PATH.to_string()),
            ("HOME".to_string(), "/root".to_string()),
            ("container".to_string(), "skerry".to_string()),
        ];
        if pty.is_some() || nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
            env.push((
                "TERM".into(),
                std::env::var("TERM").unwrap_or_else(|_| "vt100".into()),
            ));
        }
        for (k, v) in &spec.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let envp = env
            .iter()
            .map(|(k, v)| cstr(&format!("{k}={v}")))
            .collect::<Result<Vec<_>>>()?;
        if spec.hostname.is_empty() || spec.hostname.len() > 64 {
            return Err(ZoneError::Invalid(format!(
                "hostname {:?}: must be 1 to 64 bytes",
                spec.hostname
            )));
        }
        Ok(ChildPlan {
            root,
            hostname: spec.hostname.clone(),
            argv,
            envp,
            console: pty.map(|p| (p.slave.as_raw_fd(), p.slave_path.clone())),
            resolvers: spec.resolvers.clone(),
            dhcp_nics: spec
                .nics
                .iter()
                .filter(|n| n.nic.ip == spec::IpConfig::Dhcp)
                .map(|n| n.nic.name.clone())
                .collect(),
            die_with_runtime: spec.die_with_runtime,
            seccomp: security::compile_filter()?,
        })
    }
}

fn report(err_tx: &OwnedFd, kind: u8, msg: &str) {
    let mut buf = vec![kind];
    buf.extend_from_slice(msg.as_bytes());
    let _ = write_all(err_tx, &buf);
}

/// The intermediate process: enters the user namespace, then the others, forks the
/// zone init and exits. Returns its exit code.
fn intermediate(
    plan: &ChildPlan,
    c_rx: OwnedFd,
    c_tx: OwnedFd,
    z_rx: OwnedFd,
    err_tx: OwnedFd,
) -> i32 {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        report(&err_tx, ERR_SETUP, &format!("unshare(CLONE_NEWUSER): {e}"));
        return 1;
    }
    if !write_all(&c_tx, b"U") {
        return 1;
    }
    let mut b = [0u8; 1];
    if !read_exact(&c_rx, &mut b) {
        return 1;
    }
    let root = nix::unistd::Gid::from_raw(0);
    let steps = || -> nix::Result<()> {
        nix::unistd::setresgid(root, root, root)?;
        nix::unistd::setgroups(&[root])?;
        let uroot = nix::unistd::Uid::from_raw(0);
        nix::unistd::setresuid(uroot, uroot, uroot)?;
        unshare(
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWNET
                | CloneFlags::CLONE_NEWCGROUP
                | CloneFlags::CLONE_NEWPID,
        )
    };
    if let Err(e) = steps() {
        report(
            &err_tx,
            ERR_SETUP,
            &format!("entering the zone namespaces: {e}"),
        );
        return 1;
    }
    // SAFETY: single-threaded (forked from a single-threaded runtime).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop((c_rx, c_tx));
            zone_init(plan, z_rx, err_tx)
        }
        Ok(ForkResult::Parent { child }) => {
            if write_all(&c_tx, &child.as_raw().to_le_bytes()) {
                0
            } else {
                1
            }
        }
        Err(e) => {
            report(&err_tx, ERR_SETUP, &format!("fork of the zone init: {e}"));
            1
        }
    }
}

/// Pid 1 of the zone: waits for the runtime's go, sets itself up and execs.
fn zone_init(plan: &ChildPlan, z_rx: OwnedFd, err_tx: OwnedFd) -> ! {
    let mut b = [0u8; 1];
    if !read_exact(&z_rx, &mut b) {
        // The runtime gave up (or died) before the network was ready.
        // SAFETY: see intermediate's _exit.
        unsafe { libc::_exit(1) }
    }
    drop(z_rx);
    let (kind, msg) = match setup_and_exec(plan) {
        Err(ZoneError::CommandNotFound { command, .. }) => (ERR_NOT_FOUND, command),
        Err(e) => (ERR_SETUP, e.to_string()),
        Ok(never) => match never {},
    };
    report(&err_tx, kind, &msg);
    // SAFETY: see intermediate's _exit.
    unsafe { libc::_exit(127) }
}

fn setup_and_exec(plan: &ChildPlan) -> Result<std::convert::Infallible> {
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    if let Some((fd, _)) = &plan.console {
        // SAFETY: TIOCSCTTY on our pty slave fd with arg 0 (do not steal).
        if unsafe { libc::ioctl(*fd, libc::TIOCSCTTY, 0) } < 0 {
            return Err(ZoneError::io(
                "making the pty the zone's controlling terminal",
                std::io::Error::last_os_error(),
            ));
        }
        for target in 0..3 {
            // SAFETY: dup2 of a valid fd onto stdio numbers.
            if unsafe { libc::dup2(*fd, target) } < 0 {
                return Err(ZoneError::io(
                    "attaching the pty to stdio",
                    std::io::Error::last_os_error(),
                ));
            }
        }
    }
    nix::unistd::sethostname(&plan.hostname).ctx(|| format!("sethostname {}", plan.hostname))?;
    rootfs::enter(&plan.root, plan.console.as_ref().map(|(_, p)| p.as_path()))?;
    if !plan.resolvers.is_empty() {
        let text: String = plan
            .resolvers
            .iter()
            .map(|r| format!("nameserver {r}\n"))
            .collect();
        let _ = std::fs::create_dir_all("/etc");
        std::fs::write("/etc/resolv.conf", text).ctx(|| "writing /etc/resolv.conf".into())?;
    }
    if plan.die_with_runtime {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).ctx(|| "prctl(PR_SET_PDEATHSIG)".into())?;
    }
    // The runtime blocks signals it waits for and Rust ignores SIGPIPE: give the zone a
    // clean slate.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .ctx(|| "sigprocmask".into())?;
    // SAFETY: resetting a disposition to the default action installs no handler.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) }
        .ctx(|| "SIGPIPE".into())?;
    security::drop_capabilities()?;
    security::set_no_new_privs()?;
    security::install_filter(&plan.seccomp)?;
    for nic in &plan.dhcp_nics {
        start_dhcp_client(nic, &plan.envp);
    }
    exec(&plan.argv, &plan.envp)
}

/// Searches `argv[0]` on the zone's PATH (unless it has a slash) and execs it.
fn exec(argv: &[CString], envp: &[CString]) -> Result<std::convert::Infallible> {
    let prog = argv[0].as_bytes();
    let candidates: Vec<CString> = if prog.contains(&b'/') {
        vec![argv[0].clone()]
    } else {
        ZONE_PATH
            .split(':')
            .filter_map(|d| CString::new([d.as_bytes(), b"/", prog].concat()).ok())
            .collect()
    };
    let mut last = nix::errno::Errno::ENOENT;
    for c in &candidates {
        match nix::unistd::execve(c, argv, envp) {
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => {}
            Err(e) => last = e,
        }
    }
    let name = String::from_utf8_lossy(prog).into_owned();
    if last == nix::errno::Errno::ENOENT {
        Err(ZoneError::CommandNotFound {
            command: name,
            rootfs: PathBuf::new(),
        })
    } else {
        Err(ZoneError::io(format!("exec {name}"), last.into()))
    }
}

/// DHCP clients looked for in the image, in order.
const DHCP_CLIENTS: [(&str, &[&str]); 3] = [
    ("/sbin/udhcpc", &["udhcpc", "-b", "-i"]),
    ("/usr/sbin/udhcpc", &["udhcpc", "-b", "-i"]),
    ("/sbin/dhclient", &["dhclient", "-nw"]),
];

/// `ip="dhcp"`: runs the image's DHCP client for `nic` in the background, confined like
/// the rest of the zone. Without one the zone starts anyway and says so on its console.
fn start_dhcp_client(nic: &str, envp: &[CString]) {
    let Some((path, args)) = DHCP_CLIENTS.iter().find(|(p, _)| Path::new(p).exists()) else {
        eprintln!(
            "zone: nic {nic} asks for DHCP but the image has no DHCP client (udhcpc, dhclient)"
        );
        return;
    };
    let mut argv: Vec<CString> = args.iter().filter_map(|a| CString::new(*a).ok()).collect();
    argv.extend(CString::new(nic).ok());
    // SAFETY: the zone init is single-threaded.
    if let Ok(ForkResult::Child) = unsafe { fork() } {
        if let Ok(p) = CString::new(Path::new(path).as_os_str().as_bytes()) {
            let _ = nix::unistd::execve(&p, &argv, envp);
        }
        // SAFETY: see intermediate's _exit.
        unsafe { libc::_exit(127) }
    }
}
