//! Monitor mode (`vmm monitor --config <pool>/<uuid>/config.json`): the monitor init
//! spawns for one HVM instance. It owns the control socket, pidfile, monitor.json and
//! the console pty, and runs the guest in a child `vmm` process per boot, so a guest
//! reset is a fresh process (restarted here) and a crash never takes the socket down.
//! The contract, the socket server and the process scaffolding come from the `monitor`
//! library; the socket is served from a thread of its own.

use crate::bootdisk;
use crate::config::{DiskConfig, NetConfig, VmConfig};
use crate::devices::bus::lock;
use host::isolation::PortPolicy;
use host::snoop::{Leases, Snooper};
use monitor::{
    self as contract, AfterStop, Claim, Ended, Instance, InstanceConfig, MonitorStatus, Next,
    Pending, State, StatusFile, StopRequest, Supervised,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use spec::Kind;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
    /// The monitor could not set itself up: init's config, its stdio, or its claim
    /// on the instance (another monitor owns it, or the lock, socket or pidfile
    /// failed).
    #[error(transparent)]
    Monitor(#[from] contract::ProcessError),
    /// A tap's antispoof or firewall rules could not be put in place: the guest is
    /// not started unprotected.
    #[error("tenant isolation: {0}")]
    Isolation(#[from] host::isolation::IsolationError),
    /// A tap could not be made ready for the guest: opened, plugged into its bridge
    /// and VLAN, or snooped for its DHCP leases.
    #[error("tap {tap}: {what}: {reason}")]
    Tap {
        /// The tap.
        tap: String,
        /// The step.
        what: String,
        /// Why.
        reason: String,
    },
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
            let mac = spec::MacAddr::of_nic(nic.mac, &cfg.uuid, idx).octets();
            let bridge = cfg
                .bridges
                .get(&nic.tag)
                .cloned()
                .unwrap_or_else(|| contract::default_bridge_name(&nic.tag));
            NetConfig {
                vlan: nic.vlan,
                tap: contract::host_ifname(&cfg.uuid, idx),
                mac,
                bridge: Some(bridge),
                tap_fd: None,
            }
        })
        .collect();
    Ok(VmConfig {
        kernel: files.kernel,
        initrd: files.initrd,
        cmdline,
        memory: cfg.spec.memory,
        vcpus,
        disks,
        nets,
        uuid: cfg.uuid.parse().ok(),
        com2_fd: None,
    })
}

/// Where a boot's kernel and initrd are extracted to, and its [`child_config`] file
/// written (`<pool>/<uuid>/boot/`).
fn child_boot_dir(cfg: &InstanceConfig) -> PathBuf {
    spec::pool::instance_dir(&cfg.pool, &cfg.uuid).join("boot")
}

/// The file the child `vmm` reads its guest from (`--config-file`).
pub fn child_config_path(cfg: &InstanceConfig) -> PathBuf {
    child_boot_dir(cfg).join("vm.json")
}

/// The `vmm` arguments for one boot of the instance: how the child runs (jailed, in
/// its cgroup, its console log, its exit codes); the guest itself is in `config_file`.
pub fn child_args(cfg: &InstanceConfig, config_file: &Path, cpu_cap: u32) -> Vec<String> {
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
        "--cpu-cap".into(),
        cpu_cap.to_string(),
    ]
}

/// The CPU cap of an HVM's config (0 for anything else).
fn hvm_cpu_cap(cfg: &InstanceConfig) -> u32 {
    match &cfg.spec.kind {
        Kind::Hvm(h) => h.cpu_cap,
        Kind::Zone(_) => 0,
    }
}

/// The cgroup of an instance's VMM (under `skerry/`).
pub fn cgroup_name(uuid: &str) -> String {
    contract::vmm_cgroup_name(uuid)
}

