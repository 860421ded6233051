//! Boot manifests (`skerry.manifests=URL`) against real servers: `python3 -m
//! http.server`, `openssl s_server -WWW` with a CA made by `openssl` here, and raw
//! sockets for what no polite server does (a cut body, an endless one, a slow drip).
//! Keys and signatures are made with the real `minisign`.
//!
//! Every refusal is checked three ways: the error names the reason, the console says
//! it (with the last good copy), and the copy in the pool is byte-for-byte the old one.

use skerry_init::pid1::boot_manifests::{refresh_at_boot, BootManifestError, Installed, Limits};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use testkit::http::file_server;
use testkit::minisign::Key;
use testkit::run;

const GOOD: &str = "zone web {\n    image \"busybox\"\n}\n";
const EVIL: &str = "zone web {\n    ensure \"absent\"\n}\n";

/// The console lines of this test binary (init's console also goes to a file).
fn console_log() -> &'static Path {
    static LOG: OnceLock<PathBuf> = OnceLock::new();
    LOG.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("boot-manifests-console.{}", std::process::id()));
        skerry_init::console::log_to_file(&p).unwrap();
        p
    })
}

/// A node: its pool, its image's trust root, and the folder a server serves.
struct Node {
    _dir: tempfile::TempDir,
    pool: PathBuf,
    image: PathBuf,
    www: PathBuf,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let n = Node {
            pool: dir.path().join("pool"),
            image: dir.path().join("image-etc-skerry"),
            www: dir.path().join("www"),
            _dir: dir,
        };
        for d in [&n.pool, &n.image, &n.www] {
            std::fs::create_dir_all(d).unwrap();
        }
        n
    }

    /// Trusts `key` from `<pool>/config/manifest-keys/` (or the image's, if `in_image`).
    fn trust(&self, key: &Key, in_image: bool) {
        let root = if in_image {
            self.image.clone()
        } else {
            self.pool.join("config")
        };
        let dir = root.join("manifest-keys");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&key.public, dir.join(key.public.file_name().unwrap())).unwrap();
    }

    /// Puts `text` on the server as `name`, signed by `key` if given.
    fn serve(&self, name: &str, text: &str, key: Option<&Key>) -> PathBuf {
        let f = self.www.join(name);
        std::fs::write(&f, text).unwrap();
        let _ = std::fs::remove_file(self.www.join(format!("{name}.minisig")));
        if let Some(k) = key {
            k.sign(&f, None);
        }
        f
    }

    fn refresh(&self, url: &str, limits: &Limits) -> Result<Installed, BootManifestError> {
        console_log();
        refresh_at_boot(url, &self.pool, &self.image, limits)
    }

    fn copy(&self) -> Option<String> {
        std::fs::read_to_string(self.pool.join("manifests/boot-url.kdl")).ok()
    }

    /// Installs GOOD from `server` (signed by `key`, if given) as the last good copy.
    fn install_good(&self, server: &str, key: Option<&Key>) {
        self.serve("good.kdl", GOOD, key);
        let r = self.refresh(&format!("{server}/good.kdl"), &Limits::default());
        match key {
            Some(_) => assert!(matches!(r, Ok(Installed::Signed(_))), "{r:?}"),
            None => assert!(matches!(r, Ok(Installed::Unsigned)), "{r:?}"),
        }
        assert_eq!(self.copy().as_deref(), Some(GOOD));
    }

    /// Asserts the refresh of `url` was refused for `reason`, said so on the console
    /// and left the last good copy (GOOD) untouched.
    fn assert_refused(&self, url: &str, limits: &Limits, reason: &str) {
        let e = self.refresh(url, limits).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(reason), "{text}");
        assert_eq!(
            self.copy().as_deref(),
            Some(GOOD),
            "the last good copy changed"
        );
        let console = std::fs::read_to_string(console_log()).unwrap();
        let line = format!(
            "boot manifests refused: {text}; the node runs from the last good copy, {}",
            self.pool.join("manifests/boot-url.kdl").display()
        );
        assert!(
            console.contains(&line),
            "console lacks {line:?}:\n{console}"
        );
    }
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate it signed for 127.0.0.1, made with openssl.
fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join(format!("{name}-ca.key"));
    let ca = dir.join(format!("{name}-ca.pem"));
    let key = dir.join(format!("{name}-server.key"));
    let csr = dir.join(format!("{name}-server.csr"));
    let cert = dir.join(format!("{name}-server.pem"));
    let ext = dir.join(format!("{name}-ext"));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509", "-days", "1", "-subj"])
        .arg(format!("/CN=skerry test CA {name}"))
        .args(ec)
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    run(Command::new("openssl")
        .args(["req", "-new", "-subj", "/CN=127.0.0.1"])
        .args(ec)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-CAcreateserial", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (ca, cert, key)
}

