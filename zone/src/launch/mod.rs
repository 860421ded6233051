//! Starting one zone: the process choreography between the runtime (host root, in its
//! private mount namespace) and the zone.
//!
//! ```text
//! runtime                      intermediate (fork)            zone init (fork, pid 1)
//!   |-- fork ------------------> unshare(USER)
//!   |<-------------- "U" -------|
//!   uid/gid maps, idmapped
//!   image + overlay, cgroup
//!   |-- "G" ------------------>  setresuid(0), unshare(UTS
//!   |                            IPC NET CGROUP PID), fork ---> waits for "G"
//!   |<---------- zone pid ------| exits
//!   veths into the zone netns
//!   /proc, /sys, masks, v2
//!   cgroupfs (helper in the
//!   zone pid+net+cgroup ns)
//!   |-- "G" -------------------------------------------------> unshare(NS),
//!   |                                                          hostname, /dev,
//!   |                                                          pivot_root, caps,
//!   |<------ error text, or EOF when exec succeeded ----------- seccomp, exec
//! ```
//!
//! The runtime is a child subreaper, so the zone init becomes its child when the
//! intermediate exits. Every fork happens while the runtime is single-threaded (the
//! netlink thread only runs between forks), so the children may allocate freely.

mod child;

use crate::cgroups::{Hierarchy, Limits, ZoneCgroup};
use crate::console::Pty;
use crate::error::{Context, Result, ZoneError};
use crate::idmap::IdMap;
use crate::net::{self, NicPlan};
use crate::rootfs::{self, Stage, Upper};
pub(crate) use child::{dhcp_client, exec, NO_DHCP_CLIENT};
use child::{intermediate, kernel_fs_in_zone, read_exact, write_all, ChildPlan, ERR_NOT_FOUND};
use host::snoop::{Leases, Snooper};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

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
    /// Directory the zone init starts in, made when missing; `None`: `/`.
    pub workdir: Option<String>,
    /// Ids the zone init runs as; `None`: the zone's root.
    pub user: Option<crate::user::ZoneUser>,
    /// cgroup limits.
    pub limits: Limits,
    /// Network interfaces.
    pub nics: Vec<NicPlan>,
    /// Written to the zone's /etc/resolv.conf when not empty.
    pub resolvers: Vec<IpAddr>,
    /// Kill the zone if the runtime dies (`zone run`; a monitor's zone outlives nothing
    /// but its monitor either, and sets this too).
    pub die_with_runtime: bool,
    /// The host ends of the zone's metadata service, put into the zone at start: a
    /// monitor's zones have them, `zone run` has none.
    pub metadata: Option<MetadataEnds>,
}

/// The host ends of a zone's metadata service, which its monitor serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataEnds {
    /// The pty slave the zone sees as /dev/ttyS1.
    pub tty: PathBuf,
    /// The directory holding the metadata socket, seen read-only in the zone at
    /// /native/.zonecontrol.
    pub control_dir: PathBuf,
}

/// PATH inside a zone.
pub const ZONE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The paths the zone tries for command `prog`, in order: `prog` itself when it has a
/// slash, else `prog` in each directory of [`ZONE_PATH`].
pub(crate) fn command_candidates(prog: &str) -> Vec<String> {
    if prog.contains('/') {
        vec![prog.to_string()]
    } else {
        ZONE_PATH
            .split(':')
            .map(|d| format!("{d}/{prog}"))
            .collect()
    }
}

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
    /// The DHCP nics' snoopers and leases.
    dhcp: Vec<DhcpPort>,
    reaped: Option<ZoneExit>,
}

/// A DHCP nic of a running zone: the snooper on its port and what it has leased.
#[derive(Debug)]
struct DhcpPort {
    nic: String,
    snooper: Snooper,
    leases: Leases,
}

impl DhcpPort {
    fn new((nic, snooper): (String, Snooper)) -> DhcpPort {
        DhcpPort {
            nic,
            snooper,
            leases: Leases::default(),
        }
    }
}