/// What the supervising loop, the socket's threads and the signal thread share.
struct Shared {
    status: MonitorStatus,
    child: Option<u32>,
    /// A stop or reboot asked of the guest.
    pending: Pending,
    /// The VMM's CPU cap: the config's at start, then what a `Reload` set live (the
    /// next boot in this monitor keeps it).
    cpu_cap: u32,
}

struct Monitor {
    cfg: InstanceConfig,
    state: Mutex<Shared>,
    changed: Condvar,
    status_file: StatusFile,
    console: OwnedFd,
    console_slave: PathBuf,
    metadata: Option<crate::metadata::MetadataService>,
    /// The taps' rules: which firewall they carry, held across every install,
    /// reinstall and removal so that a live change and a boot never interleave.
    ports: Mutex<PortRules>,
}

/// The DHCP nics' snoopers of one boot, each with its nic's index.
type Snoopers = Vec<(usize, Snooper)>;

/// A boot whose VMM has been spawned: the child, the boot's number ([`PortRules`]),
/// and its DHCP nics' snoopers.
struct Started {
    child: Child,
    boot: u64,
    snoopers: Snoopers,
}

/// The firewall the taps' rules carry (the config's at start, then what a `Reload`
/// set live), whether the rules are in place (from a boot's start to its end), which
/// boot they are of, and each DHCP nic's leased addresses in this boot (by nic index).
struct PortRules {
    firewall: Option<spec::Firewall>,
    installed: bool,
    boot: u64,
    leased: Vec<Vec<Ipv4Addr>>,
}

/// The guest as the socket's requests and the supervising loop see it.
struct Guest {
    m: Arc<Monitor>,
    /// The guest's `vmm` process of the current run (the supervising loop's).
    child: Option<Child>,
    /// How the last run's process ended, for the report.
    exit: Option<std::io::Result<ExitStatus>>,
    /// When the current run started.
    booted_at: Instant,
    /// Runs in a row that ended in a reset within [`QUICK_RESET`].
    quick_resets: u32,
}

impl Guest {
    fn new(m: Arc<Monitor>) -> Guest {
        Guest {
            m,
            child: None,
            exit: None,
            booted_at: Instant::now(),
            quick_resets: 0,
        }
    }
}

impl Instance for Guest {
    type Error = InstanceError;

    /// Starts the guest's `vmm` process for one boot.
    fn boot(&mut self) -> Result<(), InstanceError> {
        let m = &self.m;
        // A boot that does not start leaves no rules (a failure half-way through them
        // included).
        let Started {
            child,
            boot,
            snoopers,
        } = m.spawn_child().inspect_err(|_| m.remove_port_rules())?;
        if !snoopers.is_empty() {
            let m = Arc::clone(m);
            std::thread::Builder::new()
                .name("dhcp-snoop".into())
                .spawn(move || m.snoop(boot, snoopers))
                .map_err(io_err("starting the DHCP snooper"))?;
        }
        let pid = child.id();
        let mut stop_now = false;
        m.update(|st| {
            stop_now = st.pending.stopping();
            st.child = Some(pid);
            st.pending.booted();
            let state = if stop_now {
                State::Stopping
            } else {
                State::Running
            };
            st.status.set(state, "");
            st.status.instance_pid = Some(pid);
            st.status.started_at = Some(spec::unix_now());
        });
        self.child = Some(child);
        self.booted_at = Instant::now();
        if stop_now {
            // A stop request raced with this boot: it wins.
            let pid = Pid::from_raw(pid as i32);
            let _ = kill(pid, Signal::SIGQUIT);
            m.kill_after(pid, Duration::from_secs(2));
        }
        Ok(())
    }

    fn request_stop(&mut self, stop: StopRequest) -> Result<String, InstanceError> {
        let grace = stop.grace.unwrap_or(REBOOT_GRACE);
        self.m.request_stop(stop.force, grace, stop.then);
        Ok(match stop.then {
            AfterStop::Exit => "stopping",
            AfterStop::Reboot => "rebooting",
        }
        .into())
    }

