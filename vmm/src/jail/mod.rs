//! The jail a guest's VMM runs in (`vmm --jail`, always on in monitor mode), after
//! Firecracker's jailer:
//!
//! 1. at process start: a cgroup (through the `host` crate, v2 or v1) capping memory
//!    at the guest plus overhead and tasks at [`pids_max`], open to the devices of
//!    [`device_rules`] only (/dev/kvm, /dev/net/tun, its disks' block devices, null
//!    and the like; like the zones' device cgroup), and a new PID namespace
//!    (the VMM forks once and runs as PID 1 there; the outer process only forwards
//!    stop signals and the exit code);
//! 2. once every file the guest needs is open (disks, taps, /dev/kvm, kernel loaded):
//!    a new network namespace (the taps are already open, so they keep working), the
//!    instance's own uid/gid ([`instance_ids`]: no two instances share one), then a
//!    new user namespace owning new mount, IPC and UTS namespaces, whose root is an
//!    empty read-only tmpfs (no path on the host is visible any more); every
//!    capability dropped, also inside the user namespace; no new privileges;
//! 3. seccomp: a process-wide allowlist, and a stricter one on each vCPU thread that
//!    also filters `ioctl` by request number ([`vcpu_ioctls`]).
//!
//! A compromised VMM thus holds only its own fds: it cannot open another instance's
//! disks, signal another instance's VMM (another uid, another PID namespace), reach
//! the network, and may only make the system calls the VMM itself makes.

use host::cgroup::{DeviceKind, DeviceRule};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, ForkResult, Gid, Uid};
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
/// Tasks a VMM runs besides one per vCPU and one per nic: the jail's outer process,
/// main, signals, console input, stop timer, and room for short-lived helpers.
pub const BASE_TASKS: u64 = 16;

/// `pids.max` for a VMM with `vcpus` vCPUs and `nics` interfaces (one RX thread each).
pub fn pids_max(vcpus: u8, nics: usize) -> u64 {
    BASE_TASKS + u64::from(vcpus) + nics as u64
}

/// The cgroup limits of a VMM running a guest of `memory` bytes, its CPU time capped
/// at `cpu_cap` percent of one CPU (0: uncapped).
pub fn vmm_limits(memory: u64, vcpus: u8, nics: usize, cpu_cap: u32) -> host::cgroup::Limits {
    host::cgroup::Limits {
        memory: Some(memory.saturating_add(MEMORY_OVERHEAD)),
        cpu_cap,
        pids: Some(pids_max(vcpus, nics)),
    }
}

/// Changes the CPU cap of the existing cgroup `name` (a running VMM's), leaving its
/// memory and task limits as they are.
pub fn set_cpu_cap(name: &str, cpu_cap: u32) -> Result<(), JailError> {
    let cg = host::cgroup::Hierarchy::detect()
        .map_err(cgroup_err)?
        .existing(name)
        .ok_or_else(|| JailError {
            what: "cgroup".into(),
            reason: format!("skerry/{name} does not exist: is the guest running?"),
        })?;
    let only_cpu = host::cgroup::Limits {
        memory: None,
        cpu_cap,
        pids: None,
    };
    cg.set_limits(&only_cpu).map_err(cgroup_err)
}

fn cgroup_err(e: host::cgroup::CgroupError) -> JailError {
    JailError {
        what: "cgroup".into(),
        reason: e.to_string(),
    }
}

const fn char_dev(major: u32, minor: u32) -> DeviceRule {
    DeviceRule {
        kind: DeviceKind::Char,
        major,
        minor: Some(minor),
    }
}

/// The character devices a VMM may open: `/dev/kvm` (10:232) and `/dev/net/tun`
/// (10:200), which it opens itself, and null, zero, full, random and urandom, which a
/// library may. Everything else (another disk, /dev/mem, /dev/kmsg, a host tty) is
/// refused at open, even to root: the VMM opens the paths its config names as root,
/// before [`lock_down`] hides them, and the device cgroup bounds that window too.
pub const VMM_DEVICES: [DeviceRule; 7] = [
    char_dev(10, 232),
    char_dev(10, 200),
    char_dev(1, 3),
    char_dev(1, 5),
    char_dev(1, 7),
    char_dev(1, 8),
    char_dev(1, 9),
];

/// [`VMM_DEVICES`] and the block device of each disk that is one (a disk that is a
/// plain file needs no rule). A disk that cannot be stat'ed adds nothing: its open
/// fails later with the error that names it.
pub fn device_rules<'a>(disks: impl IntoIterator<Item = &'a Path>) -> Vec<DeviceRule> {
    let mut rules = VMM_DEVICES.to_vec();
    for disk in disks {
        let Ok(st) = nix::sys::stat::stat(disk) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFBLK {
            rules.push(DeviceRule {
                kind: DeviceKind::Block,
                major: nix::sys::stat::major(st.st_rdev) as u32,
                minor: Some(nix::sys::stat::minor(st.st_rdev) as u32),
            });
        }
    }
    rules
}

/// Creates cgroup `skerry/<name>` with `limits`, open to the `devices` only, and moves
/// this process into it.
pub fn enter_cgroup(
    name: &str,
    limits: &host::cgroup::Limits,
    devices: &[DeviceRule],
) -> Result<String, JailError> {
    let cg = host::cgroup::Hierarchy::detect()
        .and_then(|h| h.create(name))
        .map_err(cgroup_err)?;
    cg.set_limits(limits).map_err(cgroup_err)?;
    cg.restrict_devices(devices).map_err(cgroup_err)?;
    cg.add_process(std::process::id() as i32)
        .map_err(cgroup_err)?;
    Ok(cg.describe())
}

