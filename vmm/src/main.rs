//! `vmm`: boot one guest in the foreground, or be the monitor of an HVM instance for
//! init (`vmm monitor`).

#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vmm::config::{self, NetConfig, VmConfig};
use vmm::devices::legacy::serial::{BoundedLog, Tee};
use vmm::devices::GuestExit;
use vmm::runner::{self, Console, StopPolicy};

/// Boot one KVM guest with its serial console on stdio; exits 0 when the guest powers
/// off or resets.
#[derive(Parser, Debug)]
#[command(name = "vmm", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// The guest as a JSON `VmConfig` (what `vmm monitor` writes for its child),
    /// instead of --kernel, --initrd, --cmdline, --memory, --vcpus, --disk and --net.
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "cmdline", "memory", "vcpus", "disk", "net"])]
    config_file: Option<PathBuf>,
    /// Kernel: bzImage or ELF vmlinux.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = config::DEFAULT_CMDLINE)]
    cmdline: String,
    /// Guest memory (K/M/G suffixes).
    #[arg(long, default_value = "256M")]
    memory: String,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// A virtio-blk disk: PATH[,ro]. Repeatable; the first is /dev/vda.
    #[arg(long)]
    disk: Vec<String>,
    /// A virtio-net interface: TAP[,bridge=BR][,mac=aa:bb:cc:dd:ee:ff]. The tap is
    /// created if missing; with bridge=, it is plugged into BR (created if missing).
    #[arg(long)]
    net: Vec<String>,
    /// Seconds a guest gets to power off after SIGTERM before it is stopped.
    #[arg(long, default_value_t = 30)]
    stop_timeout: u64,
    /// Exit code when the guest resets (monitor mode uses 3 to restart it).
    #[arg(long, default_value_t = 0)]
    reset_exit_code: i32,
    /// Run jailed: new PID, network, user and mount namespaces with an empty root,
    /// unprivileged ids, seccomp filters (see the `jail` module).
    #[arg(long)]
    jail: bool,
    /// User the jailed VMM runs as.
    #[arg(long, default_value_t = 65534)]
    jail_uid: u32,
    /// Group the jailed VMM runs as.
    #[arg(long, default_value_t = 65534)]
    jail_gid: u32,
    /// Put the VMM in cgroup `skerry/NAME`, limited to guest memory plus overhead and
    /// to a few tasks beyond one per vCPU and nic (the caller removes it afterwards).
    #[arg(long)]
    cgroup: Option<String>,
    /// With --cgroup: cap the VMM's CPU time at this percent of one CPU (0: no cap).
    #[arg(long, default_value_t = 0)]
    cpu_cap: u32,
    /// Also keep the console in this bounded log; stdout then never stalls the guest
    /// (output nobody reads is dropped there).
    #[arg(long)]
    console_log: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run an HVM instance for init, as its monitor (contract: the `monitor` crate).
    Monitor {
        /// `<pool>/<uuid>/config.json`.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() {
    let started = Instant::now();
    runner::block_stop_signals();
    vmm::logger::init();
    match real_main(started) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("vmm: {}", error_chain(&e));
            std::process::exit(1);
        }
    }
}

/// The error and its causes, each cause once: our typed errors already print their
/// source in their own message.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !out.ends_with(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
    }
    out
}

fn parse_net(s: &str) -> Result<NetConfig> {
    let mut parts = s.split(',');
    let tap = parts.next().unwrap_or_default().to_owned();
    if tap.is_empty() {
        bail!("--net {s:?}: missing tap name");
    }
    let mut net = NetConfig {
        vlan: 0,
        mac: config::mac_from(&tap),
        tap,
        bridge: None,
        tap_fd: None,
    };
    for opt in parts {
        match opt.split_once('=') {
            Some(("bridge", b)) => net.bridge = Some(b.to_owned()),
            Some(("mac", m)) => net.mac = config::parse_mac(m)?,
            _ => bail!("--net {s:?}: unknown option {opt:?} (bridge=, mac=)"),
        }
    }
    Ok(net)
}

fn real_main(started: Instant) -> Result<i32> {
    let cli = Cli::parse();
    if let Some(Cmd::Monitor { config }) = &cli.command {
        return Ok(vmm::monitor::main(config)?);
    }
    let cfg = match &cli.config_file {
        Some(path) => VmConfig::from_json_file(path)?,
        None => config_from_args(&cli)?,
    };
    if let Some(name) = &cli.cgroup {
        let limits = vmm::jail::vmm_limits(cfg.memory, cfg.vcpus, cfg.nets.len(), cli.cpu_cap);
        let devices = vmm::jail::device_rules(cfg.disks.iter().map(|d| d.path.as_path()));
        vmm::jail::enter_cgroup(name, &limits, &devices)?;
    }
    if cli.jail {
        // Still single-threaded here, as the fork requires.
        vmm::jail::enter_pid_namespace()?;
    }
    let input: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let output: Box<dyn Write + Send> = match &cli.console_log {
        Some(path) => {
            let log = BoundedLog::open(path.clone(), vmm::monitor::CONSOLE_LOG_MAX)
                .with_context(|| format!("opening console log {}", path.display()))?;
            let stdout: OwnedFd = std::io::stdout().as_fd().try_clone_to_owned()?;
            set_nonblocking(&stdout)?;
            Box::new(Tee(vec![
                Box::new(std::fs::File::from(stdout)),
                Box::new(log),
            ]))
        }
        None => Box::new(std::io::stdout()),
    };
    let console = Console {
        output,
        input: Some(input),
    };
    let policy = StopPolicy {
        grace: Duration::from_secs(cli.stop_timeout),
    };
    let jail = cli.jail.then_some(runner::JailOptions {
        uid: cli.jail_uid,
        gid: cli.jail_gid,
    });
    let why = runner::run(&cfg, console, policy, jail, started)?;
    Ok(match why {
        GuestExit::PowerOff | GuestExit::Stopped => {
            eprintln!("vmm: guest {why:?}");
            0
        }
        GuestExit::Reset => {
            eprintln!("vmm: guest reset");
            cli.reset_exit_code
        }
        GuestExit::Crash(reason) => {
            eprintln!("vmm: guest crashed: {reason}");
            1
        }
    })
}

/// The guest described by the human command line (`--kernel`, `--memory`, ...).
fn config_from_args(cli: &Cli) -> Result<VmConfig> {
    let Some(kernel) = cli.kernel.clone() else {
        bail!("--kernel is required (or --config-file FILE, or `vmm monitor --config FILE`)");
    };
    let memory = config::parse_size(&cli.memory).context("--memory")?;
    let disks = cli
        .disk
        .iter()
        .map(|d| config::parse_disk(d))
        .collect::<Result<Vec<_>, _>>()
        .context("--disk")?;
    let nets = cli
        .net
        .iter()
        .map(|n| parse_net(n))
        .collect::<Result<Vec<_>>>()?;
    Ok(VmConfig {
        kernel,
        initrd: cli.initrd.clone(),
        cmdline: cli.cmdline.clone(),
        memory,
        vcpus: cli.vcpus,
        disks,
        nets,
        uuid: None,
        com2_fd: None,
    })
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
