//! init as PID 1: bring the node up, run the daemon, and never exit.
//!
//! Every phase runs under `catch_unwind` and reports instead of failing: a PID 1 that
//! exits panics the kernel, and a node that comes up halfway (with a rescue shell) is
//! better than none.

pub mod boot_manifests;
pub mod cmdline;
pub mod error;
pub mod identity;
pub mod modules;
pub mod mounts;
pub mod rootfs;
pub mod services;
pub mod ssh;

use crate::console;
use crate::daemon::{self, DaemonOptions};
use cmdline::{Cmdline, IpMode, PoolSource};
use error::{io, sys, BootError, ModuleLoadError};
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the pool is mounted on a node.
pub const POOL_MOUNT: &str = "/zones";

/// Boot bookkeeping: phase durations and whether something essential failed.
#[derive(Default)]
struct Boot {
    phases: Vec<(String, Duration)>,
    essential_failure: Option<String>,
}

/// A phase's outcome and how long it took, measured where it ran (maybe on another
/// thread), settled into the [`Boot`] by [`Boot::settle`].
struct Timed<T> {
    took: Duration,
    outcome: std::thread::Result<Result<T, BootError>>,
}

/// Runs `f`, timing it and catching a panic.
fn timed<T>(f: impl FnOnce() -> Result<T, BootError>) -> Timed<T> {
    let t = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(f));
    Timed {
        took: t.elapsed(),
        outcome,
    }
}

impl Boot {
    /// Runs a phase; a panic or error is logged, and recorded as essential when
    /// `essential`.
    fn phase<T>(
        &mut self,
        name: &str,
        essential: bool,
        f: impl FnOnce() -> Result<T, BootError>,
    ) -> Option<T> {
        self.settle(name, essential, timed(f))
    }

    /// Runs two independent phases at once, `a` on another thread; each is recorded
    /// like [`Boot::phase`], `b` first (it ran here) then `a`.
    fn phases_alongside<A: Send, B>(
        &mut self,
        (a_name, a_essential, a): (&str, bool, impl FnOnce() -> Result<A, BootError> + Send),
        (b_name, b_essential, b): (&str, bool, impl FnOnce() -> Result<B, BootError>),
    ) -> (Option<A>, Option<B>) {
        let (ta, tb) = std::thread::scope(|s| {
            let ta = s.spawn(|| timed(a));
            let tb = timed(b);
            // `timed` catches the phase's panic; a failed join is the thread's own.
            let ta = ta.join().unwrap_or_else(|p| Timed {
                took: Duration::ZERO,
                outcome: Err(p),
            });
            (ta, tb)
        });
        let b = self.settle(b_name, b_essential, tb);
        (self.settle(a_name, a_essential, ta), b)
    }

    /// Records a phase that ran: its duration, and its failure (essential or not).
    fn settle<T>(&mut self, name: &str, essential: bool, t: Timed<T>) -> Option<T> {
        log::info!("phase {name}: {:.1} ms", t.took.as_secs_f64() * 1000.0);
        self.phases.push((name.to_string(), t.took));
        let err = match t.outcome {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "panicked".to_string(),
        };
        log::error!("{name}: {err}");
        if essential && self.essential_failure.is_none() {
            self.essential_failure = Some(format!("{name} failed: {err}"));
        }
        None
    }
}

