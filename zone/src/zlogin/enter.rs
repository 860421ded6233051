//! The child zlogin runs in a zone: it joins the zone init's cgroups, enters its
//! namespaces through the init's pidfd, takes zone root's ids, the zone's capability
//! bounding set (never more than the init's), `no_new_privs` and the zone's seccomp
//! filter, then execs the command at once.
//!
//! The zone's monitor enters the same way to start the image's DHCP client for a nic
//! added to the running zone ([`Run::DhcpClient`]): that child forks once more inside,
//! so the client is the zone init's (as a client started with the zone is) and not the
//! monitor's.

use super::{Target, ZloginError};
use crate::console::Pty;
use crate::error::{Context, Result, ZoneError};
use crate::launch::{dhcp_client, exec, NO_DHCP_CLIENT, ZONE_PATH};
use crate::security;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// The error kinds the child reports before exec.
const ERR_NOT_FOUND: u8 = b'N';
const ERR_SETUP: u8 = b'S';

/// The namespaces the child enters besides the pid namespace (which the parent
/// enters for its children before forking).
const NAMESPACES: [CloneFlags; 6] = [
    CloneFlags::CLONE_NEWUSER,
    CloneFlags::CLONE_NEWNS,
    CloneFlags::CLONE_NEWNET,
    CloneFlags::CLONE_NEWUTS,
    CloneFlags::CLONE_NEWIPC,
    CloneFlags::CLONE_NEWCGROUP,
];

/// What the child runs once it is in the zone.
pub(super) enum Run {
    /// Root's login shell.
    Login,
    /// A command, searched on the zone's PATH.
    Command(Vec<CString>),
    /// The image's DHCP client for this nic, in the background: a child of the zone's
    /// init, in a session of its own, its stdio the zone's console.
    DhcpClient(String),
}

/// Everything the child needs, prepared before the fork (the child only makes system
/// calls and reads the zone's /etc/passwd for a login shell).
pub(super) struct Plan {
    /// The zone init's root directory (`/proc/PID/root`), to chroot to after entering
    /// the mount namespace.
    root: OwnedFd,
    /// The file that moves the child into the zone init's cgroup, per hierarchy where
    /// zlogin is not in it already (see [`cgroup_joins`]).
    cgroup_joins: Vec<PathBuf>,
    /// The zone init's capability bounding set.
    bounding: u64,
    run: Run,
    envp: Vec<CString>,
    /// The pty slave to make the controlling terminal and stdio.
    console: Option<i32>,
    seccomp: seccompiler::BpfProgram,
}

impl Plan {
    /// Prepares the entering of `target` to run `command` (empty: a login shell).
    pub(super) fn new(
        target: &Target,
        command: &[String],
        pty: Option<&Pty>,
    ) -> std::result::Result<Plan, ZloginError> {
        let run = match command.is_empty() {
            true => Run::Login,
            false => Run::Command(command.iter().map(|a| cstr(a)).collect::<Result<_>>()?),
        };
        Plan::with(target, run, pty)
    }

    /// Prepares the entering of `target` to do `run`.
    pub(super) fn with(
        target: &Target,
        run: Run,
        pty: Option<&Pty>,
    ) -> std::result::Result<Plan, ZloginError> {
        let mut env = vec![
            format!("PATH={ZONE_PATH}"),
            "HOME=/root".into(),
            "USER=root".into(),
            "LOGNAME=root".into(),
            "container=skerry".into(),
        ];
        if pty.is_some() || std::env::var_os("TERM").is_some() {
            env.push(format!(
                "TERM={}",
                std::env::var("TERM").unwrap_or_else(|_| "vt100".into())
            ));
        }
        let envp = env.iter().map(|e| cstr(e)).collect::<Result<_>>()?;
        let pid = target.pid;
        let root_path = format!("/proc/{pid}/root");
        let root = nix::fcntl::open(
            root_path.as_str(),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| ZoneError::io(format!("opening {root_path}"), e.into()))?;
        let read = |p: String| std::fs::read_to_string(&p).ctx(|| format!("reading {p}"));
        let cgroup_joins = cgroup_joins(
            &read(format!("/proc/{pid}/cgroup"))?,
            &read("/proc/self/cgroup".into())?,
            &read("/proc/self/mountinfo".into())?,
        );
        let bounding = cap_bounding(&read(format!("/proc/{pid}/status"))?)
            .ok_or_else(|| ZoneError::Setup(format!("no CapBnd line in /proc/{pid}/status")))?;
        Ok(Plan {
            root,
            cgroup_joins,
            bounding,
            run,
            envp,
            console: pty.map(|p| p.slave.as_raw_fd()),
            seccomp: security::compile_filter()?,
        })
    }
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| ZoneError::Invalid(format!("{s:?} contains a NUL byte")))
}

