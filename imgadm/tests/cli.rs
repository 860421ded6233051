//! The `imgadm` binary end to end: one pool serves its images with `imgadm serve`
//! (a real process on loopback), another imports from it, and the SmartOS commands
//! (sources, avail, show, import, install, list, get, delete, vacuum) behave.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use imgadm::{Compression, ImageKind};

fn fails(pool: &Path, args: &[&str]) -> String {
    let o = imgadm(pool, args);
    assert!(!o.status.success(), "imgadm {args:?} should fail");
    String::from_utf8(o.stderr).unwrap()
}

/// `imgadm serve` on a free loopback port, killed on drop.
struct Serve(Child, String);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(pool: &Path) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_imgadm"))
        .arg("--pool")
        .arg(pool)
        .args(["serve", "--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Serve(child, format!("http://{addr}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "imgadm serve did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

fn write_image(dir: &Path, m: &imgadm::ImageManifest, data: &[u8]) -> (String, String) {
    let mp = dir.join(format!("{}.json", m.uuid));
    let fp = dir.join(format!("{}.file", m.uuid));
    fs::write(&mp, serde_json::to_vec(m).unwrap()).unwrap();
    fs::write(&fp, data).unwrap();
    (mp.to_str().unwrap().into(), fp.to_str().unwrap().into())
}

#[test]
fn serve_import_list_get_delete_vacuum() {
    let files = tempfile::tempdir().unwrap();
    let upstream = pool();
    let up = upstream.path();
    // Upstream pool: a zone dataset in two versions and a zvol, installed from files.
    let tar1 = gzip(&tarball(
        &[
            Entry::Dir("./", 0o755),
            Entry::File("./hello", b"v1", 0o644),
        ],
        (0, 0),
    ));
    let tar2 = xz(&tarball(
        &[
            Entry::Dir("./", 0o755),
            Entry::File("./hello", b"v2", 0o644),
        ],
        (0, 0),
    ));
    let (disk, _) = boot_disk_then(&noise(5 << 20, 11));
    let mut z1 = manifest_for(
        &tar1,
        "busybox",
        "1.35",
        ImageKind::ZoneDataset,
        Compression::Gzip,
    );
    let mut z2 = manifest_for(
        &tar2,
        "busybox",
        "1.36",
        ImageKind::ZoneDataset,
        Compression::Xz,
    );
    z1.published_at = "2026-01-01T00:00:00Z".into();
    z2.published_at = "2026-02-01T00:00:00Z".into();
    let mut hvm = manifest_for(
        &disk,
        "debian-hvm",
        "12",
        ImageKind::Zvol,
        Compression::None,
    );
    hvm.published_at = "2026-03-01T00:00:00Z".into();
    for (m, d) in [(&z1, &tar1), (&z2, &tar2), (&hvm, &disk)] {
        let (mp, fp) = write_image(files.path(), m, d);
        assert!(ok(up, &["install", "-m", &mp, "-f", &fp]).contains(&m.uuid.to_string()));
    }
    // Installing twice is refused; a mismatching file installs nothing.
    let (mp, fp) = write_image(files.path(), &z1, &tar1);
    assert!(fails(up, &["install", "-m", &mp, "-f", &fp]).contains("already installed"));
    let bad = manifest_for(
        b"other bytes",
        "bad",
        "1",
        ImageKind::Zvol,
        Compression::None,
    );
    let (mp, _) = write_image(files.path(), &bad, b"other bytes");
    let err = fails(up, &["install", "-m", &mp, "-f", &fp]);
    assert!(
        err.contains("mismatch") && err.contains(&bad.uuid.to_string()),
        "{err}"
    );

    // Listed oldest first, like SmartOS (by published_at).
    let listing = ok(up, &["list", "-H", "-o", "name,version,type"]);
    assert_eq!(
        listing,
        "busybox     1.35  zone-dataset\nbusybox     1.36  zone-dataset\ndebian-hvm  12    zvol\n"
    );

    let srv = serve(up);
    let down = pool();
    let dn = down.path();
    assert!(fails(dn, &["sources", "-a", "http://127.0.0.1:1"]).contains("not added"));
    ok(dn, &["sources", "-a", &srv.1]);
    assert_eq!(ok(dn, &["sources"]), format!("{}\n", srv.1));
    assert!(fails(dn, &["sources", "-a", &srv.1]).contains("already"));

    let avail: Vec<serde_json::Value> = serde_json::from_str(&ok(dn, &["avail", "-j"])).unwrap();
    assert_eq!(avail.len(), 3);
    let avail = ok(dn, &["avail", "-o", "uuid,name"]);
    assert!(
        avail.starts_with("UUID") && avail.contains(&hvm.uuid.to_string()),
        "{avail}"
    );
    let shown: serde_json::Value = serde_json::from_str(&ok(dn, &["show", "busybox"])).unwrap();
    assert_eq!(shown["version"], "1.36", "bare name = newest version");

    // Import by name (newest), by name@version, and by UUID.
    ok(dn, &["import", "busybox"]);
    ok(dn, &["import", "busybox@1.35"]);
    ok(dn, &["import", &hvm.uuid.to_string()]);
    assert!(ok(dn, &["import", "busybox@1.35"]).contains("already installed"));
    assert!(fails(dn, &["import", "nope@9"]).contains("nope@9"));
    let got: serde_json::Value = serde_json::from_str(&ok(dn, &["get", "busybox@1.36"])).unwrap();
    let root = Path::new(got["path"].as_str().unwrap());
    assert_eq!(fs::read(root.join("hello")).unwrap(), b"v2");
    let got: serde_json::Value =
        serde_json::from_str(&ok(dn, &["get", &hvm.uuid.to_string()])).unwrap();
    assert_eq!(fs::read(got["path"].as_str().unwrap()).unwrap(), disk);
    assert_eq!(
        got["manifest"]["files"][0]["sha256"],
        hvm.file().sha256.clone().unwrap()
    );
    assert_eq!(ok(dn, &["list", "-j"]).matches("\"uuid\"").count(), 3);

    // An instance using busybox@1.36 (as init records it) blocks its deletion.
    let inst = uuid::Uuid::new_v4().to_string();
    fs::create_dir_all(spec::pool::instance_dir(dn, &inst)).unwrap();
    let record = spec::pool::InstanceRecord {
        image_uuid: z2.uuid.to_string(),
        ..spec::pool::InstanceRecord::provisioning(
            inst.clone(),
            spec::InstanceSpec::zone("web01", spec::ImageRef::Uuid(z2.uuid)),
        )
    };
    fs::write(
        spec::pool::state_path(dn, &inst),
        serde_json::to_string(&record).unwrap(),
    )
    .unwrap();
    let err = fails(dn, &["delete", "busybox@1.36"]);
    assert!(err.contains("in use by web01"), "{err}");
    ok(dn, &["delete", "busybox@1.35"]);
    assert!(fails(dn, &["get", "busybox@1.35"]).contains("not installed"));

    let dry = ok(dn, &["vacuum", "-n"]);
    assert!(
        dry.contains("Would delete") && dry.contains(&hvm.uuid.to_string()),
        "{dry}"
    );
    assert!(!dry.contains(&z2.uuid.to_string()), "{dry}");
    assert_eq!(
        ok(dn, &["list", "-H", "-o", "uuid"]).lines().count(),
        2,
        "dry run deleted"
    );
    let done = ok(dn, &["vacuum"]);
    assert!(done.contains(&hvm.uuid.to_string()), "{done}");
    assert_eq!(
        ok(dn, &["list", "-H", "-o", "uuid"]),
        format!("{}\n", z2.uuid)
    );

    ok(dn, &["sources", "-d", &srv.1]);
    assert_eq!(ok(dn, &["sources"]), "");
    assert!(fails(dn, &["list", "-o", "bogus"]).contains("bogus"));
}

#[test]
fn serve_speaks_imgapi_paging_ranges_and_404() {
    let files = tempfile::tempdir().unwrap();
    let p = pool();
    let mut uuids = Vec::new();
    for i in 0..5 {
        let (d, _) = boot_disk_then(&noise(1000 + i, i as u64));
        let mut m = manifest_for(
            &d,
            "img",
            &format!("1.{i}"),
            ImageKind::Zvol,
            Compression::None,
        );
        m.published_at = format!("2026-01-0{}T00:00:00Z", i + 1);
        let (mp, fp) = write_image(files.path(), &m, &d);
        ok(p.path(), &["install", "-m", &mp, "-f", &fp]);
        uuids.push((m.uuid, d));
    }
    let srv = serve(p.path());
    let http = reqwest::blocking::Client::new();
    let ping: serde_json::Value = http
        .get(format!("{}/ping", srv.1))
        .send()
        .unwrap()
        .bytes()
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    assert_eq!(ping["ping"], "pong");
    // Pages of two follow the marker to the end, in publication order.
    let mut seen = Vec::new();
    let mut marker = String::new();
    loop {
        let page: Vec<serde_json::Value> = http
            .get(format!("{}/images?limit=2{marker}", srv.1))
            .send()
            .unwrap()
            .bytes()
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap();
        seen.extend(page.iter().map(|m| m["uuid"].as_str().unwrap().to_string()));
        if page.len() < 2 {
            break;
        }
        marker = format!("&marker={}", page[1]["uuid"].as_str().unwrap());
    }
    let want: Vec<String> = uuids.iter().map(|(u, _)| u.to_string()).collect();
    assert_eq!(seen, want);
    // The client library pages the same way.
    assert_eq!(
        imgadm::SourceClient::new(&srv.1)
            .unwrap()
            .list()
            .unwrap()
            .len(),
        5
    );
    let filtered: Vec<serde_json::Value> = http
        .get(format!("{}/images?version=1.3", srv.1))
        .send()
        .unwrap()
        .bytes()
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    assert_eq!(filtered.len(), 1);

    let (u, d) = &uuids[2];
    let r = http
        .get(format!("{}/images/{u}/file", srv.1))
        .header("Range", "bytes=100-")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-{}/{}", d.len() - 1, d.len())
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &d[100..]);
    let r = http
        .get(format!("{}/images/{u}/file", srv.1))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), &d[..]);
    let r = http
        .get(format!("{}/images/{u}/file", srv.1))
        .header("Range", format!("bytes={}-", d.len() + 100))
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);
    let missing = uuid::Uuid::new_v4();
    for path in [
        format!("/images/{missing}"),
        format!("/images/{missing}/file"),
        "/images/not-a-uuid".into(),
    ] {
        let r = http.get(format!("{}{path}", srv.1)).send().unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: serde_json::Value = r
            .bytes()
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap();
        assert_eq!(body["code"], "ResourceNotFound");
    }
}

