//! Test helpers: an independent IMGAPI server (plain std sockets, written here, not
//! sharing code with `imgadm serve`) that can corrupt, truncate and drop, manifests
//! for in-memory files, and tarball builders that write hostile entries verbatim.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use imgadm::{Compression, ImageKind, ImageManifest};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A manifest for `data`.
pub fn manifest_for(
    data: &[u8],
    name: &str,
    version: &str,
    kind: ImageKind,
    compression: Compression,
) -> ImageManifest {
    serde_json::from_value(serde_json::json!({
        "v": 2,
        "uuid": Uuid::new_v4(),
        "name": name,
        "version": version,
        "type": kind,
        "os": "other",
        "published_at": "2026-01-01T00:00:00Z",
        "files": [{
            "sha256": hex::encode(Sha256::digest(data)),
            "size": data.len(),
            "compression": compression,
        }],
    }))
    .unwrap()
}

/// Deterministic pseudo-random bytes (incompressible enough, cheap to make).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What the test server does to file downloads.
#[derive(Default)]
pub struct Behaviour {
    /// Flip one byte in the middle of every file sent.
    pub corrupt: bool,
    /// Cut the next N file transfers after this many bytes (head promises all).
    pub drop_after: Option<usize>,
    /// How many transfers to cut.
    pub drops: AtomicUsize,
    /// Answer Range requests with the whole file (200).
    pub ignore_range: bool,
    /// Send files in 64 KiB pieces, 20 ms apart (time to kill an importer midway).
    pub slow: bool,
}

/// An IMGAPI server on 127.0.0.1, one thread per connection, `Connection: close`.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Request lines received, with their Range header if any (`GET /x [bytes=5-]`).
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl TestServer {
    /// Serves `images` (manifest, file bytes) with `behaviour`.
    pub fn start(images: Vec<(ImageManifest, Vec<u8>)>, behaviour: Behaviour) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let images = Arc::new(images);
        let behaviour = Arc::new(behaviour);
        {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (images, behaviour, requests) =
                        (images.clone(), behaviour.clone(), requests.clone());
                    std::thread::spawn(move || {
                        let _ = handle(conn, &images, &behaviour, &requests);
                    });
                }
            });
        }
        TestServer {
            url: format!("http://127.0.0.1:{port}"),
            requests,
            stop,
            port,
        }
    }

    /// The Range headers of file requests, in order ("" for none).
    pub fn file_ranges(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains("/file"))
            .map(|r| {
                r.split_once('[')
                    .map(|(_, b)| b.trim_end_matches(']').to_string())
                    .unwrap_or_default()
            })
            .collect()
    }
}