/// The `CapBnd` mask of a `/proc/PID/status` text.
fn cap_bounding(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The files to write "0" to for joining the cgroups a `/proc/PID/cgroup` table
/// names, found through the cgroup and cgroup2 mounts of a mountinfo table (any layout:
/// pure v2, hybrid, co-mounted v1 controllers, named hierarchies), leaving out the
/// hierarchies where `own` (the caller's table) is in that cgroup already.
///
/// v1 takes `tasks`: moving the calling thread alone (the child is single-threaded)
/// skips the kernel's global threadgroup lock, whose write side waits for an RCU grace
/// period (about 13 ms here, most of a zlogin); v2 has to take `cgroup.procs`.
fn cgroup_joins(table: &str, own: &str, mountinfo: &str) -> Vec<PathBuf> {
    // (fstype, super options, mount root, mount point)
    let mounts: Vec<(&str, Vec<&str>, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let fstype = *post.first()?;
            let opts = post.get(2)?.split(',').collect();
            Some((fstype, opts, *pre.get(3)?, *pre.get(4)?))
        })
        .filter(|(t, ..)| *t == "cgroup" || *t == "cgroup2")
        .collect();
    let mut out = Vec::new();
    for line in table.lines().filter(|l| !own.lines().any(|o| o == *l)) {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mount = mounts.iter().find(|(t, opts, ..)| match ctrls {
            "" => *t == "cgroup2",
            c => *t == "cgroup" && c.split(',').all(|c| opts.contains(&c)),
        });
        let Some((fstype, _, root, point)) = mount else {
            continue;
        };
        let Some(rel) = path.strip_prefix(root) else {
            continue;
        };
        let dir = PathBuf::from(point).join(rel.trim_start_matches('/'));
        let file = dir.join(match *fstype {
            "cgroup" => "tasks",
            _ => "cgroup.procs",
        });
        if !out.contains(&file) {
            out.push(file);
        }
    }
    out
}

