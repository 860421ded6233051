//! The node daemon proper, shared by host mode and PID 1: open the pool, re-adopt,
//! serve the API, reconcile, then supervise until asked to shut down.

use crate::console;
use crate::import_child::ChildImports;
use crate::manifests::SpecManifests;
use crate::monitor::MonitorRuntime;
use crate::node::{Node, NodeOptions};
use crate::node_config::NodeConfig;
use crate::pool::Pool;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What the daemon needs to know.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The pool root.
    pub pool: PathBuf,
    /// Sockets and pidfiles of monitors.
    pub run_dir: PathBuf,
    /// Bus address; `None` = the system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured).
    pub bus_address: Option<String>,
    /// The `zone` binary.
    pub zone_bin: PathBuf,
    /// The `vmm` binary.
    pub vmm_bin: PathBuf,
    /// The `imgadm` binary image imports run in.
    pub imgadm_bin: PathBuf,
    /// The `skerry-metrics` binary, started when node.kdl has `metrics listen=...`.
    pub metrics_bin: PathBuf,
    /// Extra image sources (`skerry.sources=`, `--sources`).
    pub sources: Vec<String>,
    /// Without the bus the node still runs (PID 1), or it is fatal (host mode).
    pub bus_required: bool,
    /// Grace period for stopping instances at shutdown.
    pub stop_timeout: Duration,
    /// Apply node.kdl's hostname to the machine (PID 1 only: never rename a host).
    pub set_hostname: bool,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The pool could not be opened.
    #[error("pool: {0}")]
    Pool(#[from] crate::pool::PoolError),
    /// The image store could not be opened.
    #[error("image store: {0}")]
    Images(String),
    /// node.kdl is invalid.
    #[error(transparent)]
    Config(#[from] crate::node_config::NodeConfigError),
    /// The bus could not be reached or the name not owned.
    #[error("D-Bus: {0}; is a bus running (DBUS_SYSTEM_BUS_ADDRESS) and may root own {name}?", name = spec::api::BUS_NAME)]
    Bus(zbus::Error),
}

/// Where a sibling binary is: the flag, the environment, else beside this executable.
pub fn sibling_binary(flag: Option<PathBuf>, env: &str, name: &str) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A running node daemon.
pub struct Daemon {
    /// The node.
    pub node: Arc<Node>,
    /// Notified by `Shutdown()` (and by signal handlers).
    pub shutdown: Arc<Notify>,
    /// The bus connection, while it lives.
    pub bus: Option<zbus::Connection>,
    /// Grace period for stopping instances at shutdown.
    pub stop_timeout: Duration,
}

/// Work the boot reconcile must wait for (PID 1: the kernel modules instances need,
/// still loading); returns the phases it adds to the timeline.
pub type BeforeReconcile = Box<dyn FnOnce() -> Vec<(String, Duration)> + Send>;

/// Starts the daemon: pool, re-adoption, API, boot reconcile. `timeline` phases are
/// recorded in the node's timeline after `earlier` (PID 1's boot phases).
pub async fn start(
    opts: &DaemonOptions,
    earlier: Vec<(String, Duration)>,
) -> Result<Daemon, DaemonError> {
    start_with(opts, earlier, None).await
}

/// [`start`], running `before_reconcile` (on a blocking thread) after the API is up
/// and before the boot reconcile.
pub async fn start_with(
    opts: &DaemonOptions,
    earlier: Vec<(String, Duration)>,
    before_reconcile: Option<BeforeReconcile>,
) -> Result<Daemon, DaemonError> {
    let t0 = Instant::now();
    let pool = Pool::open(&opts.pool)?;
    let node_cfg =
        NodeConfig::load(&pool.config_dir().join("node.kdl")).map_err(DaemonError::Config)?;
    if let (true, Some(h)) = (opts.set_hostname, &node_cfg.hostname) {
        match nix::unistd::sethostname(h) {
            Ok(()) => log::info!("hostname {h} (node.kdl)"),
            Err(e) => log::error!("hostname {h}: {e}"),
        }
    }
    let metrics_listen = node_cfg.metrics;
    let mut sources = opts.sources.clone();
    sources.extend(node_cfg.sources.iter().cloned());
    // init only reads the store: imports run in imgadm children (import_child.rs).
    let store = imgadm::ImageStore::open_with_sources(pool.root(), &sources)
        .map_err(|e| DaemonError::Images(e.to_string()))?
        .without_progress();
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| {
        DaemonError::Pool(crate::pool::PoolError::Io {
            path: opts.run_dir.clone(),
            source: e,
        })
    })?;
    let concurrency = node_cfg.concurrency;
    let zone_quota = node_cfg.zone_quota;
    let import_limits = crate::import_child::ChildLimits {
        memory: node_cfg
            .import_memory
            .unwrap_or(crate::import_child::ChildLimits::default().memory),
        ..Default::default()
    };
    let runtime = MonitorRuntime::new(
        pool.clone(),
        opts.run_dir.clone(),
        opts.zone_bin.clone(),
        opts.vmm_bin.clone(),
        node_cfg,
    );
    let node = Node::new(
        pool,
        Arc::new(runtime),
        Arc::new(
            ChildImports::new(store, opts.imgadm_bin.clone(), sources).with_limits(import_limits),
        ),
        Arc::new(SpecManifests::new()),
        NodeOptions {
            stop_timeout: opts.stop_timeout,
            concurrency,
            zone_quota,
            ..NodeOptions::default()
        },
    );
    for (name, d) in earlier {
        node.timeline().insert(&name, d);
    }
    node.timeline().record("open-pool", t0.elapsed());

    // First start since the run dir was created (a node boot): autoboot decides what
    // runs. A restarted init keeps what was running.
    let boot = first_start(&opts.run_dir);
    let n = Arc::clone(&node);
    let t = Instant::now();
    let _ = tokio::task::spawn_blocking(move || n.load(boot)).await;
    node.timeline().record("adopt", t.elapsed());
    log::info!(
        "{} instances in the pool, {} monitors re-adopted ({})",
        node.list().len(),
        node.running_count(),
        if boot { "boot" } else { "init restart" }
    );

    let shutdown = Arc::new(Notify::new());
    let t = Instant::now();
    let bus = match crate::dbus::serve(
        Arc::clone(&node),
        Arc::clone(&shutdown),
        opts.bus_address.as_deref(),
    )
    .await
    {
        Ok(c) => Some(c),
        Err(e) if opts.bus_required => return Err(DaemonError::Bus(e)),
        Err(e) => {
            log::error!("{}; the node runs without its API", DaemonError::Bus(e));
            None
        }
    };
    node.timeline().record("api", t.elapsed());
    // After the API: the server's first scrape finds init answering.
    if let Some(listen) = metrics_listen {
        crate::metrics::supervise(opts.metrics_bin.clone(), listen);
    }

    if let Some(wait) = before_reconcile {
        let phases = tokio::task::spawn_blocking(wait).await.unwrap_or_default();
        for (name, d) in phases {
            node.timeline().record(&name, d);
        }
    }
    let n = Arc::clone(&node);
    let t = Instant::now();
    let _ = tokio::task::spawn_blocking(move || n.boot_reconcile()).await;
    node.timeline().record("reconcile", t.elapsed());
    console::node_ready(node.running_count());
    Ok(Daemon {
        node,
        shutdown,
        bus,
        stop_timeout: opts.stop_timeout,
    })
}

impl Daemon {
    /// Waits for SIGTERM, SIGINT or `Shutdown()`, then stops every instance.
    pub async fn run_until_shutdown(self) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        let why = tokio::select! {
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => "SIGTERM",
            _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => "SIGINT",
            _ = self.shutdown.notified() => "Shutdown()",
        };
        console::say(&format!("shutting down ({why}): stopping instances"));
        let node = Arc::clone(&self.node);
        let timeout = self.stop_timeout;
        // The line says what happened: end-to-end tests hold shutdown to it.
        match tokio::task::spawn_blocking(move || node.stop_all(timeout)).await {
            Ok(left) if left.is_empty() => console::say("all instances stopped"),
            Ok(left) => console::say(&format!(
                "shutdown: still running after the grace period: {}",
                left.join(", ")
            )),
            Err(e) => console::say(&format!("shutdown: stopping instances failed: {e}")),
        }
        drop(self.bus);
    }
}

fn first_start(run_dir: &Path) -> bool {
    let marker = run_dir.join("init.started");
    if marker.exists() {
        return false;
    }
    let _ = std::fs::write(&marker, format!("{}\n", std::process::id()));
    true
}
