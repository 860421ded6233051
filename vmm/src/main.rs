//! `vmm`: boot one guest in the foreground, or run an instance for init.
use anyhow::{Context, Result};
use clap::Parser;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vmm::config::{self, VmConfig};
use vmm::devices::GuestExit;
use vmm::runner::{self, Console, StopPolicy};

/// Boot one KVM guest with its serial console on stdio; exits 0 when the guest powers
/// off or resets.
#[derive(Parser, Debug)]
#[command(name = "vmm", version)]
struct Cli {
    /// Kernel: bzImage or ELF vmlinux.
    #[arg(long)]
    kernel: PathBuf,
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
    /// A virtio-blk disk: PATH[,ro]. Repeatable.
    #[arg(long)]
    disk: Vec<String>,
    /// A virtio-net interface on this tap device. Repeatable.
    #[arg(long)]
    net: Vec<String>,
    /// Seconds a guest gets to power off after SIGTERM before it is stopped.
    #[arg(long, default_value_t = 30)]
    stop_timeout: u64,
    /// Exit code when the guest resets (instance mode uses 3 to restart it).
    #[arg(long, default_value_t = 0)]
    reset_exit_code: i32,
}

fn main() {
    let started = Instant::now();
    runner::block_stop_signals();
    match real_main(started) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("vmm: {e:#}");
            std::process::exit(1);
        }
    }
}

fn real_main(started: Instant) -> Result<i32> {
    let cli = Cli::parse();
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
        .map(|t| config::NetConfig {
            tap: t.clone(),
            mac: config::mac_from(t),
        })
        .collect();
    let cfg = VmConfig {
        kernel: cli.kernel,
        initrd: cli.initrd,
        cmdline: cli.cmdline,
        memory,
        vcpus: cli.vcpus,
        disks,
        nets,
    };
    let input: OwnedFd = std::io::stdin().as_fd_owned()?;
    let console = Console {
        output: Box::new(std::io::stdout()),
        input: Some(input),
    };
    let policy = StopPolicy {
        grace: Duration::from_secs(cli.stop_timeout),
    };
    let why = runner::run(&cfg, console, policy, started)?;
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

trait AsFdOwned {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd>;
}

impl AsFdOwned for std::io::Stdin {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}