/// PID 1's entry point. Never returns.
pub fn main() -> ! {
    std::panic::set_hook(Box::new(|info| {
        console::say(&format!("init: internal error: {info}"));
    }));
    let mut boot = Boot::default();
    // Why the root could not be moved off the initramfs, said once logging is up.
    let mut switch_failure = None;
    if rootfs::needs_switch() {
        let t = Instant::now();
        // Returns only when it failed; zones then fail at pivot_root, said below.
        let err = rootfs::switch_to_tmpfs()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let failure = format!("failed after {:?}: {err}", t.elapsed());
        // Marks the switch as tried, for whatever this process execs later.
        std::env::set_var(rootfs::SWITCHED_ENV, &failure);
        switch_failure = Some(failure);
    }
    let errs = mounts::api_filesystems();
    attach_console();
    console::init_logging();
    for e in errs {
        log::error!("{e}");
    }
    let _ = std::fs::create_dir_all("/run/skerry");
    if let Err(e) = console::log_to_file(Path::new("/run/skerry/log")) {
        log::warn!("/run/skerry/log: {e}");
    }
    std::env::set_var("PATH", "/bin:/sbin:/usr/bin:/usr/sbin");
    console::say("init starting");
    if let Some(v) = switch_failure {
        log::error!("moving the root off the initramfs {v}; zones cannot pivot_root");
    }
    // Ctrl-Alt-Del becomes SIGINT to us: a clean shutdown instead of an instant reset.
    let _ = nix::sys::reboot::set_cad_enabled(false);

    boot.phase("cgroup2", true, || {
        let enabled = mounts::cgroup2()?;
        log::info!("cgroup2 controllers enabled: {}", enabled.join(" "));
        Ok(())
    });
    let cmdline = boot
        .phase("cmdline", false, || {
            let text = std::fs::read_to_string("/proc/cmdline").map_err(io("/proc/cmdline"))?;
            Ok(Cmdline::parse(&text)?)
        })
        .unwrap_or_else(|| Cmdline::parse("").expect("the empty command line parses"));
    for e in &cmdline.ignored {
        log::error!("kernel command line: {e}; left out");
    }
    // The modules the boot waits for (disks, nic) now; the rest (what instances
    // need) on a thread of their own while the network and the pool come up.
    let late_modules = boot.phase("modules", false, || {
        let (idx, plan, threads) = plan_modules(&cmdline)?;
        let wanted_first: Vec<String> = cmdline
            .modules
            .iter()
            .map(|m| modules::module_name(m))
            .collect();
        let (first, rest) = plan
            .split(|m| modules::BOOT_MODULES.contains(&m) || wanted_first.iter().any(|w| w == m));
        log_modules("modules", &idx.load(&first, threads), threads);
        Ok(std::thread::spawn(move || {
            let t = Instant::now();
            // A panic here costs the instances their modules, never PID 1.
            match catch_unwind(AssertUnwindSafe(|| idx.load(&rest, threads))) {
                Ok(report) => log_modules("modules for instances", &report, threads),
                Err(_) => log::error!("modules for instances: panicked"),
            }
            t.elapsed()
        }))
    });
    // The node's address and its pool need nothing of each other: the nic comes up
    // (hundreds of milliseconds under emulation) while the pool disk is found and
    // mounted.
    let (net, pool) = boot.phases_alongside(
        ("network", false, || network(&cmdline)),
        ("pool", true, || mount_pool(&cmdline)),
    );
    let (hostname, admin_addr) = net.unwrap_or_default();
    let pool_ok = pool.is_some();
    boot.phase("machine-id", false, || {
        let config = pool_ok.then(|| spec::pool::config_dir(Path::new(POOL_MOUNT)));
        let id = identity::ensure_machine_id(config.as_deref(), Path::new("/etc/machine-id"))?;
        log::info!("machine id {id}");
        Ok(())
    });
    if pool_ok {
        if let Some(url) = &cmdline.manifests_url {
            boot.phase("manifests-url", false, || {
                let mac = crate::net::physical_interfaces()
                    .first()
                    .and_then(|i| crate::net::mac_of(i));
                let url = cmdline::substitute(url, mac.as_deref(), hostname.as_deref());
                boot_manifests::refresh_at_boot(
                    &url,
                    Path::new(POOL_MOUNT),
                    Path::new(boot_manifests::IMAGE_TRUST_ROOT),
                    &boot_manifests::Limits::default(),
                )?;
                Ok(())
            });
        }
    }
    // The system bus and the SSH server are independent: start both at once (SSH
    // comes before the daemon: it is also the way in when the daemon cannot start).
    let (dropbear, _) = boot.phases_alongside(
        ("ssh", false, || {
            let Some(addr) = admin_addr else {
                log::warn!("ssh: the node has no address (ip=off, or no lease): not started");
                return Ok(None);
            };
            let pool = pool_ok.then_some(Path::new(POOL_MOUNT));
            let mut keys = cmdline.ssh_keys.clone();
            if let Some(p) = pool {
                let file = spec::pool::config_dir(p).join("node.kdl");
                // The daemon reads it again and reports a bad file; here only the keys count.
                match crate::node_config::NodeConfig::load(&file) {
                    Ok(cfg) => keys.extend(cfg.ssh_keys),
                    Err(e) => log::error!("ssh: keys of node.kdl not used: {e}"),
                }
            }
            ssh::start(pool, addr, &keys).map(Some)
        }),
        ("dbus", true, || {
            services::start_dbus("/usr/bin/dbus-daemon").map(|_| ())
        }),
    );

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            services::rescue_shell(&format!("cannot start the async runtime: {e}"));
            reap_forever();
        }
    };
    rt.block_on(async move {
        tokio::spawn(services::reap_orphans());
        if let Some(dropbear) = dropbear.flatten() {
            tokio::spawn(dropbear.supervise());
        }
        let daemon = if pool_ok {
            let opts = DaemonOptions {
                pool: PathBuf::from(POOL_MOUNT),
                run_dir: PathBuf::from(monitor::DEFAULT_RUN_DIR),
                bus_address: None,
                zone_bin: PathBuf::from("/bin/zone"),
                vmm_bin: PathBuf::from("/bin/vmm"),
                imgadm_bin: PathBuf::from("/bin/imgadm"),
                metrics_bin: PathBuf::from("/bin/skerry-metrics"),
                sources: cmdline.sources.clone(),
                bus_required: false,
                stop_timeout: Duration::from_secs(10),
                set_hostname: true,
            };
            let phases = boot.phases.clone();
            // Instances need the rest of the modules (bridges, overlay, KVM): the
            // reconcile waits for them, after the API is up.
            let wait = late_modules.map(|loading| -> daemon::BeforeReconcile {
                Box::new(move || {
                    let waited = Instant::now();
                    let took = loading.join().unwrap_or_default();
                    vec![
                        ("modules-for-instances".to_string(), took),
                        ("modules-for-instances-wait".to_string(), waited.elapsed()),
                    ]
                })
            });
            match daemon::start_with(&opts, phases, wait).await {
                Ok(d) => Some(d),
                Err(e) => {
                    boot.essential_failure
                        .get_or_insert(format!("node daemon: {e}"));
                    None
                }
            }
        } else {
            None
        };
        if let Some(why) = &boot.essential_failure {
            services::rescue_shell(why);
        } else if cmdline.shell {
            services::rescue_shell("skerry.shell given");
        }
        match daemon {
            Some(d) => d.run_until_shutdown().await,
            None => wait_for_signal().await,
        }
    });
    shutdown_and_reboot();
}

