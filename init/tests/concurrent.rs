//! The concurrent executor against a real IMGAPI server (imgadm's own router) that
//! holds one image's file back: instances of the other image run before the slow
//! import finishes, and instances needing the same image share one import.
//!
//! The runtime is a recording fake (monitors are `sleep` processes), so the test
//! measures the reconcile's scheduling, not zones; it needs no root.

mod common;

use axum::extract::Request;
use axum::middleware::{self, Next};
use skerry_init::manifests::SpecManifests;
use skerry_init::node::{Node, NodeOptions};
use skerry_init::pool::{InstanceRecord, Pool};
use skerry_init::runtime::{ResolvedImage, Runtime, RuntimeError};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the server holds the slow image's file back.
const HOLD: Duration = Duration::from_secs(3);

/// Monitors are `sleep 10`; each spawn is recorded with its time.
#[derive(Default)]
struct Recording {
    spawned: Mutex<Vec<(String, Instant, u32)>>,
}

impl Runtime for Recording {
    fn prepare(&self, _: &InstanceRecord, _: &ResolvedImage) -> Result<(), RuntimeError> {
        Ok(())
    }
    fn spawn(&self, rec: &InstanceRecord) -> Result<u32, RuntimeError> {
        #[allow(clippy::zombie_processes)] // reaped by the node's pidfd watcher
        let c = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = c.id();
        let mut s = self.spawned.lock().unwrap();
        s.push((rec.name.clone(), Instant::now(), pid));
        Ok(pid)
    }
    fn find_running(&self, _: &str) -> Option<u32> {
        None
    }
    fn status(&self, _: &InstanceRecord) -> Result<monitor::MonitorStatus, RuntimeError> {
        Ok(monitor::MonitorStatus {
            state: spec::State::Running,
            ..monitor::MonitorStatus::provisioning(0)
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

impl Recording {
    /// Ends every "monitor" spawned so far.
    fn kill_all(&self) {
        for (_, _, pid) in self.spawned.lock().unwrap().iter() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// What the image server saw: file requests per path, and when it let the slow
/// image's file go.
#[derive(Default)]
struct Seen {
    files: HashMap<String, usize>,
    slow_released: Option<Instant>,
}

/// A tiny zone-dataset image `name@1` installed in `store_dir`; returns its UUID.
fn source_image(store_dir: &Path, name: &str) -> String {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), name).unwrap();
    let tar = work.path().join("image.tar");
    testkit::tar_dir(&root, &tar);
    let manifest = testkit::image_manifest(&tar, name, "1", "zone-dataset");
    let uuid = manifest["uuid"].as_str().unwrap().to_string();
    let manifest = imgadm::ImageManifest::from_json(manifest.to_string().as_bytes(), "test")
        .expect("test image manifest");
    imgadm::ImageStore::open(store_dir)
        .unwrap()
        .install_file(&manifest, &tar)
        .unwrap();
    uuid
}

/// Serves `store_dir` over IMGAPI on a free port, holding `slow`'s file back for
/// [`HOLD`]; returns the URL.
fn serve(store_dir: &Path, slow: &str, seen: Arc<Mutex<Seen>>) -> String {
    let store = imgadm::ImageStore::open(store_dir).unwrap();
    let slow_file = format!("/images/{slow}/file");
    let hold = middleware::from_fn(move |req: Request, next: Next| {
        let (seen, slow_file) = (Arc::clone(&seen), slow_file.clone());
        async move {
            let path = req.uri().path().to_string();
            if path.ends_with("/file") {
                *seen.lock().unwrap().files.entry(path.clone()).or_default() += 1;
            }
            if path == slow_file {
                tokio::time::sleep(HOLD).await;
                seen.lock().unwrap().slow_released = Some(Instant::now());
            }
            next.run(req).await
        }
    });
    common::serve_app(imgadm::serve::router(store).layer(hold))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_import_delays_only_its_own_instances_and_is_shared() {
    let source = tempfile::tempdir().unwrap();
    let slow = source_image(source.path(), "slow");
    let fast = source_image(source.path(), "fast");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = serve(source.path(), &slow, Arc::clone(&seen));

    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::open(dir.path()).unwrap();
    // By name the slow image's instances come first: applied one after the other,
    // the fast ones would wait for the slow import.
    std::fs::write(
        pool.manifests_dir().join("all.kdl"),
        "zone a1 { image \"slow@1\"; }\nzone a2 { image \"slow@1\"; }\n\
         zone b1 { image \"fast@1\"; }\nzone b2 { image \"fast@1\"; }\n",
    )
    .unwrap();
    let store = imgadm::ImageStore::open_with_sources(dir.path(), &[url])
        .unwrap()
        .without_progress();
    let runtime = Arc::new(Recording::default());
    let node = Node::new(
        pool,
        runtime.clone(),
        Arc::new(skerry_init::images::StoreImages::new(store)),
        Arc::new(SpecManifests::new()),
        NodeOptions::default(),
    );
    let n = Arc::clone(&node);
    let out = tokio::task::spawn_blocking(move || n.boot_reconcile())
        .await
        .unwrap();
    let spawned = runtime.spawned.lock().unwrap().clone();
    runtime.kill_all();
    for s in &out.steps {
        assert!(!s.reason.contains("FAILED"), "{s:?}");
    }
    let at = |name: &str| {
        spawned
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("{name} was never started: {spawned:?}"))
            .1
    };
    let seen = seen.lock().unwrap();
    let released = seen.slow_released.expect("the slow file was asked for");
    for fast_one in ["b1", "b2"] {
        assert!(
            at(fast_one) < released,
            "{fast_one} started {:?} after the slow import's file was released",
            at(fast_one) - released
        );
    }
    for slow_one in ["a1", "a2"] {
        assert!(at(slow_one) > released, "{slow_one} ran without its image");
    }
    // The boot timeline, in the order things happened: the fast instances ran before
    // the slow image arrived, and its instances after.
    let phases: Vec<String> = node.timeline().phases().into_iter().map(|p| p.0).collect();
    let at = |name: &str| {
        phases
            .iter()
            .position(|p| p == name)
            .unwrap_or_else(|| panic!("no {name:?} in {phases:?}"))
    };
    assert!(
        at("instance b1 running") < at("import slow@1"),
        "{phases:?}"
    );
    assert!(
        at("instance b2 running") < at("import slow@1"),
        "{phases:?}"
    );
    assert!(
        at("import slow@1") < at("instance a1 running"),
        "{phases:?}"
    );
    // One import per image, however many instances asked for it at once.
    assert_eq!(seen.files.get(&format!("/images/{slow}/file")), Some(&1));
    assert_eq!(seen.files.get(&format!("/images/{fast}/file")), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_does_not_fit_in_memory_is_marked_and_the_rest_starts_in_manifest_order() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::open(dir.path()).unwrap();
    // More memory than any test machine has, between two that fit.
    std::fs::write(
        pool.manifests_dir().join("all.kdl"),
        "zone small1 { image \"busybox@1.36\"; memory \"64M\"; }\n\
         zone huge { image \"busybox@1.36\"; memory \"64T\"; }\n\
         zone small2 { image \"busybox@1.36\"; memory \"64M\"; }\n",
    )
    .unwrap();
    let runtime = Arc::new(Recording::default());
    let node = Node::new(
        pool,
        runtime.clone(),
        Arc::new(AnyImage),
        Arc::new(SpecManifests::new()),
        NodeOptions::default(),
    );
    let n = Arc::clone(&node);
    let out = tokio::task::spawn_blocking(move || n.reconcile())
        .await
        .unwrap();
    let spawned: Vec<String> = runtime
        .spawned
        .lock()
        .unwrap()
        .iter()
        .map(|(name, _, _)| name.clone())
        .collect();
    let mut spawned_sorted = spawned.clone();
    spawned_sorted.sort();
    assert_eq!(spawned_sorted, ["small1", "small2"]);
    let huge = node.list().into_iter().find(|r| r.name == "huge").unwrap();
    assert_eq!(huge.state, spec::State::Failed, "{huge:?}");
    assert!(
        huge.reason.starts_with("not started: needs 64T of memory"),
        "{}",
        huge.reason
    );
    let step = out
        .steps
        .iter()
        .find(|s| s.name == "huge" && s.action.as_str() == "refuse");
    assert!(step.is_some(), "{:?}", out.steps);
    // A second reconcile (nothing freed) holds it again, and changes nothing else.
    let n = Arc::clone(&node);
    let again = tokio::task::spawn_blocking(move || n.reconcile())
        .await
        .unwrap();
    let names: Vec<_> = again
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.action.as_str()))
        .collect();
    assert_eq!(names, [("huge", "refuse")]);
    runtime.kill_all();
}

/// Every image is installed already.
struct AnyImage;

impl skerry_init::runtime::Images for AnyImage {
    fn ensure(&self, _: &spec::ImageRef) -> Result<ResolvedImage, RuntimeError> {
        Ok(ResolvedImage {
            uuid: "img".into(),
            path: "/nonexistent".into(),
            zvol: false,
            zone_defaults: None,
        })
    }
}
