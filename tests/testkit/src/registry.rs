//! A real OCI registry for tests: Debian's `docker-registry` (distribution) on a free
//! loopback port, fed with images built by `umoci` and pushed by `skopeo`. A node in
//! QEMU's user network reaches it as `10.0.2.2:PORT`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry` on a free loopback port, killed when dropped.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// The registry's port.
    pub fn port(&self) -> u16 {
        let port = self.addr.rsplit(':').next().expect("addr has a port");
        port.parse().expect("a port number")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Whether `GET /v2/` on `addr` answers 200.
fn answers(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: x\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// Starts a registry with its own config and storage; waits until `/v2/` answers.
pub fn start() -> Registry {
    let dir = tempfile::tempdir().expect("a temp dir");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        ),
    )
    .expect("writing the registry's config");
    let child = Command::new(crate::program("docker-registry"))
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting docker-registry");
    let reg = Registry {
        child,
        addr,
        _dir: dir,
    };
    let until = Instant::now() + Duration::from_secs(20);
    while !answers(&reg.addr) {
        assert!(Instant::now() < until, "docker-registry did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    reg
}

pub use crate::run;

/// An OCI layout `DIR/layout` holding `layout:v1`: one layer made by `umoci repack`
/// from a rootfs with the system's static busybox as /bin/busybox and /bin/sh, plus
/// whatever `fill` puts into the rootfs (given its path).
pub fn busybox_layout(dir: &Path, fill: impl FnOnce(&Path)) -> PathBuf {
    let umoci = crate::program("umoci");
    let layout = dir.join("layout");
    let image = format!("{}:v1", layout.display());
    run(Command::new(&umoci).args(["init", "--layout"]).arg(&layout));
    run(Command::new(&umoci).args(["new", "--image", &image]));
    let bundle = dir.join("bundle");
    run(Command::new(&umoci)
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir bin");
    std::fs::copy(crate::program("busybox"), rootfs.join("bin/busybox")).expect("busybox");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("bin/sh");
    fill(&rootfs);
    run(Command::new(&umoci)
        .args(["repack", "--image", &image])
        .arg(&bundle));
    layout
}

/// `umoci config` of `layout:v1` with `args` (`--config.cmd`, ...).
pub fn configure(layout: &Path, args: &[&str]) {
    run(Command::new(crate::program("umoci"))
        .args(["config", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .args(args));
}

/// Pushes `layout:tag` to `registry/repo:tag` with skopeo (plain HTTP).
pub fn push(layout: &Path, tag: &str, registry: &str, repo: &str) {
    run(Command::new(crate::program("skopeo"))
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{registry}/{repo}:{tag}")));
}
