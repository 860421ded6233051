//! Fixtures shared by skerry's integration tests (init, vmadm): a private dbus-daemon,
//! busybox rootfs trees and the IMGAPI manifests of image files, and polling with a
//! deadline. Everything is real: the daemon is the system's `dbus-daemon`, the rootfs
//! holds the system's static busybox. A missing program fails the test, naming the
//! package to install; nothing is skipped.

#![forbid(unsafe_code)]

pub mod disk;
pub mod http;
pub mod init;
pub mod minisign;
pub mod registry;
pub mod tcg;

pub use disk::boot_disk;
pub use init::{sibling_bin, HostInit, InitOptions};

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd`, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path of a program the tests need, or a panic saying how to get it.
pub fn program(name: &str) -> PathBuf {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .into_iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing: install it (tests/deps/*.txt list the packages; \
                 `bash tests/setup` installs them)"
            )
        })
}

/// A private bus for one test: `dbus-daemon` on a socket in a temporary directory,
/// killed on drop; its log is printed when the test fails.
pub struct Bus {
    child: Child,
    /// The address clients connect to (`DBUS_SYSTEM_BUS_ADDRESS`).
    pub address: String,
    dir: tempfile::TempDir,
}

impl Bus {
    /// Starts the daemon with the configuration `config` writes for a listening socket
    /// path, and returns once it listens. The directory is world-readable, so that tests
    /// may call as another uid.
    pub fn start(config: impl FnOnce(&Path) -> String) -> Bus {
        let dir = tempfile::Builder::new()
            .prefix("skerry-bus-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.path().join("bus.conf");
        std::fs::write(&conf, config(&dir.path().join("bus.sock"))).unwrap();
        // Its stderr goes to a file: as a non-init process it always warns that it
        // cannot raise its fd limit, which is noise unless a test fails.
        let log = std::fs::File::create(dir.path().join("bus.log")).unwrap();
        let mut child = Command::new(program("dbus-daemon"))
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start dbus-daemon");
        // The address is printed once the daemon listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        let bus = Bus {
            child,
            address,
            dir,
        };
        assert!(
            bus.address.starts_with("unix:"),
            "dbus-daemon printed no address: {line:?}"
        );
        bus
    }

    /// A bus on which every local user may own and call anything.
    pub fn permissive() -> Bus {
        Bus::start(|socket| {
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            )
        })
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("bus.log"));
            eprintln!("--- dbus-daemon log\n{}", log.unwrap_or_default());
        }
    }
}

/// Makes `root` a minimal busybox userland: the usual top-level directories, the
/// system's static busybox as /bin/busybox with `applets` linked to it, and a root
/// entry in /etc/passwd. The caller provides /sbin/init.
pub fn busybox_rootfs(root: &Path, applets: &[&str]) {
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(program("busybox"), root.join("bin/busybox")).unwrap();
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
}

/// Writes an executable file.
pub fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Packs `root` into the tarball `tar`, every file owned by root.
pub fn tar_dir(root: &Path, tar: &Path) {
    let status = Command::new(program("tar"))
        .arg("-C")
        .arg(root)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of {} failed", root.display());
}

/// The IMGAPI manifest of the uncompressed image file `file`, with a fresh UUID.
pub fn image_manifest(file: &Path, name: &str, version: &str, kind: &str) -> serde_json::Value {
    let out = Command::new(program("sha256sum"))
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum {} failed", file.display());
    let out = String::from_utf8(out.stdout).unwrap();
    let sha = out.split_whitespace().next().unwrap();
    serde_json::json!({
        "v": 2,
        "uuid": uuid::Uuid::new_v4(),
        "owner": "00000000-0000-0000-0000-000000000000",
        "name": name,
        "version": version,
        "state": "active",
        "disabled": false,
        "public": true,
        "published_at": "2024-01-01T00:00:00Z",
        "type": kind,
        "os": "linux",
        "description": "skerry test image",
        "files": [{
            "sha256": sha,
            "size": std::fs::metadata(file).unwrap().len(),
            "compression": "none",
        }],
    })
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout`
/// naming `what`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The mdata tools mdata-client has.
pub const MDATA_TOOLS: [&str; 4] = ["mdata-get", "mdata-put", "mdata-list", "mdata-delete"];

/// The directory holding the mdata crate's tools, statically linked (a busybox rootfs
/// has no libc; the host runs them too), built once per test process (cargo's own
/// lock orders concurrent builds) in their own target directory under the workspace's,
/// so the test build's directory is never contended.
pub fn static_mdata_tools() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = workspace.join("target/mdata-static");
        let triple = "x86_64-unknown-linux-gnu";
        let out = Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .current_dir(&workspace)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args(["build", "-q", "-p", "mdata", "--bins", "--target", triple])
            .arg("--target-dir")
            .arg(&target)
            .output()
            .expect("running cargo to build the static mdata tools");
        assert!(
            out.status.success(),
            "building the static mdata tools failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = target.join(triple).join("debug");
        for tool in MDATA_TOOLS {
            let ldd = Command::new("ldd").arg(dir.join(tool)).output().unwrap();
            let text = String::from_utf8_lossy(&ldd.stdout).to_string()
                + &String::from_utf8_lossy(&ldd.stderr);
            assert!(
                text.contains("statically linked") || text.contains("not a dynamic"),
                "{tool} is not static: {text}"
            );
        }
        dir
    })
}

/// Copies the static mdata tools into `root`/usr/sbin, where mdata-client installs them.
pub fn install_mdata_tools(root: &Path) {
    let sbin = root.join("usr/sbin");
    std::fs::create_dir_all(&sbin).unwrap();
    for tool in MDATA_TOOLS {
        std::fs::copy(static_mdata_tools().join(tool), sbin.join(tool)).unwrap();
    }
}