fn handle(
    conn: TcpStream,
    images: &[(ImageManifest, Vec<u8>)],
    b: &Behaviour,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    requests.lock().unwrap().push(match &range {
        Some(r) => format!("GET {path} [{r}]"),
        None => format!("GET {path}"),
    });
    let mut out = conn;
    let path = path.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let find = |id: &str| images.iter().find(|(m, _)| m.uuid.to_string() == id);
    match parts.as_slice() {
        ["ping"] => respond(&mut out, 200, "application/json", br#"{"ping":"pong"}"#),
        ["images"] => {
            let all: Vec<&ImageManifest> = images.iter().map(|(m, _)| m).collect();
            respond(
                &mut out,
                200,
                "application/json",
                &serde_json::to_vec(&all).unwrap(),
            )
        }
        ["images", id] => match find(id) {
            Some((m, _)) => respond(
                &mut out,
                200,
                "application/json",
                &serde_json::to_vec(m).unwrap(),
            ),
            None => respond(
                &mut out,
                404,
                "application/json",
                br#"{"code":"ResourceNotFound"}"#,
            ),
        },
        ["images", id, "file"] => match find(id) {
            Some((_, data)) => send_file(&mut out, data, range.as_deref(), b),
            None => respond(
                &mut out,
                404,
                "application/json",
                br#"{"code":"ResourceNotFound"}"#,
            ),
        },
        _ => respond(&mut out, 404, "text/plain", b"no such route"),
    }
}

fn respond(out: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(body)?;
    out.flush()
}

fn send_file(
    out: &mut TcpStream,
    data: &[u8],
    range: Option<&str>,
    b: &Behaviour,
) -> std::io::Result<()> {
    let mut data = data.to_vec();
    if b.corrupt && !data.is_empty() {
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
    }
    let start = range
        .filter(|_| !b.ignore_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    let (status, body) = match start {
        Some(s) if s < data.len() => (206, &data[s..]),
        _ => (200, &data[..]),
    };
    write!(out, "HTTP/1.1 {status} X\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n", body.len())?;
    if status == 206 {
        write!(
            out,
            "Content-Range: bytes {}-{}/{}\r\n",
            start.unwrap(),
            data.len() - 1,
            data.len()
        )?;
    }
    write!(out, "\r\n")?;
    let cut = b.drop_after.filter(|_| {
        b.drops
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    });
    match cut {
        Some(n) => {
            out.write_all(&body[..n.min(body.len())])?;
            out.flush()?;
            // A hard cut, as when a cable is pulled or the server dies.
            out.shutdown(Shutdown::Both)
        }
        None if b.slow => {
            for piece in body.chunks(64 * 1024) {
                out.write_all(piece)?;
                out.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(())
        }
        None => {
            out.write_all(body)?;
            out.flush()
        }
    }
}

/// One entry of a hand-made tarball.
pub enum Entry<'a> {
    /// A regular file.
    File(&'a str, &'a [u8], u32),
    /// A directory.
    Dir(&'a str, u32),
    /// A symlink: path, target.
    Symlink(&'a str, &'a str),
    /// A hard link: path, target.
    HardLink(&'a str, &'a str),
    /// A character device node.
    CharDev(&'a str),
}

/// A tarball with exactly these entries, names written verbatim (the `tar` crate's
/// own builder refuses `..`, which is what these tests need to produce).
pub fn tarball(entries: &[Entry], owner: (u64, u64)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_700_000_000);
        let (name, data, kind, mode, link): (&str, &[u8], tar::EntryType, u32, Option<&str>) =
            match *e {
                Entry::File(n, d, m) => (n, d, tar::EntryType::Regular, m, None),
                Entry::Dir(n, m) => (n, b"", tar::EntryType::Directory, m, None),
                Entry::Symlink(n, t) => (n, b"", tar::EntryType::Symlink, 0o777, Some(t)),
                Entry::HardLink(n, t) => (n, b"", tar::EntryType::Link, 0o644, Some(t)),
                Entry::CharDev(n) => (n, b"", tar::EntryType::Char, 0o666, None),
            };
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            let l = &mut h.as_old_mut().linkname;
            l[..t.len()].copy_from_slice(t.as_bytes());
        }
        if let Entry::CharDev(_) = e {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zstd of `data`.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// xz of `data`.
pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    liblzma::read::XzEncoder::new(data, 1)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// bzip2 of `data` by Debian's `bzip2` (an encoder independent of ours), as two
/// concatenated streams the way pbzip2 and lbzip2 write them.
pub fn bzip2(data: &[u8]) -> Vec<u8> {
    let half = data.len() / 2;
    let mut out = Vec::new();
    for part in [&data[..half], &data[half..]] {
        let mut child = std::process::Command::new("bzip2")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("bzip2 (tests/deps/imgadm.txt)");
        let mut stdin = child.stdin.take().unwrap();
        let part = part.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&part).unwrap());
        let o = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(o.status.success(), "bzip2 failed");
        out.extend(o.stdout);
    }
    out
}

/// A fresh pool directory, removed when dropped.
pub fn pool() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("imgadm-test-")
        .tempdir()
        .unwrap()
}

/// Runs the `imgadm` binary on `pool` (the environment's pool and sources ignored).
pub fn imgadm(pool: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_imgadm"))
        .arg("--pool")
        .arg(pool)
        .args(args)
        .env_remove("SKERRY_SOURCES")
        .env_remove("SKERRY_POOL")
        .output()
        .unwrap()
}

/// [`imgadm`], which must succeed; its stdout.
pub fn ok(pool: &std::path::Path, args: &[&str]) -> String {
    let o = imgadm(pool, args);
    assert!(
        o.status.success(),
        "imgadm {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A zvol disk imgadm accepts: a real whole-disk ext4 with `/boot/vmlinuz-test`
/// ([`testkit::boot_disk`]) followed by `tail` (beyond the filesystem, which ignores
/// it). Returns the disk and the offset where `tail` starts.
pub fn boot_disk_then(tail: &[u8]) -> (Vec<u8>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = testkit::boot_disk(&dir.path().join("boot.img"));
    let at = disk.len();
    disk.extend_from_slice(tail);
    (disk, at)
}
