//! What a zone's processes may do: a container-sensible capability set, `no_new_privs`
//! and a seccomp filter refusing the syscalls that reach past the zone's namespaces.

use crate::error::{Context, Result, ZoneError};
use seccompiler::{sock_filter, BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use std::collections::BTreeMap;

/// Capability numbers of `<linux/capability.h>` (libc does not carry them).
pub mod cap {
    #![allow(missing_docs)]
    pub const CHOWN: u32 = 0;
    pub const DAC_OVERRIDE: u32 = 1;
    pub const FOWNER: u32 = 3;
    pub const FSETID: u32 = 4;
    pub const KILL: u32 = 5;
    pub const SETGID: u32 = 6;
    pub const SETUID: u32 = 7;
    pub const SETPCAP: u32 = 8;
    pub const NET_BIND_SERVICE: u32 = 10;
    pub const NET_ADMIN: u32 = 12;
    pub const NET_RAW: u32 = 13;
    pub const SYS_MODULE: u32 = 16;
    pub const SYS_CHROOT: u32 = 18;
    pub const SYS_ADMIN: u32 = 21;
    pub const SYS_BOOT: u32 = 22;
    pub const MKNOD: u32 = 27;
    pub const AUDIT_WRITE: u32 = 29;
    pub const SETFCAP: u32 = 31;
}

/// Capabilities a zone keeps, all scoped to its user namespace: Docker's defaults plus
/// NET_ADMIN (a zone configures its own network, e.g. its DHCP client), SYS_BOOT
/// (reboot(2) in a pid namespace is how a zone asks to be restarted) and SYS_ADMIN, as
/// in unprivileged LXC: an OS zone's boot scripts mount /run and set the hostname, and
/// in a user namespace SYS_ADMIN only reaches the zone's own mount and uts namespaces
/// and filesystems the kernel lets user namespaces mount.
pub const KEPT_CAPS: [u32; 17] = [
    cap::CHOWN,
    cap::DAC_OVERRIDE,
    cap::FSETID,
    cap::FOWNER,
    cap::MKNOD,
    cap::NET_RAW,
    cap::SETGID,
    cap::SETUID,
    cap::SETFCAP,
    cap::SETPCAP,
    cap::NET_BIND_SERVICE,
    cap::SYS_CHROOT,
    cap::KILL,
    cap::AUDIT_WRITE,
    cap::NET_ADMIN,
    cap::SYS_BOOT,
    cap::SYS_ADMIN,
];

/// The kept capabilities as a bit mask.
pub fn kept_mask() -> u64 {
    KEPT_CAPS.iter().fold(0u64, |m, c| m | (1u64 << c))
}

/// Highest capability number the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability not in [`KEPT_CAPS`] from the bounding, ambient, effective,
/// permitted and inheritable sets of the calling process.
pub fn drop_capabilities() -> Result<()> {
    let keep = kept_mask();
    for cap in 0..=last_cap() {
        if keep & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                return Err(ZoneError::io(
                    format!("dropping capability {cap} from the bounding set"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    crate::sys::set_capabilities(keep).ctx(|| "capset".into())
}

/// Sets `no_new_privs`: nothing exec'ed in the zone can gain privileges (setuid bits,
/// file capabilities), and seccomp can be installed without CAP_SYS_ADMIN.
pub fn set_no_new_privs() -> Result<()> {
    nix::sys::prctl::set_no_new_privs().ctx(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())
}

/// Syscalls refused with EPERM in a zone: they act on the whole host (kernel modules,
/// kexec, swap, clock, accounting, keyrings that are not namespaced), open files by
/// handle around the mount namespace, or are the kernel's largest attack surfaces
/// reachable without privilege (io_uring, bpf, perf events, userfaultfd), as in
/// Docker's and Firecracker's default profiles.
pub const DENIED_SYSCALLS: [(&str, i64); 26] = [
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("acct", libc::SYS_acct),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("syslog", libc::SYS_syslog),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
];

/// The bit that marks a syscall number as the x32 ABI's (`__X32_SYSCALL_BIT`). x32
/// calls pass the x86_64 architecture check of a filter, so a filter that lists
/// x86_64 numbers must refuse them by this bit, or every denied call has a twin.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Compiles the zone's seccomp filter (done before forking; installing it is cheap).
pub fn compile_filter() -> Result<BpfProgram> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = DENIED_SYSCALLS
        .iter()
        .map(|(_, nr)| (*nr, vec![]))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| ZoneError::Setup(format!("building the seccomp filter: {e}")))?;
    let bpf: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| {
        ZoneError::Setup(format!("compiling the seccomp filter: {e}"))
    })?;
    Ok(deny_x32(bpf))
}

/// Puts in front of `bpf` a check that refuses every x32 syscall with EPERM. The
/// program that follows starts by loading the architecture, and its jumps are
/// relative, so it runs unchanged after these three instructions.
fn deny_x32(bpf: BpfProgram) -> BpfProgram {
    let insn = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // seccomp_data.nr is the first field (offset 0).
    let mut out = vec![
        insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        insn(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            0,
            1,
            X32_SYSCALL_BIT,
        ),
        insn(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
    ];
    out.extend(bpf);
    out
}

/// Installs a compiled filter on the calling thread (inherited across exec).
pub fn install_filter(bpf: &BpfProgram) -> Result<()> {
    seccompiler::apply_filter(bpf)
        .map_err(|e| ZoneError::Setup(format!("installing the seccomp filter: {e}")))
}

/// Set across [`reexec_from_readonly_mount`]'s exec: a binary that still is not on a
/// read-only mount afterwards fails instead of re-executing forever.
const REEXEC_ENV: &str = "SKERRY_ZONE_REEXECED";

/// Protection against the CVE-2019-5736 pattern: a zone process that gets hold of
/// `/proc/PID/exe` of a runtime process (one that entered the zone, or the zone init
/// before its exec) and, once that process is gone, reopens it for writing to replace
/// the host's `zone` binary. runc answers with a copy of itself in a sealed memfd
/// (one copy per container in memory) or, earlier, with a read-only bind mount; we
/// take the mount: the runtime re-executes itself from a detached, read-only clone of
/// the mount holding its binary, so every process it forks has an `exe` whose mount
/// refuses writes (`EROFS`), whoever asks and whatever the file's permissions. No
/// copy, no memory per zone; one extra exec per runtime start. A binary already on a
/// read-only mount (a squashfs root) runs as is. Call first thing in `main`, while
/// single-threaded; returns only when the binary runs from a read-only mount.
pub fn reexec_from_readonly_mount() -> Result<()> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    let exe = "/proc/self/exe";
    let readonly = statvfs(exe)
        .ctx(|| format!("statvfs {exe}"))?
        .flags()
        .contains(FsFlags::ST_RDONLY);
    if readonly {
        return Ok(());
    }
    if std::env::var_os(REEXEC_ENV).is_some() {
        return Err(ZoneError::Setup(
            "re-executed from a read-only mount of the zone binary, which is still writable".into(),
        ));
    }
    let cstr = |b: &[u8]| {
        std::ffi::CString::new(b).map_err(|_| ZoneError::Invalid("argument with a NUL".into()))
    };
    let tree = crate::sys::open_tree_clone(c"/proc/self/exe")
        .map_err(|e| ZoneError::io("cloning the mount of the zone binary", e))?;
    crate::sys::readonly_tree(tree.as_fd())
        .map_err(|e| ZoneError::io("making the zone binary's mount read-only", e))?;
    let args = std::env::args_os()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let mut env = std::env::vars_os()
        .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<Vec<_>>>()?;
    env.push(cstr(format!("{REEXEC_ENV}=1").as_bytes())?);
    let e = nix::unistd::fexecve(tree.as_fd(), &args, &env).unwrap_err();
    Err(ZoneError::io(
        "re-executing the zone binary from its read-only mount",
        e.into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_set_is_small_and_has_reboot() {
        let m = kept_mask();
        assert_ne!(m & (1 << cap::SYS_BOOT), 0);
        assert_ne!(m & (1 << cap::SYS_ADMIN), 0);
        assert_eq!(m & (1 << cap::SYS_MODULE), 0);
        assert_eq!(m.count_ones() as usize, KEPT_CAPS.len());
    }

    #[test]
    fn filter_compiles() {
        let bpf = compile_filter().unwrap();
        assert!(bpf.len() > DENIED_SYSCALLS.len());
    }
}