/// Removes cgroup `name`, killing what is left in it (a forced stop kills the outer
/// VMM process first; the jailed one follows through its parent-death signal).
pub fn remove_cgroup(name: &str) {
    let Ok(h) = host::cgroup::Hierarchy::detect() else {
        return;
    };
    if let Err(e) = h.remove_stale(name) {
        log::warn!("could not remove cgroup {name}: {e}");
    }
}

/// First uid/gid of the range VMM jails take theirs from: below the zones' id ranges
/// (which start at 0x4000_0000), far above any system or login user.
pub const VMM_ID_BASE: u32 = 0x3000_0000;
/// Size of that range.
pub const VMM_ID_COUNT: u32 = 1 << 28;

/// The uid and gid an instance's VMM runs as: `id_range_start` when init allocated
/// the instance a range, otherwise `VMM_ID_BASE + FNV-1a(uuid) mod VMM_ID_COUNT`
/// (stable across boots; two instances collide with odds of about n²/2^29).
pub fn instance_ids(uuid: &str, id_range_start: u32) -> (u32, u32) {
    if id_range_start != 0 {
        return (id_range_start, id_range_start);
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in uuid.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let id = VMM_ID_BASE + h % VMM_ID_COUNT;
    (id, id)
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

/// Leaves the host: a new network namespace, `uid`/`gid` instead of root, then a new
/// user namespace with new mount, IPC and UTS namespaces in it, an empty read-only
/// root, no capabilities (in any namespace) and no way to gain privileges again.
/// Call while the process is single-threaded (a user namespace requires it).
pub fn lock_down(uid: u32, gid: u32) -> Result<(), JailError> {
    // Owned by the host's user namespace: the VMM can do nothing with it, and its taps
    // were opened in the host's.
    unshare(CloneFlags::CLONE_NEWNET).map_err(err("new network namespace"))?;
    nix::unistd::setgroups(&[]).map_err(err("clearing supplementary groups"))?;
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    nix::unistd::setresgid(g, g, g).map_err(err("setresgid"))?;
    // Without PR_SET_KEEPCAPS, leaving uid 0 clears every capability set.
    nix::unistd::setresuid(u, u, u).map_err(err("setresuid"))?;
    // Changing ids made the process non-dumpable, which hands /proc/self to root: the
    // id maps below must be ours to write. Reset at the end.
    set_dumpable(true)?;
    // An unprivileged user may create a user namespace, and gets capabilities over the
    // namespaces it owns only: the new mount namespace, never the host's.
    unshare(
        CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(err("new user namespace"))?;
    write_proc("/proc/self/uid_map", &format!("{uid} {uid} 1"))?;
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/gid_map", &format!("{gid} {gid} 1"))?;
    empty_root()?;
    drop_all_capabilities()?;
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(err("no_new_privs")(nix::errno::Errno::last()));
    }
    set_dumpable(false)?;
    // Changing credentials cleared the parent-death signal.
    die_with_parent();
    Ok(())
}

fn set_dumpable(on: bool) -> Result<(), JailError> {
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) } != 0 {
        return Err(err("PR_SET_DUMPABLE")(nix::errno::Errno::last()));
    }
    Ok(())
}

fn write_proc(path: &str, text: &str) -> Result<(), JailError> {
    std::fs::write(path, text).map_err(|e| JailError {
        what: format!("writing {text:?} to {path}"),
        reason: e.to_string(),
    })
}

/// Pivots into an empty tmpfs made read-only (in the current mount namespace).
fn empty_root() -> Result<(), JailError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("making mounts private"))?;
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
    .map_err(err("making the jail root read-only"))
}

/// Empties the bounding, ambient, permitted, effective and inheritable sets: the
/// creator of a user namespace holds every capability in it until now.
fn drop_all_capabilities() -> Result<(), JailError> {
    for cap in 0..64 {
        // SAFETY: plain prctl with integer arguments; EINVAL past the last capability.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            break;
        }
    }
    // SAFETY: plain prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    // capset v3: header (version, pid 0 = this thread), two zeroed data triples.
    let mut header: [u32; 2] = [0x2008_0522, 0];
    let data = [0u32; 6];
    // SAFETY: a header and data buffer of the sizes capset v3 reads.
    if unsafe { libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()) } != 0 {
        return Err(err("dropping capabilities")(nix::errno::Errno::last()));
    }
    Ok(())
}

mod seccomp;
pub use seccomp::{apply_all_threads, apply_this_thread, vcpu_filter, vcpu_ioctls, vmm_filter};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_has_its_own_ids_outside_the_zone_ranges() {
        let a = instance_ids("0b5e1f6e-1234-4abc-8def-000000000001", 0);
        let b = instance_ids("0b5e1f6e-1234-4abc-8def-000000000002", 0);
        assert_ne!(a, b);
        assert_eq!(a, instance_ids("0b5e1f6e-1234-4abc-8def-000000000001", 0));
        for (uid, gid) in [a, b] {
            assert_eq!(uid, gid);
            assert!((VMM_ID_BASE..0x4000_0000).contains(&uid), "{uid:#x}");
        }
        assert_eq!(instance_ids("x", 0x4001_0000), (0x4001_0000, 0x4001_0000));
        assert_eq!(pids_max(2, 1), BASE_TASKS + 3);
    }
}