    /// The serial console's pty master (a duplicate: the monitor keeps its own).
    fn console(&mut self) -> Result<OwnedFd, InstanceError> {
        self.m
            .console
            .try_clone()
            .map_err(io_err("duplicating the console"))
    }

    fn status(&mut self) -> MonitorStatus {
        lock(&self.m.state).status.clone()
    }

    /// Applies the customer metadata of the rewritten config.json to the guest's
    /// metadata store; everything else of an HVM applies at its next boot.
    fn reload(&mut self) -> Option<Result<String, InstanceError>> {
        Some(self.m.reload_metadata())
    }
}

impl Monitor {
    fn reload_metadata(&self) -> Result<String, InstanceError> {
        let path = contract::config_path(&self.cfg.pool, &self.cfg.uuid);
        let bad = |reason: String| InstanceError::Config {
            path: path.clone(),
            reason,
        };
        let cfg = contract::read_config(&path)?;
        if cfg.uuid != self.cfg.uuid || !matches!(cfg.spec.kind, Kind::Hvm(_)) {
            return Err(bad(format!(
                "not the config of HVM instance {} any more; restart it instead",
                self.cfg.uuid
            )));
        }
        let Some(service) = &self.metadata else {
            return Err(bad("this instance has no metadata service".into()));
        };
        let mut notes = Vec::new();
        notes.extend(
            self.reload_firewall(cfg.spec.firewall.as_ref())
                .map_err(bad)?,
        );
        let cap = hvm_cpu_cap(&cfg);
        if cap != lock(&self.state).cpu_cap {
            // Live when the VMM runs; either way the next boot starts with it.
            if lock(&self.state).child.is_some() {
                crate::jail::set_cpu_cap(&cgroup_name(&self.cfg.uuid), cap)
                    .map_err(|e| bad(format!("cpu-cap {cap}: {e}")))?;
            }
            self.update(|st| {
                st.cpu_cap = cap;
                st.status.details.insert("cpu_cap".into(), cap.to_string());
            });
            notes.push(format!("cpu-cap {cap} applied"));
        }
        service
            .apply_spec(&cfg)
            .map_err(|e| bad(format!("applying its metadata: {e}")))?;
        notes.push("customer metadata applied".into());
        let note = notes.join("; ");
        log::info!("reload: {note}");
        Ok(note)
    }
}

impl Supervised for Guest {
    /// Waits for the guest's `vmm` process (the socket is served on other threads).
    fn wait(&mut self) -> Ended {
        let status = match self.child.take() {
            Some(mut child) => child.wait(),
            None => Err(std::io::Error::other("no guest process was started")),
        };
        crate::jail::remove_cgroup(&cgroup_name(&self.m.cfg.uuid));
        self.m.remove_port_rules();
        let code = status.as_ref().ok().and_then(|s| s.code());
        self.exit = Some(status);
        let mut st = lock(&self.m.state);
        st.child = None;
        st.status.instance_pid = None;
        match code {
            Some(RESET_EXIT) => Ended::Reboot,
            Some(0) => Ended::Clean,
            _ => Ended::Failed,
        }
    }

    fn settle(&mut self, how: Ended) -> Next {
        lock(&self.m.state).pending.after(how)
    }

    fn report(&mut self, next: Next) {
        let reason = match (next, &self.exit) {
            (Next::Boot, _) => "guest rebooted".to_owned(),
            (Next::Stopped { .. }, _) => "stopped".to_owned(),
            (Next::Failed, Some(status)) => match status.as_ref().ok().and_then(|s| s.code()) {
                Some(c) => format!("vmm exited with status {c}"),
                None => format!("vmm killed: {status:?}"),
            },
            (Next::Failed, None) => "vmm killed: no exit status".to_owned(),
        };
        self.m.update(|st| match next {
            // The state stays what it was until the next boot says otherwise.
            Next::Boot => st.status.reason = reason,
            Next::Stopped { .. } => st.status.set(State::Stopped, reason),
            Next::Failed => st.status.set(State::Failed, reason),
        });
    }

