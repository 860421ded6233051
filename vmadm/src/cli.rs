//! The command line, SmartOS `vmadm` style. The clap definition here is also the source
//! of the shell completions and the man page.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Manage the instances (zones and HVM guests) of a skerry node.
#[derive(Debug, Parser)]
#[command(
    name = "vmadm",
    version,
    about = "Manage the instances (zones and HVM guests) of a skerry node",
    long_about = "Manage the instances (zones and HVM guests) of a skerry node.\n\n\
        vmadm talks to init over D-Bus (org.skerry.Node1 on the system bus; \
        DBUS_SYSTEM_BUS_ADDRESS selects another bus). Instances are named by name \
        or UUID. Exit status: 0 success, 1 error, 2 usage error.",
    after_help = "Filters: FIELD=VALUE matches the whole value, FIELD=~REGEX matches \
        anywhere. Fields: uuid, alias, type, state, image, ram, autoboot, pid, reason, and \
        spec fields (cpu_cap, max_lwps, vcpus, hostname, nics.0.ip, metadata.KEY, ...)."
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Table output flags shared with imgadm.
#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    /// Parsable output: `:`-separated fields, no header.
    #[arg(short = 'p')]
    pub parsable: bool,
    /// Do not print the header.
    #[arg(short = 'H')]
    pub no_header: bool,
    /// Output these fields (comma-separated).
    #[arg(short = 'o', value_name = "FIELD,...", value_delimiter = ',')]
    pub fields: Vec<String>,
    /// JSON output.
    #[arg(short = 'j', conflicts_with = "parsable")]
    pub json: bool,
}

