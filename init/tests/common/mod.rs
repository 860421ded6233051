//! Test harness: a private dbus-daemon, a temporary pool with a busybox zone image,
//! and init in host mode reading its console lines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use testkit::{HostInit, InitOptions};

/// The uid the "not root" tests call as.
pub const OTHER_UID: u32 = 65534;

pub use testkit::Bus;

/// A private bus with a policy like a node's: only root owns org.skerry.Node1,
/// everyone (root and OTHER_UID) may call it.
pub fn node_bus() -> Bus {
    assert_eq!(
        nix::unistd::getuid().as_raw(),
        0,
        "init's integration tests run as root (namespaces, cgroups, bridges)"
    );
    Bus::start(|socket| {
        skerry_init::pid1::services::dbus_config(socket.to_str().unwrap())
            .replace("<type>system</type>", "<type>session</type>")
    })
}

/// A temporary pool with a busybox zone image installed.
pub struct TestPool {
    pub dir: tempfile::TempDir,
    pub run_dir: PathBuf,
}

impl TestPool {
    pub fn new() -> TestPool {
        TestPool::new_in(&std::env::temp_dir())
    }

    /// A pool in a new directory below `parent` (a small filesystem, say).
    pub fn new_in(parent: &Path) -> TestPool {
        let dir = tempfile::Builder::new()
            .prefix("init-pool")
            .tempdir_in(parent)
            .unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        install_busybox_image(dir.path());
        TestPool { dir, run_dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn manifest(&self, name: &str, text: &str) {
        std::fs::write(self.path().join("manifests").join(name), text).unwrap();
    }

    pub fn remove_manifest(&self, name: &str) {
        std::fs::remove_file(self.path().join("manifests").join(name)).unwrap();
    }

    /// `<pool>/<uuid>` of a named instance, from its state file.
    pub fn instance_dir(&self, name: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(self.path()).unwrap().flatten() {
            let st = e.path().join("state.json");
            if let Ok(d) = std::fs::read(&st) {
                let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
                if v["name"] == name {
                    return Some(e.path());
                }
            }
        }
        None
    }
}

/// A busybox rootfs (static busybox from busybox-static, applet links, an init that
/// runs until SIGTERM) packed as a zone-dataset image and installed in the pool.
fn install_busybox_image(pool: &Path) {
    let work = tempfile::Builder::new()
        .prefix("init-img")
        .tempdir()
        .unwrap();
    let root = work.path().join("root");
    testkit::busybox_rootfs(
        &root,
        &["sh", "sleep", "cat", "ls", "echo", "hostname", "ps", "true"],
    );
    testkit::write_executable(
        &root.join("sbin/init"),
        "#!/bin/sh\ntrap 'exit 0' TERM INT\necho zone-init-up\nwhile :; do sleep 1; done\n",
    );
    let tar = work.path().join("busybox.tar");
    testkit::tar_dir(&root, &tar);
    install(pool, &tar, "busybox", "1.36", "zone-dataset");
}

/// Installs `file` as the image `name@version` with the imgadm library.
fn install(pool: &Path, file: &Path, name: &str, version: &str, kind: &str) {
    let manifest = testkit::image_manifest(file, name, version, kind);
    let manifest = imgadm::ImageManifest::from_json(manifest.to_string().as_bytes(), "test")
        .expect("test image manifest");
    imgadm::ImageStore::open(pool)
        .unwrap()
        .install_file(&manifest, file)
        .unwrap_or_else(|e| panic!("install {name}@{version}: {e}"));
}

/// Installs a small real boot disk ([`testkit::boot_disk`]: ext4 with
/// `/boot/vmlinuz-test`) as the image `tiny-hvm@1` (zvol), for provisioning tests.
/// Returns the disk's bytes.
pub fn install_zvol_image(pool: &Path) -> Vec<u8> {
    let work = tempfile::Builder::new()
        .prefix("init-zvol")
        .tempdir()
        .unwrap();
    let file = work.path().join("disk.raw");
    let data = testkit::boot_disk(&file);
    install(pool, &file, "tiny-hvm", "1", "zvol");
    data
}

/// init in host mode, its console lines collected ([`testkit::HostInit`]).
pub struct Init(HostInit);

impl Init {
    /// init for tests that start no instance: a zone binary is not needed.
    pub fn start(pool: &TestPool, bus: &Bus) -> Init {
        Init::start_with(pool, bus, Path::new("/nonexistent/zone-not-needed-here"))
    }

    /// init that runs zones with `zone`.
    pub fn start_with(pool: &TestPool, bus: &Bus, zone: &Path) -> Init {
        Init(HostInit::start(
            bus,
            InitOptions {
                binary: env!("CARGO_BIN_EXE_init").into(),
                pool: pool.path(),
                run_dir: &pool.run_dir,
                zone: zone.to_path_buf(),
                stderr: Stdio::inherit(),
                configure: Box::new(|cmd| {
                    cmd.args(["--stop-timeout", "5"]);
                }),
            },
        ))
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Waits for a console line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        self.0.wait_line(needle, timeout)
    }

    pub fn count_lines(&self, needle: &str) -> usize {
        self.0.count_lines(needle)
    }

    /// kill -9, leaving monitors behind (they must survive).
    pub fn kill9(&mut self) {
        self.0.kill9()
    }

    /// SIGTERM: init stops every instance and exits.
    pub fn terminate(&mut self) {
        if !self.0.terminate(Duration::from_secs(30)) {
            panic!("init did not exit within 30s of SIGTERM");
        }
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The zone binary: $SKERRY_ZONE_BIN, else the workspace's built one.
pub fn zone_bin() -> PathBuf {
    testkit::sibling_bin("zone")
}

/// Calls a Node1 method as root.
pub async fn call<B, R>(conn: &zbus::Connection, method: &str, body: &B) -> zbus::Result<R>
where
    B: serde::Serialize + zvariant::DynamicType,
    R: for<'d> serde::Deserialize<'d> + zvariant::Type,
{
    let reply = conn
        .call_method(
            Some(spec::api::BUS_NAME),
            spec::api::OBJECT_PATH,
            Some(spec::api::INTERFACE),
            method,
            body,
        )
        .await?;
    reply.body().deserialize()
}

pub async fn connect(bus: &Bus) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .await
        .expect("connect to the test bus")
}

/// The instance's state as List reports it.
pub async fn state_of(conn: &zbus::Connection, name: &str) -> Option<(String, u32)> {
    let rows: Vec<spec::api::InstanceSummary> = call(conn, "List", &()).await.unwrap();
    rows.into_iter()
        .find(|r| r.name == name)
        .map(|r| (r.state.to_string(), r.pid))
}

pub async fn wait_state(
    conn: &zbus::Connection,
    name: &str,
    state: &str,
    timeout: Duration,
) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        let s = state_of(conn, name).await;
        if let Some((st, pid)) = &s {
            if st == state {
                return *pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} not {state} within {timeout:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pids of live processes whose command line mentions `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && skerry_init::monitor::watch::alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// Serves `app` on a free loopback port from a thread of its own (a current-thread
/// runtime, so the test's runtime is not involved); returns its URL.
pub fn serve_app(app: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}