    fn report_boot_failure(&mut self, error: InstanceError, _again: bool) {
        log::error!("{error}");
        self.m.update(|st| {
            st.status.set(State::Failed, error.to_string());
            st.status.instance_pid = None;
        });
    }

    /// A guest that resets right away (triple faults at boot, say) is restarted with
    /// a growing pause, so it cannot spin a CPU; a stop request ends the pause, and
    /// a stop asked before a boot wins over it.
    fn before_boot(&mut self, again: bool) -> Option<Next> {
        let mut st = lock(&self.m.state);
        if again {
            self.quick_resets = if self.booted_at.elapsed() < QUICK_RESET {
                self.quick_resets + 1
            } else {
                0
            };
            if self.quick_resets > 3 {
                let pause = RESTART_BACKOFF_MAX
                    .min(Duration::from_millis(100 << (self.quick_resets - 3).min(6)));
                log::warn!(
                    "guest reset {} times in a row within {QUICK_RESET:?}; restarting in {pause:?}",
                    self.quick_resets
                );
                st = self
                    .m
                    .changed
                    .wait_timeout_while(st, pause, |s| !s.pending.stopping())
                    .map(|(st, _)| st)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }
        st.pending
            .stopping()
            .then_some(Next::Stopped { on_request: true })
    }
}

/// Grace period of a reboot request and of SIGTERM to the monitor.
const REBOOT_GRACE: Duration = Duration::from_secs(30);

impl Monitor {
    fn save(&self, st: &Shared) {
        if let Err(e) = self.status_file.write(&st.status) {
            log::error!("{e}");
        }
    }

    fn update(&self, f: impl FnOnce(&mut Shared)) {
        let mut st = lock(&self.state);
        f(&mut st);
        self.save(&st);
        self.changed.notify_all();
    }

    /// Every tap's rules, in place before the child opens the tap (they are keyed by
    /// its name), so the guest's first frame is already filtered.
    /// Puts the taps' rules in place for a new boot (no leases yet); returns the boot.
    fn install_port_rules(&self) -> Result<u64, InstanceError> {
        let mut ports = lock(&self.ports);
        // Marked first: after a failure half-way, the boot's end removes what went in.
        ports.installed = true;
        ports.boot += 1;
        ports.leased = vec![vec![]; self.cfg.spec.nics.len()];
        self.install_rules(ports.firewall.as_ref(), &ports.leased)?;
        Ok(ports.boot)
    }

    /// Installs (or replaces, one transaction per tap) the taps' rules with `firewall`
    /// and each DHCP nic's `leased` addresses.
    fn install_rules(
        &self,
        firewall: Option<&spec::Firewall>,
        leased: &[Vec<Ipv4Addr>],
    ) -> Result<(), InstanceError> {
        for (idx, nic) in self.cfg.spec.nics.iter().enumerate() {
            let port = contract::host_ifname(&self.cfg.uuid, idx);
            let mac = spec::MacAddr::of_nic(nic.mac, &self.cfg.uuid, idx).octets();
            let mut policy = PortPolicy::for_nic(&port, mac, nic, firewall);
            let leases = leased.get(idx).map_or(&[][..], Vec::as_slice);
            policy.addrs.extend(leases.iter().copied().map(IpAddr::V4));
            host::isolation::install(&policy)?;
        }
        Ok(())
    }

