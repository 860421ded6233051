//! The node: the instance table, the reconciler that drives it, and the supervisor
//! that keeps one monitor per running instance.
//!
//! The core is synchronous (it talks to sockets, files and processes); async callers
//! (the D-Bus API, monitor watchers) reach it through `spawn_blocking`. Two locks:
//! `ops` serialises whole operations (reconcile, start, stop, ...), `table` guards the
//! in-memory records and is only ever held for a moment, so List/Get never wait for a
//! slow stop.

mod apply;
mod lifecycle;
mod ops;
mod reconcile;
mod usage;

use crate::concurrency::{Concurrency, Limits};
use crate::console::{self, Timeline};
use crate::images::SharedImports;
use crate::manifests::Manifests;
use crate::pool::{InstanceRecord, Pool};
use crate::runtime::{Images, Runtime};
use spec::State;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

pub use ops::NodeError;

/// How many locks state.json writes are spread over (see `Node::saves`).
const SAVE_STRIPES: usize = 64;

/// The stripe of `uuid`'s record.
fn stripe_of(uuid: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uuid.hash(&mut h);
    (h.finish() % SAVE_STRIPES as u64) as usize
}

/// A state change, as `InstanceChanged` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Instance name.
    pub name: String,
    /// Instance UUID.
    pub uuid: String,
    /// `zone` or `hvm`.
    pub kind: String,
    /// New state; `None` when the instance was deleted.
    pub state: Option<State>,
    /// Why.
    pub reason: String,
}

impl Change {
    /// The state as `InstanceChanged` names it: a [`State`], or `deleted`.
    pub fn state_name(&self) -> &'static str {
        self.state.map_or("deleted", State::as_str)
    }
}

/// Restart policy for monitors that die while their instance is wanted running.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// First delay; doubled after each quick failure.
    pub initial_backoff: Duration,
    /// Largest delay.
    pub max_backoff: Duration,
    /// Consecutive quick failures after which the instance is left `failed`.
    pub max_failures: u32,
    /// A monitor that ran at least this long resets the failure count.
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_failures: 5,
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// Node tunables.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Grace period for stops init initiates (reconcile, shutdown).
    pub stop_timeout: Duration,
    /// How long a new monitor has to report `running`.
    pub start_timeout: Duration,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// How many imports, disk preparations and starts run at once.
    pub concurrency: Concurrency,
    /// The node's default zone quota (node.kdl `zone-quota`), which admission counts
    /// for a zone that sets none.
    pub zone_quota: Option<u64>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            stop_timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(20),
            restart: RestartPolicy::default(),
            concurrency: Concurrency::default(),
            zone_quota: None,
        }
    }
}

/// One instance in memory: its record plus what only a live init knows.
#[derive(Debug, Clone)]
struct Entry {
    rec: InstanceRecord,
    /// Live monitor pid, 0 when none.
    pid: u32,
    /// Quick failures in a row.
    failures: u32,
    /// When the current monitor started.
    started: Option<Instant>,
    /// Bumped by every explicit operation, so a pending crash restart scheduled
    /// before it is dropped.
    generation: u64,
}

/// The node.
pub struct Node {
    pool: Pool,
    runtime: Arc<dyn Runtime>,
    /// The images, imports shared and bounded (`opts.concurrency.imports`).
    images: SharedImports,
    /// Disk preparation and start slots.
    limits: Limits,
    manifests: Arc<dyn Manifests>,
    opts: NodeOptions,
    table: Mutex<BTreeMap<String, Entry>>,
    ops: Mutex<()>,
    /// Serialises the state.json writes of one record, so an older snapshot never
    /// lands after a newer one. Striped by UUID: records of different instances are
    /// written (and fsync'd, ~10 ms each on a VM disk) at the same time, which is what
    /// lets a node start hundreds of instances at once.
    saves: Vec<Mutex<()>>,
    events: broadcast::Sender<Change>,
    timeline: Arc<Timeline>,
    rt: tokio::runtime::Handle,
}

