//! A pool with one zone's config.json and a `zone monitor` driven over its socket.

use super::*;
use monitor::{self as contract, InstanceConfig, MonitorRequest, MonitorStatus, State};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A pool with one zone's config.json, as init would prepare it.
pub struct Pool {
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    _rootfs: tempfile::TempDir,
    pub config: InstanceConfig,
}

impl Pool {
    /// A zone running `init` in a fresh temporary pool.
    pub fn new(init: &[&str]) -> Pool {
        let tmp = tempfile::Builder::new()
            .prefix("zone-test-pool")
            .tempdir()
            .unwrap();
        let mut pool = Pool::in_dir(tmp.path(), init, None);
        pool._tmp = Some(tmp);
        pool
    }

    /// A zone running `init` with writable-layer `quota` in the pool `dir` (e.g. a
    /// test filesystem's mount point).
    pub fn in_dir(dir: &Path, init: &[&str], quota: Option<u64>) -> Pool {
        let rootfs = busybox_rootfs();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // The first 8 hex digits name the zone's host ports: one pool's apart from
        // another's of this process.
        let uuid = format!(
            "{:05x}{:03x}-0000-4000-8000-{:012x}",
            std::process::id() & 0xfffff,
            n & 0xfff,
            n
        );
        let spec = spec::InstanceSpec {
            name: format!("mon{n}"),
            uuid: None,
            ensure: spec::Ensure::Present,
            autoboot: true,
            image: spec::ImageRef::Name {
                name: "busybox".into(),
                version: None,
            },
            memory: 64 << 20,
            nics: vec![],
            resolvers: vec!["10.0.0.53".parse().unwrap()],
            metadata: BTreeMap::new(),
            user_script: None,
            user_data: None,
            ssh_keys: Vec::new(),
            firewall: None,
            kind: spec::Kind::Zone(spec::ZoneSpec {
                cpu_cap: 0,
                pids: 100,
                quota,
                hostname: String::new(),
                init: init.iter().map(|s| s.to_string()).collect(),
                env: vec![("ZONE_TEST".into(), "1".into())],
                workdir: None,
                user: None,
            }),
            origin: spec::Origin::default(),
        };
        let config = InstanceConfig {
            uuid: uuid.clone(),
            pool: dir.to_path_buf(),
            run_dir: dir.join("run"),
            spec,
            image_path: rootfs.path().to_path_buf(),
            id_range_start: 2_000_000_000 + ((std::process::id() & 0xff) * 16 + n % 16) * 65536,
            bridges: BTreeMap::new(),
            image_defaults: None,
        };
        std::fs::create_dir_all(dir.join(&uuid)).unwrap();
        spec::atomic::write_json_atomic(&contract::config_path(dir, &uuid), &config).unwrap();
        Pool {
            dir: dir.to_path_buf(),
            _tmp: None,
            _rootfs: rootfs,
            config,
        }
    }

    /// Writes `config` (this zone's, changed by a test) to config.json, atomically, as
    /// init does.
    pub fn save_config(&self, config: &InstanceConfig) {
        spec::atomic::write_json_atomic(&contract::config_path(&self.dir, &config.uuid), config)
            .unwrap();
    }

    /// The zone's image rootfs (files added before `spawn` are seen by the zone).
    pub fn image(&self) -> &Path {
        self._rootfs.path()
    }

    /// The pool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn socket(&self) -> PathBuf {
        contract::socket_path(&self.config.run_dir, &self.config.uuid)
    }

    pub fn zone_dir(&self) -> PathBuf {
        self.dir.join(&self.config.uuid)
    }

    pub fn spawn(&self) -> Child {
        Command::new(ZONE)
            .args(["monitor", "--config"])
            .arg(contract::config_path(&self.dir, &self.config.uuid))
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn request(
        &self,
        req: MonitorRequest,
    ) -> (monitor::MonitorResponse, Option<std::os::fd::OwnedFd>) {
        monitor::Client::new(self.socket()).request(&req).unwrap()
    }

    /// Stops the zone at once (forced, no grace) and waits for its monitor (`child`)
    /// to exit cleanly.
    pub fn stop(&self, child: &mut Child) {
        let (resp, _) = self.request(MonitorRequest::Stop {
            force: true,
            timeout_secs: 0,
        });
        assert!(resp.ok, "{resp:?}");
        assert_eq!(wait_exit(child), 0);
    }

    pub fn status(&self) -> MonitorStatus {
        let (resp, _) = self.request(MonitorRequest::Status);
        assert!(resp.ok, "{resp:?}");
        resp.status.unwrap()
    }

    pub fn saved_status(&self) -> MonitorStatus {
        let text =
            std::fs::read_to_string(contract::status_path(&self.dir, &self.config.uuid)).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Waits until the monitor answers with the zone running.
    pub fn wait_running(&self) -> MonitorStatus {
        wait_for("the zone to run", || {
            let s = monitor::Client::new(self.socket())
                .request(&MonitorRequest::Status)
                .ok()?
                .0
                .status?;
            (s.state == State::Running).then_some(s)
        })
    }
}

/// Stops a monitor a failed test left running, so no zone outlives the test.
pub struct MonitorGuard<'a>(pub &'a Pool);

impl Drop for MonitorGuard<'_> {
    fn drop(&mut self) {
        let _ = monitor::Client::new(self.0.socket()).request(&MonitorRequest::Stop {
            force: true,
            timeout_secs: 0,
        });
    }
}

pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_exit(child: &mut Child) -> i32 {
    wait_for("the monitor to exit", || child.try_wait().unwrap())
        .code()
        .unwrap_or(-1)
}

pub fn cgroup_dir(status: &MonitorStatus) -> PathBuf {
    let d = &status.details["cgroup"];
    PathBuf::from(&d[3..])
}

pub fn assert_monitor_gone(pool: &Pool, cgroup: &Path) {
    assert!(!pool.socket().exists(), "socket left behind");
    assert!(
        !contract::pidfile_path(&pool.config.run_dir, &pool.config.uuid).exists(),
        "pidfile left behind"
    );
    assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
}
