//! `zone`: the zone runtime's command line. `zone monitor` is what init spawns per
//! zone; `zone run` runs a throwaway zone in the foreground; `zone zlogin` (also run as
//! `zlogin`, a link to this binary) runs a command in a running zone.

#![forbid(unsafe_code)]

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "zone", version, about = "skerry zone runtime")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one throwaway zone in the foreground; exits with the command's status.
    Run(RunArgs),
    /// Run the zone described by init's config.json as its monitor.
    Monitor {
        /// `<pool>/<uuid>/config.json`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a command (or a login shell) in a running zone, like SmartOS's zlogin.
    Zlogin(ZloginArgs),
}

/// `zlogin` run under its own name.
#[derive(Parser)]
#[command(
    name = "zlogin",
    version,
    about = "Run a command (or a login shell) in a running zone"
)]
struct ZloginCli {
    #[command(flatten)]
    args: ZloginArgs,
}

/// `zlogin [-t|-T] NAME [CMD ARGS...]`.
#[derive(Args)]
struct ZloginArgs {
    /// Never give the command a pseudo-terminal, even when stdin is a terminal.
    #[arg(short = 'T', conflicts_with = "force_pty")]
    no_pty: bool,
    /// Always give the command a pseudo-terminal, even when stdin is not a terminal.
    #[arg(short = 't')]
    force_pty: bool,
    /// The pool holding the zones.
    #[arg(long, default_value = zone::zlogin::DEFAULT_POOL)]
    pool: PathBuf,
    /// The zone's name (or UUID).
    zone: String,
    /// The command and its arguments; none: root's login shell.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `zone run`'s arguments.
#[derive(Args)]
struct RunArgs {
    /// The image rootfs (left untouched: writes go to a temporary layer).
    #[arg(long)]
    rootfs: PathBuf,
    /// Hostname inside the zone (default: zone).
    #[arg(long)]
    hostname: Option<String>,
    /// Memory cap, e.g. 64M (K/M/G/T suffixes, powers of 1024).
    #[arg(long, value_parser = spec::format::parse_size)]
    memory: Option<u64>,
    /// Maximum number of tasks.
    #[arg(long)]
    pids: Option<u64>,
    /// CPU cap in percent of one CPU (0 = no cap).
    #[arg(long, default_value_t = 0)]
    cpu_cap: u32,
    /// Size of the temporary writable layer, e.g. 8M: writes past it fail (ENOSPC).
    #[arg(long, value_parser = spec::format::parse_size)]
    quota: Option<u64>,
    /// A nic on the bridge of TAG (sk-TAG): TAG=IP/PREFIX or TAG=dhcp; repeatable (net0, net1...).
    #[arg(long = "net", value_name = "TAG=IP/PREFIX")]
    nets: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn main() {
    if let Err(e) = zone::security::reexec_from_readonly_mount() {
        eprintln!("zone: {e}");
        std::process::exit(125);
    }
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some("zlogin".as_ref()) {
        zlogin(ZloginCli::parse().args);
    }
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Zlogin(args) => zlogin(args),
        Cmd::Run(args) => run(args),
        Cmd::Monitor { config } => zone::monitor::main(&config).context("zone monitor"),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("zone: {e:#}");
            std::process::exit(125);
        }
    }
}

fn run(a: RunArgs) -> anyhow::Result<i32> {
    let mut nics = Vec::new();
    for (i, n) in a.nets.iter().enumerate() {
        let nic = zone::run::parse_net(i, n).with_context(|| format!("--net {n}"))?;
        nics.push(nic);
    }
    if a.command.is_empty() {
        bail!("no command given: zone run --rootfs DIR -- CMD ARGS...");
    }
    let opts = zone::run::RunOptions {
        rootfs: a.rootfs,
        hostname: a.hostname,
        memory: a.memory,
        pids: a.pids,
        cpu_cap: a.cpu_cap,
        quota: a.quota,
        nics,
        command: a.command,
    };
    Ok(zone::run::run(&opts)?)
}

/// Runs zlogin and exits with the command's status, or 1 (127, 126) and a message in
/// SmartOS's words.
fn zlogin(a: ZloginArgs) -> ! {
    let pty = match (a.no_pty, a.force_pty) {
        (true, _) => zone::zlogin::PtyMode::Refuse,
        (_, true) => zone::zlogin::PtyMode::Force,
        _ => zone::zlogin::PtyMode::Auto,
    };
    let opts = zone::zlogin::Options {
        pool: a.pool,
        zone: a.zone,
        command: a.command,
        pty,
    };
    match zone::zlogin::run(&opts) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("zlogin: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