impl Node {
    /// A node over `pool`. Must be called inside a tokio runtime (watchers and
    /// restart timers are spawned on it).
    pub fn new(
        pool: Pool,
        runtime: Arc<dyn Runtime>,
        images: Arc<dyn Images>,
        manifests: Arc<dyn Manifests>,
        opts: NodeOptions,
    ) -> Arc<Node> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Node {
            pool,
            runtime,
            images: SharedImports::new(images, opts.concurrency.imports),
            limits: Limits::new(opts.concurrency),
            manifests,
            opts,
            table: Mutex::new(BTreeMap::new()),
            ops: Mutex::new(()),
            saves: (0..SAVE_STRIPES).map(|_| Mutex::new(())).collect(),
            events,
            timeline: Arc::default(),
            rt: tokio::runtime::Handle::current(),
        })
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The boot timeline.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// State changes, for the D-Bus signal.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.events.subscribe()
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_ops(&self) -> MutexGuard<'_, ()> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of instances with a live monitor.
    pub fn running_count(&self) -> usize {
        self.table().values().filter(|e| e.pid != 0).count()
    }

    /// Loads the pool's records and re-adopts live monitors. On a fresh `boot`, the
    /// wish to run follows each instance's autoboot; after an init restart it stays
    /// what it was.
    pub fn load(self: &Arc<Self>, boot: bool) {
        let (recs, errs) = self.pool.load_all();
        for e in errs {
            log::error!("{e}; that instance is ignored until the file is fixed");
        }
        for mut rec in recs {
            let pid = self.runtime.find_running(&rec.uuid).unwrap_or(0);
            if boot {
                rec.want_running = rec.spec.autoboot;
            }
            let was = rec.state;
            if pid != 0 {
                log::info!("re-adopted monitor {pid} of {}", rec.name);
                rec.state = State::Running;
            } else if was == State::Running || was == State::Provisioning || was == State::Stopping
            {
                rec.state = State::Stopped;
                rec.reason = "its monitor was gone when init started".into();
            }
            let uuid = rec.uuid.clone();
            let changed = rec.state != was;
            if changed {
                if let Err(e) = self.pool.save(&rec) {
                    log::error!("{e}");
                }
            }
            self.table().insert(
                uuid.clone(),
                Entry {
                    rec,
                    pid,
                    failures: 0,
                    started: (pid != 0).then(Instant::now),
                    generation: 0,
                },
            );
            if pid != 0 {
                self.watch(&uuid, pid);
            }
        }
    }

    /// Sets an instance's state and reason, persists it, prints the console line and
    /// announces the change.
    fn set_state(&self, uuid: &str, state: State, reason: &str) {
        let rec = {
            let mut t = self.table();
            let Some(e) = t.get_mut(uuid) else { return };
            if e.rec.state == state && e.rec.reason == reason {
                return;
            }
            e.rec.state = state;
            e.rec.reason = reason.to_string();
            e.rec.clone()
        };
        if self.persist(&rec) {
            self.announce(
                &rec.name,
                &rec.uuid,
                rec.spec.kind.as_str(),
                Some(state),
                reason,
            );
        }
    }

    /// Prints the console line of a change and sends it to subscribers; `state` is
    /// `None` for a deleted instance.
    fn announce(&self, name: &str, uuid: &str, kind: &str, state: Option<State>, reason: &str) {
        let change = Change {
            name: name.into(),
            uuid: uuid.into(),
            kind: kind.into(),
            state,
            reason: reason.into(),
        };
        console::instance_line(name, kind, change.state_name(), reason);
        let _ = self.events.send(change);
    }

    /// Writes the table's latest version of `rec`; false (and the instance marked
    /// failed, see [`Node::mark_unsaved`]) when that failed.
    fn persist(&self, rec: &InstanceRecord) -> bool {
        let stripe = &self.saves[stripe_of(&rec.uuid)];
        let _one_writer = stripe.lock().unwrap_or_else(|p| p.into_inner());
        // The table may have moved on while we waited: write its latest version, so
        // an older snapshot never lands after a newer one.
        let latest = self.table().get(&rec.uuid).map(|e| e.rec.clone());
        let rec = latest.as_ref().unwrap_or(rec);
        match self.pool.save(rec) {
            Ok(()) => true,
            Err(e) => {
                log::error!("saving state of {}: {e}", rec.name);
                self.mark_unsaved(rec, &e);
                false
            }
        }
    }

    /// A state that could not be written (a full pool, a read-only one) would be
    /// lost at the next boot without a word: the instance shows `failed` with the
    /// reason instead, on the console and in `vmadm list`, until a later write
    /// succeeds. Not persisted itself: that is what just failed.
    fn mark_unsaved(&self, unsaved: &InstanceRecord, error: &crate::pool::PoolError) {
        let reason = format!("{}, but its state was not saved: {error}", unsaved.state);
        let rec = {
            let mut t = self.table();
            let Some(e) = t.get_mut(&unsaved.uuid) else {
                return;
            };
            if e.rec.state == State::Failed && e.rec.reason == reason {
                return;
            }
            e.rec.state = State::Failed;
            e.rec.reason = reason.clone();
            e.rec.clone()
        };
        self.announce(
            &rec.name,
            &rec.uuid,
            rec.spec.kind.as_str(),
            Some(State::Failed),
            &reason,
        );
    }

    /// Applies `f` to a record and persists it.
    fn update_record(&self, uuid: &str, f: impl FnOnce(&mut Entry)) -> Option<InstanceRecord> {
        let rec = {
            let mut t = self.table();
            let e = t.get_mut(uuid)?;
            f(e);
            e.rec.clone()
        };
        self.persist(&rec);
        // Re-read: a failed save has marked the instance failed.
        self.entry(uuid).map(|e| e.rec).or(Some(rec))
    }

    fn entry(&self, uuid: &str) -> Option<Entry> {
        self.table().get(uuid).cloned()
    }

    /// Finds an instance by name or UUID; returns its UUID.
    fn find(&self, id: &str) -> Option<String> {
        let t = self.table();
        if t.contains_key(id) {
            return Some(id.to_string());
        }
        t.values()
            .find(|e| e.rec.name == id)
            .map(|e| e.rec.uuid.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::{Loaded, Manifests};
    use crate::runtime::{ResolvedImage, RuntimeError};
    use monitor::MonitorStatus;
    use spec::{ImageRef, InstanceSpec};
    use std::os::fd::OwnedFd;
    use std::path::Path;

    /// Monitors are `sh -c 'sleep 0.3; exit 1'`: they come up, then crash.
    struct CrashingRuntime;

    impl Runtime for CrashingRuntime {
        fn prepare(&self, _: &InstanceRecord, _: &ResolvedImage) -> Result<(), RuntimeError> {
            Ok(())
        }
        fn spawn(&self, _: &InstanceRecord) -> Result<u32, RuntimeError> {
            #[allow(clippy::zombie_processes)] // reaped by the node's pidfd watcher
            let c = std::process::Command::new("sh")
                .args(["-c", "sleep 0.3; exit 1"])
                .spawn()
                .unwrap();
            Ok(c.id())
        }
        fn find_running(&self, _: &str) -> Option<u32> {
            None
        }
        fn status(&self, _: &InstanceRecord) -> Result<MonitorStatus, RuntimeError> {
            Ok(MonitorStatus {
                pid: 0,
                state: State::Running,
                instance_pid: None,
                started_at: None,
                reason: String::new(),
                details: Default::default(),
            })
        }
        fn stop(&self, _: &InstanceRecord, _: bool, _: Duration) -> Result<(), RuntimeError> {
            Ok(())
        }
        fn reboot(&self, _: &InstanceRecord, _: bool) -> Result<(), RuntimeError> {
            Ok(())
        }
        fn console(&self, r: &InstanceRecord) -> Result<OwnedFd, RuntimeError> {
            Err(RuntimeError::Monitor {
                instance: r.name.clone(),
                message: "no console".into(),
            })
        }
        fn reload(&self, _: &InstanceRecord) -> Result<String, RuntimeError> {
            Ok(String::new())
        }
    }

    struct AnyImage;
    impl Images for AnyImage {
        fn ensure(&self, _: &ImageRef) -> Result<ResolvedImage, RuntimeError> {
            Ok(ResolvedImage {
                uuid: "img".into(),
                path: "/nonexistent".into(),
                zvol: false,
                zone_defaults: None,
            })
        }
    }

    struct Fixed(Vec<InstanceSpec>);
    impl Manifests for Fixed {
        fn load_dir(&self, _: &Path) -> Loaded {
            Loaded {
                specs: self.0.clone(),
                problems: vec![],
            }
        }
        fn parse(&self, _: &str, _: &str) -> Result<Vec<InstanceSpec>, Vec<String>> {
            Ok(self.0.clone())
        }
        fn to_kdl(&self, _: &InstanceSpec) -> String {
            String::new()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_looping_monitor_is_restarted_with_backoff_then_left_failed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(dir.path()).unwrap();
        let opts = NodeOptions {
            stop_timeout: Duration::from_secs(1),
            start_timeout: Duration::from_secs(5),
            restart: RestartPolicy {
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(100),
                max_failures: 2,
                healthy_after: Duration::from_secs(60),
            },
            concurrency: Default::default(),
            zone_quota: None,
        };
        let node = Node::new(
            pool,
            Arc::new(CrashingRuntime),
            Arc::new(AnyImage),
            Arc::new(Fixed(vec![crate::pool::tests::zone_spec("loop")])),
            opts,
        );
        let mut events = node.subscribe();
        let n = Arc::clone(&node);
        tokio::task::spawn_blocking(move || n.reconcile())
            .await
            .unwrap();
        let mut runs = 0;
        let last = loop {
            let ch = tokio::time::timeout(Duration::from_secs(20), events.recv())
                .await
                .expect("state changes keep coming until it gives up")
                .unwrap();
            if ch.state == Some(State::Running) {
                runs += 1;
            }
            if ch.state == Some(State::Failed) && ch.reason.contains("gave up") {
                break ch;
            }
        };
        // The first start plus max_failures restarts.
        assert_eq!(runs, 3, "{last:?}");
        assert!(
            last.reason.contains("monitor exited with code 1"),
            "{last:?}"
        );
        let row = node.list().pop().unwrap();
        assert_eq!((row.state, row.pid), (State::Failed, 0));
        // An explicit start tries again from scratch.
        let n = Arc::clone(&node);
        tokio::task::spawn_blocking(move || n.start("loop"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(node.list().pop().unwrap().state, State::Running);
    }
}
