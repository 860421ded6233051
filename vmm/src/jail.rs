//! The jail a guest's VMM runs in (`vmm --jail`, always on in instance mode):
//!
//! 1. at process start: a memory cgroup sized for the guest plus overhead, and a new
//!    PID namespace (the VMM forks once and runs as PID 1 there; the outer process only
//!    forwards stop signals and the exit code);
//! 2. once every file the guest needs is open (disks, tap, /dev/kvm, kernel loaded):
//!    a new mount namespace whose root is an empty read-only tmpfs (no path on the
//!    host is visible any more), no new privileges, all ids dropped to an
//!    unprivileged user, which also clears every capability;
//! 3. seccomp: a process-wide allowlist, and a stricter one on each vCPU thread.
//!
//! A compromised VMM thus holds only its own fds: it cannot open another instance's
//! disks, and may only make the system calls the VMM itself makes.

use host::cgroup::{Hierarchy, Limits};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, ForkResult, Gid, Uid};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::path::Path;

/// Why the jail could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("jail: {what}: {reason}")]
pub struct JailError {
    /// The step.
    pub what: String,
    /// Why it failed.
    pub reason: String,
}

fn err(what: &str) -> impl FnOnce(nix::errno::Errno) -> JailError + '_ {
    move |e| JailError {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

/// Extra memory a VMM may use beyond guest RAM (its own heap, page cache of disk I/O).
pub const MEMORY_OVERHEAD: u64 = 128 << 20;

fn cgroup_err(e: host::cgroup::CgroupError) -> JailError {
    JailError {
        what: "memory cgroup".into(),
        reason: e.to_string(),
    }
}

/// Creates cgroup `skerry/NAME` (cgroup v2, or the v1 hierarchies of a hybrid host, as
/// [`host::cgroup`] detects), limits its memory to `limit` bytes and moves this
/// process into it. Call while single-threaded: the jail forks next.
pub fn enter_cgroup(name: &str, limit: u64) -> Result<(), JailError> {
    let cgroup = Hierarchy::detect()
        .and_then(|h| h.create(name))
        .map_err(cgroup_err)?;
    cgroup
        .set_limits(&Limits {
            memory: Some(limit),
            ..Limits::default()
        })
        .and_then(|()| cgroup.add_process(std::process::id() as i32))
        .map_err(cgroup_err)
}

/// Removes cgroup `skerry/NAME` once the VMM has exited. A forced stop kills the outer
/// VMM process first; the jailed one follows through its parent-death signal a
/// moment later, or is killed here, and the removal waits until the kernel has let
/// go of it.
pub fn remove_cgroup(name: &str) {
    if let Err(e) = Hierarchy::detect().and_then(|h| h.remove_stale(name)) {
        log::warn!("could not remove cgroup skerry/{name}: {e}");
    }
}

/// Moves into a new PID namespace: forks, and returns in the child (PID 1 there). The
/// parent never returns: it forwards SIGTERM/SIGINT/SIGHUP to the child, turns SIGQUIT
/// into SIGKILL for it (a forced stop that still reaps it), and exits with the
/// child's status. Call while the process is still single-threaded.
pub fn enter_pid_namespace() -> Result<(), JailError> {
    unshare(CloneFlags::CLONE_NEWPID).map_err(err("new PID namespace"))?;
    // SAFETY: called at the start of main, before any other thread exists, so the
    // child may run arbitrary code.
    match unsafe { fork() }.map_err(err("fork into the PID namespace"))? {
        ForkResult::Child => {
            die_with_parent();
            Ok(())
        }
        ForkResult::Parent { child } => {
            let mut set = nix::sys::signal::SigSet::empty();
            for s in [
                nix::sys::signal::Signal::SIGTERM,
                nix::sys::signal::Signal::SIGINT,
                nix::sys::signal::Signal::SIGHUP,
                nix::sys::signal::Signal::SIGQUIT,
                nix::sys::signal::Signal::SIGCHLD,
            ] {
                set.add(s);
            }
            let _ = set.thread_block();
            loop {
                use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
                    Ok(_) => {}
                    Err(_) => std::process::exit(1),
                }
                use nix::sys::signal::Signal;
                match set.wait() {
                    Ok(Signal::SIGCHLD) | Err(_) => {}
                    Ok(Signal::SIGQUIT) => {
                        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    }
                    Ok(sig) => {
                        let _ = nix::sys::signal::kill(child, sig);
                    }
                }
            }
        }
    }
}

/// If the outer process is killed (forced stop), take this one down too. The kernel
/// clears this setting when credentials change, so [`lock_down`] sets it again.
fn die_with_parent() {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// Pivots into an empty, read-only root in a new mount namespace and drops to
/// `uid`/`gid` with no capabilities and no way to gain privileges again.
pub fn lock_down(uid: u32, gid: u32) -> Result<(), JailError> {
    host::mount::enter_private_mount_ns(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(|e| JailError {
            what: "new mount namespace".into(),
            reason: e.to_string(),
        })?;
    let root = Path::new("/tmp");
    // A fresh tmpfs over /tmp (only in our namespace) becomes the new root.
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=16k,mode=0755"),
    )
    .map_err(err("mounting the jail root"))?;
    std::fs::create_dir(root.join("old")).map_err(|e| JailError {
        what: "creating the pivot directory".into(),
        reason: e.to_string(),
    })?;
    match nix::unistd::pivot_root(root, &root.join("old")) {
        Ok(()) => {
            nix::unistd::chdir("/").map_err(err("chdir /"))?;
            umount2("/old", MntFlags::MNT_DETACH).map_err(err("detaching the host's root"))?;
            let _ = std::fs::remove_dir("/old");
        }
        Err(nix::errno::Errno::EINVAL) => {
            // The host runs from an initramfs (a skerry node does): rootfs cannot be
            // pivoted away from. Move the new root over / and chroot into it, like
            // switch_root; with every capability dropped below, there is no way back.
            nix::unistd::chdir(root).map_err(err("chdir to the jail root"))?;
            let _ = std::fs::remove_dir(root.join("old"));
            mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
                .map_err(err("moving the jail root over /"))?;
            nix::unistd::chroot(".").map_err(err("chroot"))?;
            nix::unistd::chdir("/").map_err(err("chdir /"))?;
        }
        Err(e) => return Err(err("pivot_root")(e)),
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err("making the jail root read-only"))?;
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(err("no_new_privs")(nix::errno::Errno::last()));
    }
    nix::unistd::setgroups(&[]).map_err(err("clearing supplementary groups"))?;
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    nix::unistd::setresgid(g, g, g).map_err(err("setresgid"))?;
    // Without PR_SET_KEEPCAPS, leaving uid 0 clears every capability set.
    nix::unistd::setresuid(u, u, u).map_err(err("setresuid"))?;
    // Changing credentials cleared the parent-death signal.
    die_with_parent();
    Ok(())
}