/// vmadm's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List instances (default columns uuid,type,ram,state,alias; sorted by ram,uuid).
    List {
        /// Output flags.
        #[command(flatten)]
        table: TableArgs,
        /// Sort by these fields (comma-separated; `-field` for descending).
        #[arg(short = 's', value_name = "FIELD,...", allow_hyphen_values = true)]
        sort: Vec<String>,
        /// FIELD=VALUE or FIELD=~REGEX filters; all must match.
        #[arg(value_name = "FILTER")]
        filters: Vec<String>,
    },
    /// Print one instance as JSON.
    Get {
        /// Name or UUID.
        id: String,
    },
    /// Print the UUIDs of the instances matching the filters.
    Lookup {
        /// Print the matching instances as a JSON array of objects.
        #[arg(short = 'j')]
        json: bool,
        /// Exactly one instance must match (an error otherwise).
        #[arg(short = '1')]
        one: bool,
        /// With -j, only these fields (comma-separated).
        #[arg(short = 'o', value_name = "FIELD,...", value_delimiter = ',')]
        fields: Vec<String>,
        /// FIELD=VALUE or FIELD=~REGEX filters; all must match.
        #[arg(value_name = "FILTER")]
        filters: Vec<String>,
    },
    /// Create instances from a KDL manifest or a SmartOS JSON payload (stdin without -f).
    Create {
        /// The manifest or payload file.
        #[arg(short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Change properties: from a JSON object (-f FILE, or stdin) or KEY=VALUE arguments.
    ///
    /// A running zone takes its memory (ram, max_physical_memory), cpu_cap, max_lwps,
    /// quota and nics (add_nics, remove_nics, update_nics) at once, without a restart;
    /// so does an HVM's cpu_cap, and customer metadata on both. An HVM's memory, vCPUs,
    /// nics and disks, and a zone's hostname and resolvers, apply at the next restart:
    /// the answer names them and says so. A bad key or value, or a value the running
    /// instance cannot take (a memory cap under what the zone uses now), fails with
    /// "Failed to update VM NAME: ..." and exit status 1, and changes nothing.
    Update {
        /// Name or UUID.
        id: String,
        /// A JSON object of properties.
        #[arg(short = 'f', value_name = "FILE", conflicts_with = "properties")]
        file: Option<PathBuf>,
        /// KEY=VALUE properties (SmartOS names: ram, cpu_cap, max_lwps, quota, autoboot,
        /// add_nics='[...]', remove_nics='["net1"]', ...).
        #[arg(value_name = "KEY=VALUE")]
        properties: Vec<String>,
    },
    /// Delete an instance and its data.
    Delete {
        /// Name or UUID.
        id: String,
    },
    /// Start an instance.
    Start {
        /// Name or UUID.
        id: String,
    },
    /// Stop an instance.
    Stop {
        /// Name or UUID.
        id: String,
        /// Kill at once instead of asking it to shut down.
        #[arg(short = 'F')]
        force: bool,
        /// Seconds to wait for a clean shutdown before killing (default: init's grace
        /// period).
        #[arg(short = 't', value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
        timeout: Option<u32>,
    },
    /// Reboot an instance.
    Reboot {
        /// Name or UUID.
        id: String,
        /// Kill at once instead of asking it to reboot.
        #[arg(short = 'F')]
        force: bool,
    },
    /// Attach to an instance's console (the zone's pty or the guest's serial).
    /// Ctrl-] detaches.
    Console {
        /// Name or UUID.
        id: String,
    },
    /// Print monitor/VMM details (pid, uptime, limits, devices) and usage as JSON.
    Info {
        /// Name or UUID.
        id: String,
    },
    /// What instances use: memory, CPU, tasks, disk, network (default columns
    /// uuid,type,alias,mem,mem_cap,cpu,time,nproc,disk,quota,rx_bytes,tx_bytes; sizes
    /// in MiB, time in CPU seconds, cpu in percent of one CPU over the interval).
    Stats {
        /// Output flags.
        #[command(flatten)]
        table: TableArgs,
        /// Seconds between the two samples CPU % is measured over (0: no CPU %).
        #[arg(short = 'i', value_name = "SECS", default_value_t = 1.0,
              value_parser = parse_interval)]
        interval: f64,
        /// Only this instance (name or UUID).
        id: Option<String>,
    },
    /// Print the node's boot timeline: each phase and how long it took.
    Timeline {
        /// Output flags.
        #[command(flatten)]
        table: TableArgs,
    },
    /// Stream instance state changes until interrupted.
    Events {
        /// Full output: timestamps with milliseconds, full UUIDs and reasons.
        #[arg(short = 'f')]
        full: bool,
        /// One JSON object per line.
        #[arg(short = 'j')]
        json: bool,
        /// Print a "ready" event once the stream is listening.
        #[arg(short = 'r')]
        ready: bool,
        /// Only this instance (name or UUID).
        id: Option<String>,
    },
    /// Ask init to reconcile now and print the plan it applied.
    Reconcile {
        /// Output flags.
        #[command(flatten)]
        table: TableArgs,
    },
    /// Validate a manifest or SmartOS payload offline (`vmadm validate create -f FILE`).
    Validate {
        /// Arguments of the validator, passed untouched.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// A `-i` value that is not a sampling interval.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a number of seconds from 0 to 60")]
struct BadInterval(String);

/// A sampling interval: 0 to 60 seconds.
fn parse_interval(s: &str) -> Result<f64, BadInterval> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=60.0).contains(&v) => Ok(v),
        _ => Err(BadInterval(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("vmadm").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn smartos_forms_parse() {
        match parse(&[
            "list",
            "-p",
            "-o",
            "uuid,alias",
            "-s",
            "-ram",
            "state=running",
        ]) {
            Command::List {
                table,
                sort,
                filters,
            } => {
                assert!(table.parsable);
                assert_eq!(table.fields, ["uuid", "alias"]);
                assert_eq!(sort, ["-ram"]);
                assert_eq!(filters, ["state=running"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["stop", "web01", "-F", "-t", "5"]) {
            Command::Stop { id, force, timeout } => {
                assert_eq!((id.as_str(), force, timeout), ("web01", true, Some(5)));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["lookup", "-1", "-j", "alias=web01"]) {
            Command::Lookup { json, one, .. } => assert!(json && one),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            &["stop"][..],
            &["list", "-p", "-j"],
            &["stop", "web01", "-t", "0"],
            &["update", "web01", "-f", "x.json", "ram=1"],
            &["frobnicate"],
            &["stats", "-i", "-1"],
            &["stats", "-i", "soon"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("vmadm").chain(bad.iter().copied()))
                .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