impl Zone {
    /// Sends `sig` to the zone init.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        self.signal_raw(sig as i32)
    }

    /// Sends signal number `sig` (real-time signals included) to the zone init.
    pub fn signal_raw(&self, sig: i32) -> Result<()> {
        if self.reaped.is_some() {
            return Ok(());
        }
        // SAFETY: pidfd_send_signal with a pidfd we own, a valid signal number and no
        // siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(ZoneError::io(
                    format!("sending signal {sig} to zone init {}", self.pid),
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

    /// The nics plugged into the running zone, as they are now.
    pub fn nics(&self) -> &[NicPlan] {
        &self.nics
    }

    /// Plugs one more nic into the running zone (`net::plumb_one`).
    pub fn add_nic(&mut self, plan: NicPlan) -> Result<()> {
        if let Some(snooper) = net::plumb_one(self.pid.as_raw(), &plan)? {
            self.dhcp
                .push(DhcpPort::new((plan.nic.name.clone(), snooper)));
        }
        self.nics.push(plan);
        Ok(())
    }

    /// The DHCP nics' snoopers, for the supervisor's poll: when one is readable, or
    /// at [`Zone::next_snoop`], it calls [`Zone::snoop`].
    pub fn snoop_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.dhcp.iter().map(|d| d.snooper.as_fd()).collect()
    }

    /// When [`Zone::snoop`] has work without a frame: a lease ends, or a change held
    /// back by `host::snoop::MIN_RULES_GAP` is due.
    pub fn next_snoop(&self) -> Option<Instant> {
        self.dhcp.iter().filter_map(|d| d.leases.next_wake()).min()
    }

    /// Reads what the DHCP nics' snoopers saw and drops the leases ended by `now`; a
    /// nic whose leased addresses changed gets them in its port's rules (one
    /// transaction, the old addresses out and the new in), at most once every
    /// `host::snoop::MIN_RULES_GAP`. Returns a line per change or failure, for the
    /// supervisor's log. Never blocks.
    pub fn snoop(&mut self, now: Instant) -> Vec<String> {
        let mut notes = vec![];
        for d in &mut self.dhcp {
            let events = d.snooper.events().unwrap_or_else(|e| {
                notes.push(format!("nic {}: snooping its DHCP leases: {e}", d.nic));
                vec![]
            });
            let Some(leased) = d.leases.update(events, now) else {
                continue;
            };
            let Some(plan) = self.nics.iter_mut().find(|p| p.nic.name == d.nic) else {
                continue;
            };
            let new = NicPlan {
                leased: leased.clone(),
                ..plan.clone()
            };
            match net::reinstall_rules(&new) {
                Ok(()) => {
                    *plan = new;
                    notes.push(match leased.is_empty() {
                        true => format!("nic {}: holds no address by DHCP", d.nic),
                        false => format!(
                            "nic {}: holds {} by DHCP",
                            d.nic,
                            leased
                                .iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
                Err(e) => notes.push(format!("nic {}: its DHCP lease: {e}", d.nic)),
            }
        }
        notes
    }

    /// Puts `firewall` on every nic of the running zone whose port has another one
    /// (a live firewall change); returns the names of the nics changed. A nic's switch
    /// is one transaction; a failure leaves that nic, and those after it, as they were.
    pub fn set_firewall(&mut self, firewall: Option<&spec::Firewall>) -> Result<Vec<String>> {
        let mut changed = vec![];
        for plan in self
            .nics
            .iter_mut()
            .filter(|p| p.firewall.as_ref() != firewall)
        {
            let new = NicPlan {
                firewall: firewall.cloned(),
                ..plan.clone()
            };
            net::reinstall_rules(&new)?;
            *plan = new;
            changed.push(plan.nic.name.clone());
        }
        Ok(changed)
    }

    /// Unplugs the nic named `name` (inside the zone) from the running zone.
    pub fn remove_nic(&mut self, name: &str) -> Result<()> {
        if let Some(i) = self.nics.iter().position(|p| p.nic.name == name) {
            net::unplumb_one(&self.nics[i])?;
            self.nics.remove(i);
            self.dhcp.retain(|d| d.nic != name);
        }
        Ok(())
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
        r.map_err(ZoneError::from)
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

/// Removes what an earlier runtime of the same zone left behind when it was killed
/// without cleaning up (SIGKILL, OOM killer, power cut on a persistent pool): the
/// zone's cgroup, with whatever still runs in it (killed), and its host veths. The
/// cgroup and the veth names derive from the zone's name, so they are found again.
/// Returns one line per thing removed, for the log.
///
/// Only call this while holding the zone's monitor lock: a live runtime's zone looks
/// exactly like a leftover.
pub fn clean_leftovers(spec: &LaunchSpec, hierarchy: &Hierarchy) -> Result<Vec<String>> {
    let mut cleaned = vec![];
    if let Some(stale) = hierarchy.remove_stale(&spec.name)? {
        cleaned.push(if stale.killed.is_empty() {
            format!("removed stale cgroup {}", stale.cgroup)
        } else {
            format!(
                "killed {} leftover process(es) {:?} and removed stale cgroup {}",
                stale.killed.len(),
                stale.killed,
                stale.cgroup
            )
        });
    }
    for link in net::remove_stale(&spec.nics)? {
        cleaned.push(format!("deleted stale host interface {link}"));
    }
    reap_orphans();
    Ok(cleaned)
}

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
        Ok((pid, pidfd, snoopers)) => Ok(Zone {
            pid,
            pidfd,
            cgroup,
            nics: spec.nics.clone(),
            dhcp: snoopers.into_iter().map(DhcpPort::new).collect(),
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
) -> Result<(Pid, OwnedFd, net::Snoopers)> {
    cgroup.set_limits(&spec.limits)?;
    // Set before any process joins: the zone opens only the devices it is given.
    cgroup.restrict_devices(&crate::cgroups::STANDARD_DEVICES)?;
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
    let prep = (|| -> Result<bool> {
        spec.idmap.write_for(inter.as_raw())?;
        if !stage.is_mounted() {
            let ns_path = format!("/proc/{inter}/ns/user");
            let userns = std::fs::File::open(&ns_path).ctx(|| format!("opening {ns_path}"))?;
            stage.mount(&spec.image, &spec.upper, userns.as_fd(), &spec.idmap)?;
        }
        crate::timing::mark("idmap+overlay");
        cgroup.add_process(inter.as_raw())?;
        let root = spec.idmap.host_id(0);
        Ok(cgroup.delegate(root, root)?)
    })();
    let delegated = match prep {
        Ok(d) => d,
        Err(e) => {
            abort_child(inter);
            return Err(e);
        }
    };
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
    let snoopers = match net::setup(zpid.as_raw(), &spec.nics) {
        Ok(s) => s,
        Err(e) => {
            abort_child(zpid);
            return Err(e);
        }
    };
    crate::timing::mark("network");
    stage.detach_kernel_fs();
    if let Err(e) = kernel_fs_in_zone(zpid.as_raw(), &stage.root(), delegated) {
        abort_child(zpid);
        return Err(e);
    }
    crate::timing::mark("proc+sys+masks");
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
    Ok((zpid, pidfd, snoopers))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_map_to_shell_codes_and_reboot_signals() {
        assert_eq!(ZoneExit::Exited(7).code(), 7);
        assert_eq!(ZoneExit::Signaled(Signal::SIGKILL).code(), 137);
        assert!(ZoneExit::Signaled(Signal::SIGHUP).is_reboot());
        assert!(!ZoneExit::Signaled(Signal::SIGINT).is_reboot());
        assert!(ZoneExit::Signaled(Signal::SIGINT)
            .describe()
            .contains("powered off"));
        assert!(ZoneExit::Signaled(Signal::SIGHUP)
            .describe()
            .contains("reboot"));
    }
}
