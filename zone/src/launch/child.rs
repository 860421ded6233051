//! The children of a zone start: the intermediate process and the zone init, with
//! what they need prepared before the fork (see the parent module for the sequence).

use super::{LaunchSpec, ZONE_PATH};
use crate::console::Pty;
use crate::error::{Context, Result, ZoneError};
use crate::rootfs;
use crate::security;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{fork, ForkResult};
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the zone init sends back when its setup fails: a kind and a message.
pub(super) const ERR_NOT_FOUND: u8 = b'N';
pub(super) const ERR_SETUP: u8 = b'S';

pub(super) fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> bool {
    let mut f = std::fs::File::from(fd.try_clone().expect("dup of a pipe fd"));
    f.read_exact(buf).is_ok()
}

pub(super) fn write_all(fd: &OwnedFd, buf: &[u8]) -> bool {
    let mut f = std::fs::File::from(fd.try_clone().expect("dup of a pipe fd"));
    f.write_all(buf).is_ok()
}

/// What the children need, prepared before forking.
pub(super) struct ChildPlan {
    root: PathBuf,
    hostname: String,
    argv: Vec<CString>,
    envp: Vec<CString>,
    workdir: Option<PathBuf>,
    user: Option<crate::user::ZoneUser>,
    console: Option<(i32, PathBuf)>,
    /// The metadata pty slave's path and a detached read-only mount of the socket's
    /// directory, made here by the runtime (the zone could not reach the host path).
    metadata: Option<(PathBuf, OwnedFd)>,
    resolvers: Vec<IpAddr>,
    dhcp_nics: Vec<String>,
    die_with_runtime: bool,
    seccomp: seccompiler::BpfProgram,
}