    /// Creates the boot's taps (their rules are in place): each plugged into its
    /// bridge and VLAN, and a DHCP nic's snooped from then on, before the guest can
    /// send anything. Hands each to the child through `vm` (`tap_fd`); returns the
    /// descriptors to keep open until the child is spawned, and the snoopers.
    fn open_taps(&self, vm: &mut VmConfig) -> Result<(Vec<OwnedFd>, Snoopers), InstanceError> {
        let mut fds = vec![];
        let mut snoopers = vec![];
        for (idx, (net, nic)) in vm.nets.iter_mut().zip(&self.cfg.spec.nics).enumerate() {
            let tap = &net.tap;
            let failed = |what: &str, reason: String| InstanceError::Tap {
                tap: tap.clone(),
                what: what.into(),
                reason,
            };
            let fd = OwnedFd::from(
                host::link::open_tap(tap).map_err(|e| failed("opening", e.to_string()))?,
            );
            nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .map_err(|e| failed("handing it over", e.to_string()))?;
            if host::snoop::needed(nic) {
                let s = Snooper::open(tap, net.mac)
                    .map_err(|e| failed("snooping its DHCP leases", e.to_string()))?;
                snoopers.push((idx, s));
            }
            if let Some(bridge) = net.bridge.take() {
                // Plugging into the bridge also sets the tap up.
                host::link::plug_into_bridge(tap, &bridge)
                    .map_err(|e| failed("plugging in", e.to_string()))?;
                if net.vlan != 0 {
                    host::vlan::isolate_port(&bridge, tap, net.vlan, |port| {
                        !contract::is_host_ifname(port)
                    })
                    .map_err(|e| failed("its VLAN", e.to_string()))?;
                }
            }
            net.tap_fd = Some(fd.as_raw_fd());
            fds.push(fd);
        }
        Ok((fds, snoopers))
    }

    /// Puts the leases the DHCP nics' snoopers see into their taps' rules, for as long
    /// as boot `boot` runs (a snooper's tap goes with the boot).
    fn snoop(&self, boot: u64, snoopers: Snoopers) {
        let mut ports: Vec<(usize, Snooper, Leases)> = snoopers
            .into_iter()
            .map(|(idx, s)| (idx, s, Leases::default()))
            .collect();
        loop {
            // At least once a second: to see the boot end.
            let wake = ports.iter().filter_map(|p| p.2.next_wake()).min();
            let ms = wake.map_or(1000, |t| {
                t.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(1000) as u16
                    + 1
            });
            let mut fds: Vec<nix::poll::PollFd> = ports
                .iter()
                .map(|p| nix::poll::PollFd::new(p.1.as_fd(), nix::poll::PollFlags::POLLIN))
                .collect();
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
            drop(fds);
            let now = Instant::now();
            let mut changed = false;
            let mut due = vec![];
            for (idx, snooper, leases) in &mut ports {
                let events = match snooper.events() {
                    Ok(events) => events,
                    Err(e) => {
                        log::error!("nic {idx}: no more DHCP snooping: {e}");
                        return;
                    }
                };
                // At most one change of a tap's rules per MIN_RULES_GAP.
                due.extend(leases.update(events, now).map(|addrs| (*idx, addrs)));
            }
            let mut rules = lock(&self.ports);
            if rules.boot != boot || !rules.installed {
                return;
            }
            for (idx, addrs) in due {
                rules.leased[idx] = addrs;
                changed = true;
            }
            if !changed {
                continue;
            }
            match self.install_rules(rules.firewall.as_ref(), &rules.leased) {
                Ok(()) => log::info!("DHCP leases held: {:?}", rules.leased),
                Err(e) => log::error!("putting DHCP leases into the rules: {e}"),
            }
        }
    }

    /// Removes the taps' rules once the child (and with it each tap) is gone.
    fn remove_port_rules(&self) {
        let mut ports = lock(&self.ports);
        ports.installed = false;
        for idx in 0..self.cfg.spec.nics.len() {
            let port = contract::host_ifname(&self.cfg.uuid, idx);
            if let Err(e) = host::isolation::remove(&port) {
                log::warn!("{e}");
            }
        }
    }

    /// A `Reload`'s firewall: the taps' rules now, if the guest runs, and the next
    /// boot's. `None` when it is the one they carry.
    fn reload_firewall(&self, firewall: Option<&spec::Firewall>) -> Result<Option<String>, String> {
        let mut ports = lock(&self.ports);
        if ports.firewall.as_ref() == firewall {
            return Ok(None);
        }
        if ports.installed {
            if let Err(e) = self.install_rules(firewall, &ports.leased) {
                // Each tap's switch is one transaction: put back the ones that switched.
                let _ = self.install_rules(ports.firewall.as_ref(), &ports.leased);
                return Err(format!("firewall: {e}"));
            }
        }
        ports.firewall = firewall.cloned();
        Ok(Some(
            match firewall {
                Some(_) => "firewall applied",
                None => "firewall removed",
            }
            .into(),
        ))
    }