/// Forks the child into the zone; returns its pid once it has exec'ed the command, or
/// the error that stopped it.
pub(super) fn spawn(target: &Target, plan: &Plan) -> std::result::Result<Pid, ZloginError> {
    let own_pidns =
        std::fs::File::open("/proc/self/ns/pid").ctx(|| "opening /proc/self/ns/pid".into())?;
    let (err_rx, err_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe2".into())?;
    // Only our children enter the pid namespace: the child is born in it.
    nix::sched::setns(&target.pidfd, CloneFlags::CLONE_NEWPID).map_err(|e| match e {
        nix::errno::Errno::ESRCH => ZloginError::Vanished {
            name: target.name.clone(),
            pid: target.pid,
        },
        e => ZoneError::io(
            format!("joining the pid namespace of zone {}", target.name),
            e.into(),
        )
        .into(),
    })?;
    // SAFETY: zlogin is single-threaded, so the child may run arbitrary code.
    let forked = unsafe { fork() };
    if let Ok(ForkResult::Child) = forked {
        drop(err_rx);
        let (kind, msg) = match enter_and_exec(target, plan) {
            Err(ZoneError::CommandNotFound { command, .. }) => (ERR_NOT_FOUND, command),
            Err(e) => (ERR_SETUP, e.to_string()),
            Ok(never) => match never {},
        };
        let mut report = vec![kind];
        report.extend_from_slice(msg.as_bytes());
        let _ = std::fs::File::from(err_tx).write_all(&report);
        // SAFETY: _exit skips the parent's atexit handlers and destructors.
        unsafe { libc::_exit(127) }
    }
    let back = nix::sched::setns(&own_pidns, CloneFlags::CLONE_NEWPID)
        .ctx(|| "returning to zlogin's pid namespace".into());
    let child = match forked {
        Ok(ForkResult::Parent { child }) => child,
        Ok(ForkResult::Child) => unreachable!("the child exits above"),
        Err(e) => return Err(ZoneError::io("fork", e.into()).into()),
    };
    drop(err_tx);
    let mut report = Vec::new();
    let _ = std::fs::File::from(err_rx).read_to_end(&mut report);
    if let Some((&kind, msg)) = report.split_first() {
        let _ = nix::sys::wait::waitpid(child, None);
        let msg = String::from_utf8_lossy(msg).into_owned();
        return Err(match kind {
            ERR_NOT_FOUND => ZloginError::CommandNotFound(msg),
            _ => ZloginError::Enter(format!("zone '{}': {msg}", target.name)),
        });
    }
    back?;
    Ok(child)
}

/// The child's side: runs in the zone's pid namespace, as host root, until it enters.
fn enter_and_exec(target: &Target, plan: &Plan) -> Result<std::convert::Infallible> {
    // Until the exec, this process is the zone binary: nobody in the zone may open its
    // /proc/PID/exe or ptrace it (zlogin is non-dumpable already; a monitor is not).
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| ZoneError::io("prctl(PR_SET_DUMPABLE, 0)", std::io::Error::from(e)))?;
    // While still host root: the cgroup files belong to host root (v1, and the limits
    // of v2), and joining them first means nothing of the command ever runs outside.
    for file in &plan.cgroup_joins {
        std::fs::write(file, "0")
            .ctx(|| format!("joining the zone's cgroup {}", file.display()))?;
    }
    let all = NAMESPACES.iter().fold(CloneFlags::empty(), |a, f| a | *f);
    nix::sched::setns(&target.pidfd, all)
        .ctx(|| format!("entering the namespaces of zone {}", target.name))?;
    // The mount namespace's root is not necessarily the zone's root: take the init's.
    nix::unistd::fchdir(&plan.root).ctx(|| "fchdir to the zone's root".into())?;
    nix::unistd::chroot(".").ctx(|| "chroot to the zone's root".into())?;
    let root = Gid::from_raw(0);
    nix::unistd::setresgid(root, root, root).ctx(|| "setresgid(0)".into())?;
    nix::unistd::setgroups(&[root]).ctx(|| "setgroups([0])".into())?;
    let uroot = Uid::from_raw(0);
    nix::unistd::setresuid(uroot, uroot, uroot).ctx(|| "setresuid(0)".into())?;
    if nix::unistd::chdir("/root").is_err() {
        nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
    }
    if let Some(fd) = plan.console {
        nix::unistd::setsid().ctx(|| "setsid".into())?;
        // SAFETY: TIOCSCTTY on our pty slave fd with arg 0 (do not steal).
        if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
            return Err(ZoneError::io(
                "making the pty the controlling terminal",
                std::io::Error::last_os_error(),
            ));
        }
        for target in 0..3 {
            // SAFETY: dup2 of a valid fd onto stdio numbers.
            if unsafe { libc::dup2(fd, target) } < 0 {
                return Err(ZoneError::io(
                    "attaching the pty to stdio",
                    std::io::Error::last_os_error(),
                ));
            }
        }
    }
    // Nothing of the host but stdio reaches the zone, whatever the caller left open.
    // SAFETY: close_range with integer arguments only; CLOSE_RANGE_CLOEXEC closes
    // nothing now, so no fd we still use goes away.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .ctx(|| "sigprocmask".into())?;
    // SAFETY: resetting a disposition to the default action installs no handler.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) }
        .ctx(|| "SIGPIPE".into())?;
    if let Run::DhcpClient(_) = plan.run {
        into_background()?;
    }
    security::drop_capabilities()?;
    narrow_capabilities(plan.bounding)?;
    security::set_no_new_privs()?;
    security::install_filter(&plan.seccomp)?;
    match &plan.run {
        Run::Command(argv) => exec(argv, &plan.envp),
        Run::Login => login_shell(&plan.envp),
        Run::DhcpClient(nic) => {
            let (path, argv) = dhcp_client(nic).ok_or_else(|| ZoneError::CommandNotFound {
                command: NO_DHCP_CLIENT.into(),
                rootfs: PathBuf::new(),
            })?;
            let e = nix::unistd::execve(&path, &argv, &plan.envp).unwrap_err();
            Err(ZoneError::io(
                format!("exec {}", path.to_string_lossy()),
                e.into(),
            ))
        }
    }
}