impl ChildPlan {
    pub(super) fn new(spec: &LaunchSpec, root: PathBuf, pty: Option<&Pty>) -> Result<ChildPlan> {
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
            (
                "HOME".to_string(),
                // The image's user's home, as Docker gives it.
                spec.user
                    .as_ref()
                    .and_then(|u| u.home.clone())
                    .unwrap_or_else(|| "/root".to_string()),
            ),
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
            // Relative to the zone's root, whatever it says.
            workdir: spec.workdir.as_ref().map(|w| Path::new("/").join(w)),
            user: spec.user.clone(),
            console: pty.map(|p| (p.slave.as_raw_fd(), p.slave_path.clone())),
            metadata: match &spec.metadata {
                Some(m) => Some((m.tty.clone(), sealed_clone(&m.control_dir)?)),
                None => None,
            },
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

/// A detached, read-only clone of the mount of `dir`, for the zone to attach.
fn sealed_clone(dir: &Path) -> Result<OwnedFd> {
    let what = || format!("cloning {} for the zone", dir.display());
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| ZoneError::Invalid(format!("path {} contains NUL", dir.display())))?;
    let tree = crate::sys::open_tree_clone(&path).map_err(|e| ZoneError::io(what(), e))?;
    crate::sys::seal_tree(tree.as_fd()).map_err(|e| ZoneError::io(what(), e))?;
    Ok(tree)
}

fn report(err_tx: &OwnedFd, kind: u8, msg: &str) {
    let mut buf = vec![kind];
    buf.extend_from_slice(msg.as_bytes());
    let _ = write_all(err_tx, &buf);
}

/// The intermediate process: enters the user namespace, then the others, forks the
/// zone init and exits. Returns its exit code.
pub(super) fn intermediate(
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
        // No CLONE_NEWNS yet: the zone init unshares its mount namespace only after
        // the runtime has mounted /proc and /sys into the staged root (see
        // `kernel_fs_in_zone`), so that those arrive locked.
        unshare(
            CloneFlags::CLONE_NEWUTS
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

/// Mounts /proc, /sys, the masks and read-only paths into the staged `root`, in the
/// runtime's mount namespace, from a helper process in zone init `zpid`'s pid,
/// network and cgroup namespaces (procfs, sysfs and cgroup2 show their mounter's).
/// With `cgroupfs` (a delegated v2 cgroup), cgroup2 goes on /sys/fs/cgroup too: its
/// root is the zone's own cgroup. Call it while single-threaded, before releasing the
/// zone init (which then copies them, locked, into its own mount namespace).
pub(super) fn kernel_fs_in_zone(zpid: i32, root: &Path, cgroupfs: bool) -> Result<()> {
    use std::fs::File;
    let open = |p: String| File::open(&p).ctx(|| format!("opening {p}"));
    let zone_pidns = open(format!("/proc/{zpid}/ns/pid"))?;
    let zone_netns = open(format!("/proc/{zpid}/ns/net"))?;
    let zone_cgroupns = open(format!("/proc/{zpid}/ns/cgroup"))?;
    let own_pidns = open("/proc/self/ns/pid".into())?;
    let (err_rx, err_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe2".into())?;
    // Only our children enter the pid namespace; we go back right after the fork.
    nix::sched::setns(&zone_pidns, CloneFlags::CLONE_NEWPID)
        .ctx(|| format!("joining the pid namespace of zone init {zpid}"))?;
    // SAFETY: the runtime is single-threaded here (see the module doc of `launch`).
    let forked = unsafe { fork() };
    if let Ok(ForkResult::Child) = forked {
        drop(err_rx);
        let r = nix::sched::setns(&zone_netns, CloneFlags::CLONE_NEWNET)
            .ctx(|| "joining the zone's network namespace".into())
            .and_then(|()| {
                nix::sched::setns(&zone_cgroupns, CloneFlags::CLONE_NEWCGROUP)
                    .ctx(|| "joining the zone's cgroup namespace".into())
            })
            .and_then(|()| {
                rootfs::mount_kernel_fs(&mut rootfs::HostFs, root, Path::new("/dev/null"))
            })
            .and_then(|()| match cgroupfs {
                true => rootfs::mount_cgroupfs(&mut rootfs::HostFs, root),
                false => Ok(()),
            });
        let code = match r {
            Ok(()) => 0,
            Err(e) => {
                let _ = write_all(&err_tx, e.to_string().as_bytes());
                1
            }
        };
        // SAFETY: see intermediate's _exit.
        unsafe { libc::_exit(code) }
    }
    let back = nix::sched::setns(&own_pidns, CloneFlags::CLONE_NEWPID)
        .ctx(|| "returning to the runtime's pid namespace".into());
    let child = match forked {
        Ok(ForkResult::Parent { child }) => child,
        Ok(ForkResult::Child) => unreachable!("the child exited above"),
        Err(e) => return back.and(Err(ZoneError::io("fork", e.into()))),
    };
    drop(err_tx);
    let mut msg = Vec::new();
    let _ = File::from(err_rx).read_to_end(&mut msg);
    let status = nix::sys::wait::waitpid(child, None);
    back?;
    if !msg.is_empty() {
        return Err(ZoneError::Setup(String::from_utf8_lossy(&msg).into_owned()));
    }
    match status {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
        other => Err(ZoneError::Setup(format!(
            "mounting /proc and /sys for the zone: helper ended with {other:?}"
        ))),
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
    // A copy of the runtime's mounts, /proc, /sys and their masks included, made from
    // a less privileged user namespace: the kernel locks every one of them in it.
    unshare(CloneFlags::CLONE_NEWNS).ctx(|| "unshare(CLONE_NEWNS)".into())?;
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
    let metadata = plan
        .metadata
        .as_ref()
        .map(|(tty, control)| rootfs::MetadataBinds {
            tty,
            control: control.as_fd(),
        });
    rootfs::enter(
        &mut rootfs::HostFs,
        &plan.root,
        plan.console.as_ref().map(|(_, p)| p.as_path()),
        metadata.as_ref(),
    )?;
    if !plan.resolvers.is_empty() {
        let text: String = plan
            .resolvers
            .iter()
            .map(|r| format!("nameserver {r}\n"))
            .collect();
        let _ = std::fs::create_dir_all("/etc");
        std::fs::write("/etc/resolv.conf", text).ctx(|| "writing /etc/resolv.conf".into())?;
    }
    // Images name themselves in /etc/hostname and their boot scripts apply it: the
    // zone's name must win.
    if Path::new("/etc").is_dir() {
        std::fs::write("/etc/hostname", format!("{}\n", plan.hostname))
            .ctx(|| "writing /etc/hostname".into())?;
    }
    if let Some(dir) = &plan.workdir {
        enter_workdir(dir, plan.user.as_ref())?;
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
    // Last: the DHCP clients above still needed root's capabilities.
    if let Some(u) = &plan.user {
        become_user(u)?;
    }
    exec(&plan.argv, &plan.envp)
}

/// Changes into the image's working directory, making it (owned by the zone's user)
/// when the image does not have it, as runc does.
fn enter_workdir(dir: &Path, user: Option<&crate::user::ZoneUser>) -> Result<()> {
    let what = || format!("working directory {}", dir.display());
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).ctx(what)?;
        if let Some(u) = user {
            std::os::unix::fs::chown(dir, Some(u.uid), Some(u.gid)).ctx(what)?;
        }
    }
    nix::unistd::chdir(dir).ctx(what)
}

/// Takes the image's user's ids: groups first, while we may still change them.
fn become_user(u: &crate::user::ZoneUser) -> Result<()> {
    use nix::unistd::{Gid, Uid};
    let groups: Vec<Gid> = u.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).ctx(|| format!("setgroups {:?}", u.groups))?;
    let gid = Gid::from_raw(u.gid);
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setresgid {}", u.gid))?;
    let uid = Uid::from_raw(u.uid);
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setresuid {}", u.uid))
}

/// Searches `argv[0]` on the zone's PATH (unless it has a slash) and execs it.
pub(crate) fn exec(argv: &[CString], envp: &[CString]) -> Result<std::convert::Infallible> {
    // Built from the spec's strings: always UTF-8.
    let name = argv[0].to_string_lossy().into_owned();
    let candidates: Vec<CString> = super::command_candidates(&name)
        .into_iter()
        .filter_map(|c| CString::new(c).ok())
        .collect();
    let mut last = nix::errno::Errno::ENOENT;
    for c in &candidates {
        match nix::unistd::execve(c, argv, envp) {
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => {}
            Err(e) => last = e,
        }
    }
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
const DHCP_CLIENTS: [(&str, &[&str]); 6] = [
    ("/sbin/udhcpc", &["udhcpc", "-b", "-i"]),
    ("/usr/sbin/udhcpc", &["udhcpc", "-b", "-i"]),
    ("/bin/udhcpc", &["udhcpc", "-b", "-i"]),
    ("/usr/bin/udhcpc", &["udhcpc", "-b", "-i"]),
    ("/sbin/dhclient", &["dhclient", "-nw"]),
    ("/usr/sbin/dhclient", &["dhclient", "-nw"]),
];

/// `ip="dhcp"`: runs the image's DHCP client for `nic` in the background, confined like
/// the rest of the zone. Without one the zone starts anyway and says so on its console.
fn start_dhcp_client(nic: &str, envp: &[CString]) {
    let Some((path, argv)) = dhcp_client(nic) else {
        eprintln!("zone: nic {nic} asks for DHCP but the image has no {NO_DHCP_CLIENT}");
        return;
    };
    // SAFETY: the zone init is single-threaded.
    if let Ok(ForkResult::Child) = unsafe { fork() } {
        let _ = nix::unistd::execve(&path, &argv, envp);
        // SAFETY: see intermediate's _exit.
        unsafe { libc::_exit(127) }
    }
}

/// What the zone lacks when [`dhcp_client`] finds nothing.
pub(crate) const NO_DHCP_CLIENT: &str = "DHCP client (udhcpc, dhclient)";

/// The image's DHCP client for `nic`, run in the background: its path and argv, looked
/// up from `/`, so from inside the zone (where the image's symlinks resolve in the
/// image, not on the host).
pub(crate) fn dhcp_client(nic: &str) -> Option<(CString, Vec<CString>)> {
    let (path, args) = DHCP_CLIENTS.iter().find(|(p, _)| Path::new(p).exists())?;
    let mut argv: Vec<CString> = args.iter().filter_map(|a| CString::new(*a).ok()).collect();
    argv.push(CString::new(nic).ok()?);
    if args[0] == "udhcpc" {
        argv.extend(
            udhcpc_script_arg(Path::new("/"))
                .into_iter()
                .filter_map(|a| CString::new(a).ok()),
        );
    }
    Some((CString::new(*path).ok()?, argv))
}

/// busybox udhcpc runs a script to apply its lease; where it looks depends on the
/// build (Debian: /etc/udhcpc, upstream: /usr/share/udhcpc). Point it at the image's
/// script when the image keeps it in the other place.
fn udhcpc_script_arg(root: &Path) -> Vec<String> {
    const PLACES: [&str; 2] = [
        "etc/udhcpc/default.script",
        "usr/share/udhcpc/default.script",
    ];
    match PLACES.iter().find(|p| root.join(p).exists()) {
        Some(p) => vec!["-s".into(), format!("/{p}")],
        None => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::Limits;
    use crate::idmap::IdMap;
    use crate::rootfs::Upper;

    fn spec(command: &[&str], hostname: &str) -> LaunchSpec {
        LaunchSpec {
            name: "t".into(),
            image: "/".into(),
            upper: Upper::Temporary { size: None },
            idmap: IdMap::new(100_000).unwrap(),
            hostname: hostname.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), "/custom".into()), ("A".into(), "b".into())],
            workdir: None,
            user: None,
            limits: Limits::default(),
            nics: vec![],
            resolvers: vec![],
            die_with_runtime: false,
            metadata: None,
        }
    }

    #[test]
    fn child_plan_env_overrides_defaults_and_validates() {
        let plan = ChildPlan::new(&spec(&["/bin/sh"], "h"), "/r".into(), None).unwrap();
        let env: Vec<String> = plan
            .envp
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert!(env.contains(&"PATH=/custom".to_string()), "{env:?}");
        assert!(env.contains(&"container=skerry".to_string()));
        assert!(env.contains(&"A=b".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert!(ChildPlan::new(&spec(&["/bin/sh"], ""), "/r".into(), None).is_err());
        assert!(ChildPlan::new(&spec(&["a\0b"], "h"), "/r".into(), None).is_err());
    }

    #[test]
    fn udhcpc_is_pointed_at_the_images_script() {
        let root = tempfile::tempdir().unwrap();
        assert!(udhcpc_script_arg(root.path()).is_empty());
        std::fs::create_dir_all(root.path().join("usr/share/udhcpc")).unwrap();
        std::fs::write(root.path().join("usr/share/udhcpc/default.script"), "").unwrap();
        assert_eq!(
            udhcpc_script_arg(root.path()),
            vec!["-s", "/usr/share/udhcpc/default.script"]
        );
    }
}
