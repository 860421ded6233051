//! skerry init: PID 1 on a node (when its pid is 1), the node daemon elsewhere.

#![forbid(unsafe_code)]

use clap::Parser;
use skerry_init::daemon::{self, DaemonOptions};
use std::path::PathBuf;
use std::time::Duration;

/// skerry's node daemon. As PID 1 it boots the node; otherwise (host mode) it runs the
/// same reconcile, supervisor and D-Bus API over --pool.
#[derive(Parser, Debug)]
#[command(name = "init", version)]
struct Args {
    /// The pool directory (host mode; a node mounts its pool at /zones).
    #[arg(long)]
    pool: Option<PathBuf>,
    /// Where monitor sockets and pidfiles live.
    #[arg(long, default_value = monitor::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// D-Bus address to serve on (default: the system bus; DBUS_SYSTEM_BUS_ADDRESS).
    #[arg(long)]
    bus_address: Option<String>,
    /// The `zone` binary (default: $SKERRY_ZONE_BIN, else beside init).
    #[arg(long)]
    zone_bin: Option<PathBuf>,
    /// The `vmm` binary (default: $SKERRY_VMM_BIN, else beside init).
    #[arg(long)]
    vmm_bin: Option<PathBuf>,
    /// The `imgadm` binary image imports run in (default: $SKERRY_IMGADM_BIN, else
    /// beside init).
    #[arg(long)]
    imgadm_bin: Option<PathBuf>,
    /// The `skerry-metrics` binary (default: $SKERRY_METRICS_BIN, else beside init).
    #[arg(long)]
    metrics_bin: Option<PathBuf>,
    /// Extra image source URLs, comma separated.
    #[arg(long, value_delimiter = ',', env = "SKERRY_SOURCES")]
    sources: Vec<String>,
    /// Grace period, in seconds, for stopping instances at shutdown.
    #[arg(long, default_value_t = 10)]
    stop_timeout: u64,
}

fn main() {
    if std::process::id() == 1 {
        skerry_init::pid1::main();
    }
    skerry_init::console::init_logging();
    let args = Args::parse();
    let Some(pool) = args.pool else {
        eprintln!("init: not PID 1, so --pool DIR is required (host mode)");
        std::process::exit(2);
    };
    let opts = DaemonOptions {
        pool,
        run_dir: args.run_dir,
        bus_address: args.bus_address,
        zone_bin: daemon::sibling_binary(args.zone_bin, "SKERRY_ZONE_BIN", "zone"),
        vmm_bin: daemon::sibling_binary(args.vmm_bin, "SKERRY_VMM_BIN", "vmm"),
        imgadm_bin: daemon::sibling_binary(args.imgadm_bin, "SKERRY_IMGADM_BIN", "imgadm"),
        metrics_bin: daemon::sibling_binary(
            args.metrics_bin,
            "SKERRY_METRICS_BIN",
            "skerry-metrics",
        ),
        sources: args.sources,
        bus_required: true,
        stop_timeout: Duration::from_secs(args.stop_timeout),
        set_hostname: false,
    };
    if let Err(e) = run(opts) {
        eprintln!("init: {e:#}");
        std::process::exit(1);
    }
}

fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let d = daemon::start(&opts, Vec::new()).await?;
        d.run_until_shutdown().await;
        Ok(())
    })
}
