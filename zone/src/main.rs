//! `zone`: the zone runtime's command line. `zone monitor` is what init spawns per
//! zone; `zone run` runs a throwaway zone in the foreground.

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
    let cli = Cli::parse();
    let code = match cli.cmd {
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