/// Makes the child a background process of the zone: stdio on the zone's console
/// (its /dev/console; /dev/null where it has none), a session of its own, and a
/// fork whose parent exits, so that the zone's init inherits it. The error pipe
/// goes with the grandchild, which reports (or execs) in the child's place.
fn into_background() -> Result<()> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let none = nix::sys::stat::Mode::empty();
    let stdio = nix::fcntl::open("/dev/console", flags, none)
        .or_else(|_| nix::fcntl::open("/dev/null", flags, none))
        .ctx(|| "opening the zone's /dev/console and /dev/null".into())?;
    for target in 0..3 {
        // SAFETY: dup2 of a valid fd onto stdio numbers.
        if unsafe { libc::dup2(stdio.as_raw_fd(), target) } < 0 {
            return Err(ZoneError::io(
                "attaching the console to stdio",
                std::io::Error::last_os_error(),
            ));
        }
    }
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    // SAFETY: the child is single-threaded (it forked from a single-threaded parent).
    match unsafe { fork() }.ctx(|| "fork".into())? {
        // SAFETY: _exit skips the destructors the grandchild still needs.
        ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
        ForkResult::Child => Ok(()),
    }
}

/// Drops whatever the zone's own bounding set (the init's) lacks, should it be
/// narrower than [`security::KEPT_CAPS`]: zlogin never hands out more than the zone has.
fn narrow_capabilities(bounding: u64) -> Result<()> {
    let keep = granted_caps(bounding);
    for cap in 0..64u32 {
        if security::kept_mask() & (1u64 << cap) != 0 && keep & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(ZoneError::io(
                    format!("dropping capability {cap} from the bounding set"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
    }
    crate::sys::set_capabilities(keep).ctx(|| "capset".into())
}

/// The capabilities a zlogin'ed command gets: the zone's set, cut to what the zone's
/// init still has in its bounding set (`init_bounding`).
fn granted_caps(init_bounding: u64) -> u64 {
    security::kept_mask() & init_bounding
}

/// Execs root's shell from the zone's /etc/passwd (read inside the zone, where its
/// symlinks cannot lead to host files) as a login shell (`-sh`).
fn login_shell(envp: &[CString]) -> Result<std::convert::Infallible> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let shell = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[0] == "root" && !f[6].is_empty())
        .map(|f| f[6].to_string())
        .unwrap_or_else(|| "/bin/sh".into());
    let base = shell.rsplit('/').next().unwrap_or("sh");
    let cstr =
        |s: String| CString::new(s).map_err(|_| ZoneError::Invalid("NUL in the shell".into()));
    let path = cstr(shell.clone())?;
    let argv = [cstr(format!("-{base}"))?];
    let mut env = envp.to_vec();
    env.push(cstr(format!("SHELL={shell}"))?);
    let e = nix::unistd::execve(&path, &argv, &env).unwrap_err();
    match e {
        nix::errno::Errno::ENOENT => Err(ZoneError::CommandNotFound {
            command: shell,
            rootfs: PathBuf::new(),
        }),
        e => Err(ZoneError::io(format!("exec {shell}"), e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
31 25 0:27 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
35 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
36 25 0:32 / /sys/fs/cgroup/memory rw shared:16 - cgroup cgroup rw,memory
40 25 0:40 /inner /mnt/cg rw shared:16 - cgroup cgroup rw,pids
";

    #[test]
    fn cgroups_are_found_in_every_hierarchy() {
        let table = "5:pids:/inner/skerry/z\n4:memory:/skerry/z\n3:cpu,cpuacct:/skerry/z\n\
                     1:name=systemd:/user.slice\n0::/skerry/z\n";
        let own = "5:pids:/\n4:memory:/\n3:cpu,cpuacct:/\n1:name=systemd:/user.slice\n0::/\n";
        let joins = cgroup_joins(table, own, HYBRID);
        let want = [
            "/mnt/cg/skerry/z/tasks",
            "/sys/fs/cgroup/memory/skerry/z/tasks",
            "/sys/fs/cgroup/cpu,cpuacct/skerry/z/tasks",
            "/sys/fs/cgroup/unified/skerry/z/cgroup.procs",
        ];
        assert_eq!(joins, want.map(PathBuf::from));
    }

    #[test]
    fn never_more_caps_than_the_zone_or_its_init() {
        let kept = security::kept_mask();
        assert_eq!(granted_caps(u64::MAX), kept);
        let no_admin = kept & !(1 << security::cap::SYS_ADMIN);
        assert_eq!(granted_caps(no_admin), no_admin);
        assert_eq!(granted_caps(1 << security::cap::SYS_MODULE), 0);
    }

    #[test]
    fn cap_bounding_reads_the_status_line() {
        assert_eq!(
            cap_bounding("Name:\tx\nCapBnd:\t00000000a80425fb\n"),
            Some(0xa80425fb)
        );
        assert_eq!(cap_bounding("Name:\tx\n"), None);
    }
}
