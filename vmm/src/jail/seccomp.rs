//! The jail's seccomp filters: a process-wide allowlist, and a stricter one each vCPU
//! thread installs on itself, which also filters `ioctl` by request number.

use super::JailError;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

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
    // Guest console output is written on the vCPU thread, and the console log
    // rotates by truncating.
    libc::SYS_ftruncate,
];

/// KVM request numbers, as `linux/kvm.h` defines them (kvm-ioctls keeps its own private).
mod kvm_requests {
    const KVMIO: u32 = 0xae;
    vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
    vmm_sys_util::ioctl_iow_nr!(KVM_IRQ_LINE, KVMIO, 0x61, kvm_bindings::kvm_irq_level);
    vmm_sys_util::ioctl_iow_nr!(KVM_SIGNAL_MSI, KVMIO, 0xa5, kvm_bindings::kvm_msi);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
}
use kvm_requests::*;

/// The ioctls a vCPU thread makes once its filter is on, and where (vstate/vcpu.rs
/// and the device paths it runs):
///
/// - `KVM_RUN`: the loop itself;
/// - `KVM_GET_REGS`: the RIP of a triple fault, for the log line;
/// - `KVM_IRQ_LINE` (VM fd): the ACPI SCI, raised by a PM register write;
/// - `KVM_SIGNAL_MSI` (VM fd): virtio interrupts, sent while a queue is processed on
///   the vCPU that notified it.
///
/// The serial IRQ goes through an irqfd (a `write`), taps and disks through
/// `write`/`pread64`/`pwrite64`/`fdatasync`. Anything else kills the VMM.
pub fn vcpu_ioctls() -> [u64; 4] {
    [KVM_RUN(), KVM_GET_REGS(), KVM_IRQ_LINE(), KVM_SIGNAL_MSI()]
}

/// Extra system calls for the VMM's non-vCPU threads (signals, console, network,
/// control, timers).
const VMM_ONLY: &[libc::c_long] = &[
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_lseek,
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

/// The vCPU filter, stacked on [`vmm_filter`]: only [`COMMON`], and `ioctl` only with
/// the requests of [`vcpu_ioctls`].
pub fn vcpu_filter() -> Result<BpfProgram, JailError> {
    compile(vcpu_rules()?)
}

fn vcpu_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, JailError> {
    let mut map = rules(COMMON);
    let by_request = vcpu_ioctls()
        .into_iter()
        .map(|req| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req)
                .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| JailError {
            what: "vCPU ioctl rule".into(),
            reason: e.to_string(),
        })?;
    map.insert(libc::SYS_ioctl, by_request);
    Ok(map)
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
    use nix::unistd::{fork, ForkResult};

    #[test]
    fn filters_compile() {
        assert!(vmm_filter().unwrap().len() > 20);
        assert!(vcpu_filter().unwrap().len() > 10);
    }

    /// Runs `f` in a forked child whose thread installed the vCPU filter; returns how
    /// the child ended.
    fn under_vcpu_filter(f: fn(i32) -> i32) -> nix::sys::wait::WaitStatus {
        let prog = vcpu_filter().unwrap();
        // Opened before the filter, like the VMM's own descriptors.
        let dev_null = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dev_null);
        // SAFETY: the child only installs the filter, makes system calls and exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = match apply_this_thread(&prog) {
                    Ok(()) => f(fd),
                    Err(_) => 2,
                };
                // SAFETY: _exit ends the child without running the parent's atexit state.
                unsafe { libc::_exit(code) };
            }
            ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).unwrap(),
        }
    }

    fn ioctl_on(fd: i32, request: u64) -> i32 {
        // SAFETY: an ioctl without argument on our own descriptor: /dev/null answers
        // ENOTTY to anything.
        let rc = unsafe { libc::ioctl(fd, request as _, 0) };
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        i32::from(!(rc < 0 && errno == libc::ENOTTY))
    }

    #[test]
    fn a_vcpu_thread_may_make_only_its_own_ioctls() {
        use nix::sys::wait::WaitStatus;
        // Allowed requests reach the kernel (which refuses them on /dev/null).
        let st = under_vcpu_filter(|fd| {
            vcpu_ioctls()
                .into_iter()
                .map(|req| ioctl_on(fd, req))
                .sum::<i32>()
        });
        assert!(matches!(st, WaitStatus::Exited(_, 0)), "{st:?}");
        // Any other request kills the process, even a harmless read like KVM_GET_SREGS.
        let st = under_vcpu_filter(|fd| ioctl_on(fd, KVM_GET_SREGS()));
        assert!(
            matches!(
                st,
                WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
            ),
            "{st:?}"
        );
        let st = under_vcpu_filter(|fd| ioctl_on(fd, libc::TIOCSTI));
        assert!(
            matches!(
                st,
                WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
            ),
            "{st:?}"
        );
    }

    #[test]
    fn a_vcpu_thread_may_rotate_the_console_log() {
        // Guest output is written (and the console log truncated) on the vCPU thread.
        let st = under_vcpu_filter(|fd| {
            // SAFETY: ftruncate on our own descriptor (/dev/null refuses with EINVAL).
            let rc = unsafe { libc::ftruncate(fd, 0) };
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            i32::from(rc != 0 && errno != libc::EINVAL)
        });
        assert!(
            matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "{st:?}"
        );
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