    fn spawn_child(&self) -> Result<Started, InstanceError> {
        let mut vm = child_config(&self.cfg)?;
        let boot = self.install_port_rules()?;
        // Closed once the child has them (a tap lives as long as its VMM holds it).
        let (_taps, snoopers) = self.open_taps(&mut vm)?;
        // The guest's COM2; this end closes when spawn_child returns (the child has it).
        let _com2 = crate::metadata::MetadataService::attach(self.metadata.as_ref(), &mut vm);
        let config_file = child_config_path(&self.cfg);
        spec::atomic::write_json_atomic(&config_file, &vm)
            .map_err(io_err(format!("writing {}", config_file.display())))?;
        let args = child_args(&self.cfg, &config_file, lock(&self.state).cpu_cap);
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
            .map(|child| Started {
                child,
                boot,
                snoopers,
            })
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

    fn request_stop(self: &Arc<Self>, force: bool, grace: Duration, then: AfterStop) {
        let pid = {
            let mut st = lock(&self.state);
            st.pending.ask(then);
            if then == AfterStop::Exit {
                st.status.state = State::Stopping;
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
            let st = lock(&me.state);
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

/// Entry point of `vmm monitor`; returns the process exit code (see the contract).
pub fn main(config_path: &Path) -> Result<i32, InstanceError> {
    let cfg = contract::read_config(config_path)?;
    let log_path = contract::monitor_log_path(&cfg.pool, &cfg.uuid);
    contract::detach(&log_path)?;
    // The jailed vmm writes here too, through the descriptor it inherits.
    contract::BoundedMonitorLog::new(log_path, contract::MONITOR_LOG_MAX).enforce_in_background();
    if !matches!(cfg.spec.kind, Kind::Hvm(_)) {
        return Err(InstanceError::Config {
            path: config_path.to_owned(),
            reason: format!("instance {} is not an HVM instance", cfg.spec.name),
        });
    }
    // First of all: a live monitor of this instance keeps it, and is never disturbed.
    let (claim, server) = Claim::take(&cfg.run_dir, &cfg.uuid)?;
    let (console, console_slave) = raw_pty()?;
    let mut status = MonitorStatus::provisioning(std::process::id());
    status.details.insert("vmm".into(), "skerry".into());
    let monitor = Arc::new(Monitor {
        state: Mutex::new(Shared {
            status,
            child: None,
            pending: Pending::default(),
            cpu_cap: hvm_cpu_cap(&cfg),
        }),
        changed: Condvar::new(),
        status_file: StatusFile::of(&cfg.pool, &cfg.uuid),
        console,
        console_slave,
        metadata: crate::metadata::MetadataService::open_logged(&cfg),
        ports: Mutex::new(PortRules {
            firewall: cfg.spec.firewall.clone(),
            installed: false,
            boot: 0,
            leased: vec![],
        }),
        cfg,
    });
    {
        let m = monitor.clone();
        std::thread::spawn(move || {
            server.serve(move |req| contract::answer(&mut Guest::new(Arc::clone(&m)), req))
        });
    }
    {
        // SIGTERM/SIGINT to the monitor: graceful stop of the guest.
        let m = monitor.clone();
        std::thread::spawn(move || {
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(Signal::SIGTERM);
            set.add(Signal::SIGINT);
            while set.wait().is_ok() {
                m.request_stop(false, REBOOT_GRACE, AfterStop::Exit);
            }
        });
    }
    let code = contract::supervise(&mut Guest::new(Arc::clone(&monitor)));
    claim.release();
    Ok(code)
}