#[test]
fn sources_edit_and_env_sources() {
    let p = pool();
    let dir = tempfile::tempdir().unwrap();
    // An "editor" that appends a line and a comment to the file it is given.
    let editor = dir.path().join("editor");
    fs::write(
        &editor,
        "#!/bin/sh\nprintf '# mine\\nhttp://images.example:8080/\\n' >> \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&editor, fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_imgadm"))
        .arg("--pool")
        .arg(p.path())
        .args(["sources", "-e"])
        .env("EDITOR", &editor)
        .env_remove("SKERRY_SOURCES")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ok(p.path(), &["sources"]), "http://images.example:8080\n");
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(p.path().join("config/sources.json")).unwrap()).unwrap();
    assert_eq!(cfg["sources"][0]["url"], "http://images.example:8080");

    // SKERRY_SOURCES adds sources after the configured ones, without saving them.
    let o = Command::new(env!("CARGO_BIN_EXE_imgadm"))
        .arg("--pool")
        .arg(p.path())
        .args(["sources", "-j"])
        .env("SKERRY_SOURCES", "http://a.example,http://b.example/")
        .output()
        .unwrap();
    let all: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        all,
        [
            "http://images.example:8080",
            "http://a.example",
            "http://b.example"
        ]
    );
    assert_eq!(ok(p.path(), &["sources"]).lines().count(), 1);
    assert!(fails(p.path(), &["sources", "-a", "ftp://nope"]).contains("http"));
}