/// `openssl s_server -WWW` on loopback serving `dir` with `cert`.
fn https_server(dir: &Path, cert: &Path, key: &Path) -> Server {
    let mut child = Command::new("openssl")
        .args(["s_server", "-WWW", "-accept", "127.0.0.1:0", "-cert"])
        .arg(cert)
        .arg("-key")
        .arg(key)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // "ACCEPT 127.0.0.1:41234", after a line or two about parameters.
    while !line.starts_with("ACCEPT") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "s_server quit");
    }
    let port = line.trim().rsplit(':').next().unwrap().to_string();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Server {
        child,
        base: format!("https://127.0.0.1:{port}"),
    }
}

/// What a raw server does after reading a request.
#[derive(Clone, Copy)]
enum Misbehave {
    /// Announces 4096 bytes, sends 100, closes.
    CutBody,
    /// No Content-Length, sends 4 MiB (far past the limit) and closes.
    Endless,
    /// Sends one byte every 50 ms for 30 s (a client that waits that long has lost).
    SlowDrip,
}

/// A loopback server that answers every request the way `how` says.
fn raw_server(how: Misbehave) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let started = Instant::now();
                let _ = match how {
                    Misbehave::CutBody => s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n")
                        .and_then(|_| s.write_all(&[b'x'; 100])),
                    Misbehave::Endless => {
                        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
                        let chunk = [b'#'; 64 << 10];
                        for _ in 0..64 {
                            if s.write_all(&chunk).is_err() {
                                break;
                            }
                        }
                        Ok(())
                    }
                    Misbehave::SlowDrip => {
                        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
                        while started.elapsed() < Duration::from_secs(30) {
                            if s.write_all(b"#").is_err() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Ok(())
                    }
                };
                // Dropping the socket closes it: for CutBody, mid-body.
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn signed_body_over_https_is_installed_and_tampering_is_refused() {
    let node = Node::new();
    let key = Key::new(node.www.parent().unwrap(), "ops");
    node.trust(&key, true);
    let (ca, cert, tls_key) = make_ca(node.www.parent().unwrap(), "boot");
    std::fs::copy(&ca, node.image.join("manifests-ca.pem")).unwrap();
    let server = https_server(&node.www, &cert, &tls_key);
    node.install_good(&server.base, Some(&key));
    assert!(node.pool.join("manifests/boot-url.kdl.minisig").exists());

    // The body changed under its signature: refused, the good copy stays.
    let f = node.serve("node.kdl", GOOD, Some(&key));
    std::fs::write(&f, EVIL).unwrap();
    let url = format!("{}/node.kdl", server.base);
    node.assert_refused(&url, &Limits::default(), "bad signature");
}

#[test]
fn a_server_the_images_ca_did_not_sign_is_refused() {
    let node = Node::new();
    let key = Key::new(node.www.parent().unwrap(), "ops");
    node.trust(&key, false);
    let (ca, our_cert, our_key) = make_ca(node.www.parent().unwrap(), "ours");
    let (_, cert, tls_key) = make_ca(node.www.parent().unwrap(), "theirs");
    // First a good copy from a server our CA signed, then the impostor.
    std::fs::copy(&ca, node.image.join("manifests-ca.pem")).unwrap();
    let ours = https_server(&node.www, &our_cert, &our_key);
    node.install_good(&ours.base, Some(&key));
    let theirs = https_server(&node.www, &cert, &tls_key);
    // Even a body signed by the trusted key: TLS fails first.
    node.serve("node.kdl", GOOD, Some(&key));
    let url = format!("{}/node.kdl", theirs.base);
    let e = node.refresh(&url, &Limits::default()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    assert_eq!(node.copy().as_deref(), Some(GOOD));
}

#[test]
fn missing_unknown_and_replayed_signatures_are_refused() {
    let node = Node::new();
    let dir = node.www.parent().unwrap().to_path_buf();
    let key = Key::new(&dir, "ops");
    let stranger = Key::new(&dir, "stranger");
    node.trust(&key, false);
    let server = file_server(&node.www);
    node.install_good(&server.base, Some(&key));
    let url = format!("{}/node.kdl", server.base);

    node.serve("node.kdl", EVIL, None);
    node.assert_refused(&url, &Limits::default(), "no signature on the server");

    node.serve("node.kdl", EVIL, Some(&stranger));
    node.assert_refused(&url, &Limits::default(), "which this node does not trust");

    // A good signature, but older than the last good copy's: a replay.
    let f = node.serve("node.kdl", EVIL, None);
    key.sign(&f, Some("timestamp:1000\tfile:node.kdl"));
    node.assert_refused(&url, &Limits::default(), "an older manifest replayed?");

    // The file itself is gone from the server.
    node.assert_refused(
        &format!("{}/gone.kdl", server.base),
        &Limits::default(),
        "not found on the server",
    );
}

/// Without keys (unsigned bodies taken), so nothing but these checks stands between
/// a misbehaving server and the pool's copy.
#[test]
fn cut_oversized_and_slow_bodies_are_refused() {
    let node = Node::new();
    let server = file_server(&node.www);
    node.install_good(&server.base, None);

    let cut = raw_server(Misbehave::CutBody);
    let e = node
        .refresh(&format!("{cut}/node.kdl"), &Limits::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            BootManifestError::Cut { got: 100, .. } | BootManifestError::Truncated { got: 100, .. }
        ),
        "{e}"
    );
    node.assert_refused(
        &format!("{cut}/node.kdl"),
        &Limits::default(),
        "after 100 bytes",
    );

    // Announced too large (python sends Content-Length), and sent too large.
    node.serve("big.kdl", &"// padding\n".repeat(100_000), None);
    node.assert_refused(
        &format!("{}/big.kdl", server.base),
        &Limits::default(),
        "1100000 bytes announced; the limit is 1048576 bytes",
    );
    let endless = raw_server(Misbehave::Endless);
    node.assert_refused(
        &format!("{endless}/node.kdl"),
        &Limits::default(),
        "more than 1048576 bytes sent",
    );

    // A drip never stalls long enough for a read timeout; the total time ends it.
    let drip = raw_server(Misbehave::SlowDrip);
    let limits = Limits {
        total: Duration::from_secs(2),
        stall: Duration::from_secs(1),
        ..Limits::default()
    };
    let t = Instant::now();
    node.assert_refused(
        &format!("{drip}/node.kdl"),
        &limits,
        "not complete within 2s",
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn without_keys_an_unsigned_body_is_taken_and_a_broken_key_refuses_everything() {
    let node = Node::new();
    let server = file_server(&node.www);
    node.serve("node.kdl", GOOD, None);
    let url = format!("{}/node.kdl", server.base);
    let r = node.refresh(&url, &Limits::default());
    assert!(matches!(r, Ok(Installed::Unsigned)), "{r:?}");
    assert_eq!(node.copy().as_deref(), Some(GOOD));
    let console = std::fs::read_to_string(console_log()).unwrap();
    assert!(
        console.contains(&format!(
            "boot manifests from {url} are taken unsigned, NOT authenticated"
        )),
        "{console}"
    );

    // A key file that is not a key: fail closed, never "no key, take it unsigned".
    let keys = node.pool.join("config/manifest-keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("ops.pub"), "untrusted comment: x\nnot base64\n").unwrap();
    node.serve("node.kdl", EVIL, None);
    node.assert_refused(&url, &Limits::default(), "not a minisign public key");
}