/// The plan of every module this node loads: the image's modules.dep (or the node's
/// core set from a full tree), only this CPU's KVM module, and `skerry.modules=`.
fn plan_modules(
    cmdline: &Cmdline,
) -> Result<(modules::ModuleIndex, modules::plan::LoadPlan, usize), BootError> {
    let release = nix::sys::utsname::uname()
        .map_err(sys("uname"))?
        .release()
        .to_string_lossy()
        .into_owned();
    let idx = modules::ModuleIndex::open(&Path::new("/lib/modules").join(release))?;
    // The image's modules.dep lists what this node needs; a full module tree (a
    // hand-made image) gets the node's core set instead of everything.
    let mut wanted = idx.names();
    if wanted.len() > 300 {
        wanted = modules::NODE_MODULES
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    // Only the KVM module of this CPU's vendor: the other is refused anyway.
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = modules::plan::cpu_flags(&cpuinfo);
    wanted.retain(|m| match modules::plan::not_for_this_cpu(m, &flags) {
        Some(why) => {
            log::info!("module {m} not loaded: {why}");
            false
        }
        None => true,
    });
    wanted.extend(cmdline.modules.iter().cloned());
    let (plan, errs) = idx.plan(&wanted);
    for e in &errs {
        log::warn!("module {e}");
    }
    let threads = cmdline.module_loaders.unwrap_or_else(modules::loaders);
    Ok((idx, plan, threads))
}

/// Logs what loading a part of the modules came to: each failure, then the count
/// and the slowest loads.
fn log_modules(what: &str, report: &modules::LoadReport, threads: usize) {
    for e in &report.errors {
        // kvm_intel on AMD and the like: expected, not a fault.
        if matches!(
            e,
            BootError::Module {
                source: ModuleLoadError::NoSuchHardware,
                ..
            }
        ) {
            log::info!("module {e}");
        } else {
            log::warn!("module {e}");
        }
    }
    let slowest: Vec<String> = report
        .slowest(4)
        .iter()
        .map(|(m, d)| format!("{m} {:.0} ms", d.as_secs_f64() * 1000.0))
        .collect();
    log::info!(
        "{what}: {} loaded, {threads} at a time; slowest: {}",
        report.loaded.len(),
        slowest.join(", ")
    );
}

/// Brings up lo and the node's interface; returns the hostname learnt, if any, and
/// the node's (admin) address.
fn network(c: &Cmdline) -> Result<(Option<String>, Option<Ipv4Addr>), BootError> {
    crate::net::loopback_up()?;
    let ifaces = crate::net::physical_interfaces();
    match &c.ip {
        IpMode::Off => Ok((None, None)),
        IpMode::Static {
            addr,
            hostname,
            dns,
        } => {
            let mut a = addr.clone();
            if a.iface.is_empty() {
                a.iface = ifaces
                    .first()
                    .cloned()
                    .ok_or(BootError::NoInterface("ip= given"))?;
            }
            crate::net::configure(&a)?;
            services::write_resolv_conf(&dns.iter().map(|d| d.to_string()).collect::<Vec<_>>());
            if let Some(h) = hostname {
                let _ = nix::unistd::sethostname(h);
            }
            log::info!("{}: {}/{} via {:?}", a.iface, a.addr, a.prefix, a.gateway);
            Ok((hostname.clone(), Some(a.addr)))
        }
        IpMode::Auto if ifaces.is_empty() => Ok((None, None)),
        IpMode::Dhcp(None) if ifaces.is_empty() => Err(BootError::NoInterface("ip=dhcp")),
        IpMode::Dhcp(_) | IpMode::Auto => {
            let candidates: Vec<String> = match &c.ip {
                IpMode::Dhcp(Some(d)) => vec![d.clone()],
                _ => ifaces,
            };
            let mut last = BootError::NoInterface("ip=dhcp");
            for i in candidates {
                match services::dhcp(&i) {
                    Ok(lease) => {
                        crate::net::configure(&lease.addr)?;
                        services::write_resolv_conf(&lease.dns);
                        if let Some(h) = &lease.hostname {
                            let _ = nix::unistd::sethostname(h);
                        }
                        log::info!("{i}: DHCP lease {}/{}", lease.addr.addr, lease.addr.prefix);
                        return Ok((lease.hostname, Some(lease.addr.addr)));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

/// Finds (formatting when asked and blank) and mounts the pool.
fn mount_pool(c: &Cmdline) -> Result<(), BootError> {
    let label = match &c.pool {
        PoolSource::Label(l) => Some(l.clone()),
        PoolSource::Device(_) => None,
    };
    let mut dev = match &c.pool {
        PoolSource::Device(d) => Some(PathBuf::from(d)),
        PoolSource::Label(l) => mounts::find_label(l),
    };
    // Devices may appear a moment after their driver loads.
    let deadline = Instant::now() + Duration::from_secs(5);
    while dev.as_ref().is_none_or(|d| !d.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        dev = match &c.pool {
            PoolSource::Device(d) => Some(PathBuf::from(d)),
            PoolSource::Label(l) => mounts::find_label(l),
        };
    }
    if dev.is_none() && c.pool_format.is_some() {
        // A blank disk to format: the first whole disk that is all zeros.
        dev = mounts::block_devices()
            .into_iter()
            .find(|d| mounts::is_blank(d));
    }
    let dev = dev.ok_or_else(|| match &label {
        Some(l) => BootError::NoPoolLabel(l.clone()),
        None => BootError::NoPoolDevice,
    })?;
    if c.pool_format.is_some() && mounts::is_blank(&dev) {
        let l = label.as_deref().unwrap_or("zones");
        console::say(&format!(
            "formatting blank pool disk {} as ext4 (label {l})",
            dev.display()
        ));
        mounts::format_ext4(&dev, l)?;
    }
    let how = mounts::mount_pool(&dev, POOL_MOUNT)?;
    console::say(&format!(
        "pool {} mounted at {POOL_MOUNT} ({how})",
        dev.display()
    ));
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Makes sure fds 0-2 are the console: the kernel only opens /dev/console for us
/// when the initramfs already had that node, and without it every line is lost.
fn attach_console() {
    use std::os::fd::AsRawFd;
    // /proc is mounted by now.
    if Path::new("/proc/self/fd/1").exists() {
        return;
    }
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard fds, which are closed (checked above);
            // `f` stays open until the copies exist.
            unsafe { libc::dup2(f.as_raw_fd(), fd) };
        }
    }
}

fn shutdown_and_reboot() -> ! {
    use nix::sys::signal::{kill, Signal};
    ssh::stop_restarting();
    // Instances are stopped; now everything else (bus, shells, stragglers).
    let all = nix::unistd::Pid::from_raw(-1);
    let _ = kill(all, Signal::SIGTERM);
    std::thread::sleep(Duration::from_secs(1));
    let _ = kill(all, Signal::SIGKILL);
    console::say("syncing and unmounting the pool");
    // The lines say what happened: end-to-end tests hold shutdown to them.
    match mounts::unmount_pool(POOL_MOUNT) {
        Ok(()) => console::say("pool unmounted"),
        Err(e) => console::say(&format!("pool not unmounted ({e}): detached")),
    }
    nix::unistd::sync();
    console::say("rebooting");
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    reap_forever();
}

/// The last resort: stay alive and reap.
fn reap_forever() -> ! {
    loop {
        match nix::sys::wait::wait() {
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}