#[test]
fn killed_import_leaves_nothing_listed_and_resumes_with_range() {
    let (data, _) = boot_disk_then(&noise(4 << 20, 21));
    let m = manifest_for(&data, "slow", "1", ImageKind::Zvol, Compression::None);
    let b = Behaviour {
        slow: true,
        ..Default::default()
    };
    let srv = TestServer::start(vec![(m.clone(), data.clone())], b);
    let p = pool();
    ok(p.path(), &["sources", "-a", &srv.url]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgadm"))
        .arg("--pool")
        .arg(p.path())
        .args(["import", "slow@1"])
        .env_remove("SKERRY_SOURCES")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = p
        .path()
        .join("images/.partial")
        .join(m.uuid.to_string())
        .join("file");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::metadata(&part).map(|md| md.len()).unwrap_or(0) < 256 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the import never started writing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();
    assert_eq!(
        ok(p.path(), &["list", "-H"]),
        "",
        "a killed import must not be listed"
    );
    let kept = fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept < data.len() as u64);

    ok(p.path(), &["import", "slow@1"]);
    let got: serde_json::Value = serde_json::from_str(&ok(p.path(), &["get", "slow@1"])).unwrap();
    assert_eq!(fs::read(got["path"].as_str().unwrap()).unwrap(), data);
    let ranges = srv.file_ranges();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    let resumed_at: u64 = ranges[1]
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert_eq!(
        resumed_at, kept,
        "the second import asks only for what is missing"
    );
}

#[test]
fn completions_and_man_page_need_no_pool() {
    let pool = Path::new("/nonexistent/imgadm-no-pool");
    let bash = ok(pool, &["completions", "bash"]);
    assert!(
        bash.contains("complete -F _imgadm") && bash.contains("vacuum"),
        "{bash}"
    );
    let zsh = ok(pool, &["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef imgadm"), "{zsh}");
    let man = ok(pool, &["man"]);
    assert!(
        man.contains(".TH imgadm 1") && man.contains("import") && man.contains("sources"),
        "{man}"
    );
    let o = imgadm(pool, &["completions", "tcsh"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