fn rules(calls: &[libc::c_long]) -> BTreeMap<i64, Vec<SeccompRule>> {
    calls.iter().map(|c| (*c, vec![])).collect()
}

/// System calls every VMM thread may make.
const COMMON: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_ioctl,
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
    // Dropping a handle (vCPU fd at exit, a cloned fd) closes it; std checks flags.
    libc::SYS_close,
    libc::SYS_fcntl,
];

/// Extra system calls for the VMM's non-vCPU threads (signals, console, network,
/// control, timers).
const VMM_ONLY: &[libc::c_long] = &[
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_lseek,
    libc::SYS_ftruncate,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_tgkill,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_getaffinity,
    libc::SYS_getrandom,
    libc::SYS_prctl,
    libc::SYS_seccomp,
];

fn action() -> SeccompAction {
    // VMM_SECCOMP=log makes violations log lines (audit) instead of kills: for finding
    // a missing entry, never for production.
    if std::env::var("VMM_SECCOMP").as_deref() == Ok("log") {
        SeccompAction::Log
    } else {
        SeccompAction::KillProcess
    }
}

fn compile(map: BTreeMap<i64, Vec<SeccompRule>>) -> Result<BpfProgram, JailError> {
    let filter = SeccompFilter::new(map, action(), SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| JailError {
            what: "building the seccomp filter".into(),
            reason: e.to_string(),
        })?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| JailError {
            what: "compiling the seccomp filter".into(),
            reason: e.to_string(),
        })
}

/// The process-wide filter: [`COMMON`] + [`VMM_ONLY`], threads (not processes) may be
/// created, and clone3 says ENOSYS so glibc falls back to the checkable clone.
pub fn vmm_filter() -> Result<BpfProgram, JailError> {
    let mut map = rules(COMMON);
    map.extend(rules(VMM_ONLY));
    let thread_only = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        libc::CLONE_THREAD as u64,
    )
    .and_then(|c| SeccompRule::new(vec![c]))
    .map_err(|e| JailError {
        what: "clone rule".into(),
        reason: e.to_string(),
    })?;
    map.insert(libc::SYS_clone, vec![thread_only]);
    let mut prog = compile(map)?;
    // clone3 -> ENOSYS, prepended ahead of the generated filter: load the syscall
    // number, compare, return errno.
    let enosys = libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA);
    let head = [
        bpf_stmt(0x20, 0), // ld [nr]
        bpf_jump(0x15, libc::SYS_clone3 as u32, 0, 1),
        bpf_stmt(0x06, enosys),
    ];
    // The generated program starts by checking the architecture; ours only runs on
    // x86_64 so the order does not matter for correctness.
    prog.splice(0..0, head);
    Ok(prog)
}

fn bpf_stmt(code: u16, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn bpf_jump(code: u16, k: u32, jt: u8, jf: u8) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// The vCPU filter, stacked on [`vmm_filter`]: only [`COMMON`].
pub fn vcpu_filter() -> Result<BpfProgram, JailError> {
    compile(rules(COMMON))
}

/// Applies `prog` to every thread of the process.
pub fn apply_all_threads(prog: &BpfProgram) -> Result<(), JailError> {
    seccompiler::apply_filter_all_threads(prog).map_err(|e| JailError {
        what: "installing the seccomp filter".into(),
        reason: e.to_string(),
    })
}

/// Applies `prog` to the calling thread.
pub fn apply_this_thread(prog: &BpfProgram) -> Result<(), JailError> {
    seccompiler::apply_filter(prog).map_err(|e| JailError {
        what: "installing the vCPU seccomp filter".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        assert!(vmm_filter().unwrap().len() > 20);
        assert!(vcpu_filter().unwrap().len() > 10);
    }

    #[test]
    fn a_filtered_thread_cannot_open_files() {
        // In a child process, so a kill or the filter cannot touch the test runner.
        // SAFETY: the child only calls async-signal-safe functions and exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let mut map = rules(COMMON);
                map.extend(rules(VMM_ONLY));
                let filter = SeccompFilter::new(
                    map,
                    SeccompAction::Errno(libc::EPERM as u32),
                    SeccompAction::Allow,
                    TargetArch::x86_64,
                )
                .unwrap();
                let prog: BpfProgram = filter.try_into().unwrap();
                seccompiler::apply_filter(&prog).unwrap();
                // SAFETY: a NUL-terminated literal path.
                let fd = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                // SAFETY: _exit ends the child without running the parent's atexit state.
                unsafe { libc::_exit(if fd < 0 && errno == libc::EPERM { 0 } else { 1 }) };
            }
            ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
