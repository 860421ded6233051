//! Reconcile at scale: 1000 zone manifests (autoboot off) in a temporary pool.
//!
//! Measures, in one run:
//! - load + validate + plan of 1000 new instances (the first boot's planning),
//! - applying that plan (provisioning 1000 instances: records, config.json),
//! - a no-op reconcile of the converged node (target: under 100 ms), warm and right
//!   after an init restart (nothing cached).
//!
//! The peer is the bare cost of reading the same 1000 files: the ratio says how much
//! of a no-op is parsing and planning rather than I/O.
//!
//! `cargo bench -p init --bench reconcile` (root not needed).

use skerry_init::manifests::{Manifests, SpecManifests};
use skerry_init::monitor::MonitorRuntime;
use skerry_init::node::{Node, NodeOptions};
use skerry_init::pool::Pool;
use skerry_init::runtime::{Images, ResolvedImage, Runtime, RuntimeError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: usize = 1000;

/// A zone image already in place: the benchmark measures init, not imgadm.
struct OneImage(PathBuf);

impl Images for OneImage {
    fn ensure(&self, _: &spec::ImageRef) -> Result<ResolvedImage, RuntimeError> {
        Ok(ResolvedImage {
            uuid: "00000000-0000-0000-0000-000000000001".into(),
            path: self.0.clone(),
            zvol: false,
            zone_defaults: None,
        })
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let dir = tempfile::Builder::new()
        .prefix("init-bench")
        .tempdir()
        .unwrap();
    let pool = Pool::open(dir.path()).unwrap();
    for i in 0..N {
        std::fs::write(
            pool.manifests_dir().join(format!("z{i:04}.kdl")),
            format!(
                "zone z{i:04} {{\n    image \"busybox@1.36\"\n    autoboot #false\n    memory \"64M\"\n    cpu-cap 10\n    metadata {{ role \"bench\"; }}\n}}\n"
            ),
        )
        .unwrap();
    }
    let image = dir.path().join("image-root");
    std::fs::create_dir_all(&image).unwrap();
    let runtime: Arc<dyn Runtime> = Arc::new(MonitorRuntime::new(
        pool.clone(),
        dir.path().join("run"),
        "/nonexistent/zone".into(),
        "/nonexistent/vmm".into(),
        Default::default(),
    ));
    let images: Arc<dyn Images> = Arc::new(OneImage(image));
    let node = Node::new(
        pool.clone(),
        Arc::clone(&runtime),
        Arc::clone(&images),
        Arc::new(SpecManifests::new()),
        NodeOptions::default(),
    );
    node.load(true);

    // Cold: a fresh front end parses every file, as at boot.
    let plan_times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let loaded = SpecManifests::new().load_dir(&pool.manifests_dir());
            let steps = skerry_init::plan::plan(&loaded.specs, &[], &[]);
            let d = t.elapsed();
            assert_eq!(steps.len(), N, "every manifest plans a create");
            assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
            d
        })
        .collect();

    let t = Instant::now();
    let out = node.reconcile();
    let apply = t.elapsed();
    assert_eq!(out.steps.len(), N);
    assert!(
        out.steps.iter().all(|s| !s.reason.contains("FAILED")),
        "{:?}",
        out.steps[0]
    );

    let noop_times: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            let out = node.reconcile();
            let d = t.elapsed();
            assert!(
                out.steps.is_empty(),
                "second reconcile must be a no-op: {:?}",
                out.steps.first()
            );
            d
        })
        .collect();

    let read_times: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            let mut bytes = 0;
            for e in std::fs::read_dir(pool.manifests_dir()).unwrap().flatten() {
                bytes += std::fs::read(e.path()).unwrap().len();
            }
            assert!(bytes > 0);
            t.elapsed()
        })
        .collect();

    // The first reconcile after an init restart: a new node over the same pool,
    // nothing cached, every manifest parsed again.
    let cold_noop_times: Vec<Duration> = (0..3)
        .map(|_| {
            let fresh = Node::new(
                pool.clone(),
                Arc::clone(&runtime),
                Arc::clone(&images),
                Arc::new(SpecManifests::new()),
                NodeOptions::default(),
            );
            fresh.load(false);
            let t = Instant::now();
            let out = fresh.reconcile();
            let d = t.elapsed();
            assert!(out.steps.is_empty(), "{:?}", out.steps.first());
            d
        })
        .collect();

    let (plan, noop, read) = (median(plan_times), median(noop_times), median(read_times));
    let cold_noop = median(cold_noop_times);
    println!("reconcile benchmark, {N} zone manifests (autoboot off), medians:");
    println!(
        "  load+validate+plan (first boot, {N} creates): {:8.1} ms",
        ms(plan)
    );
    println!(
        "  apply: provision {N} instances:             {:8.1} ms",
        ms(apply)
    );
    println!(
        "  no-op reconcile:                             {:8.1} ms  (target < 100 ms: {})",
        ms(noop),
        if noop < Duration::from_millis(100) {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "  no-op reconcile, cold (first after init start): {:5.1} ms  (target < 100 ms: {})",
        ms(cold_noop),
        if cold_noop < Duration::from_millis(100) {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "  peer: reading the {N} files only:            {:8.1} ms",
        ms(read)
    );
    println!(
        "  ratio no-op reconcile / bare read:           {:8.1}x",
        noop.as_secs_f64() / read.as_secs_f64()
    );
}
