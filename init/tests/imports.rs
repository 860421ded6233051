//! Imports run in `imgadm` children (`import_child.rs`), against image servers written
//! here that misbehave on purpose: init in host mode (private bus, real zones) fails
//! each hostile image's instance with a message naming the image (a decompression
//! that outgrows node.kdl's `import-memory` among them), leaves nothing in the store
//! and runs the other instance; a child killed at its memory cap, one run
//! out of time and one that crashes are each reported as such.
//!
//! Root (cgroups, zones). Build `imgadm`, `init` and `zone` first.

mod common;

use common::*;
use skerry_init::import_child::{ChildImports, ChildLimits};
use skerry_init::runtime::Images;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::http::head;
use uuid::Uuid;

/// A server answering every request with `answer(path, connection)`.
fn hostile(
    answer: impl Fn(&str, &mut TcpStream) -> std::io::Result<()> + Send + Sync + 'static,
) -> String {
    testkit::http::hostile(answer).0
}

fn json(out: &mut TcpStream, v: &serde_json::Value) -> std::io::Result<()> {
    let body = v.to_string();
    head(out, 200, Some(body.len()))?;
    out.write_all(body.as_bytes())
}

/// A zvol manifest for `data`, named `name@1`.
fn manifest(uuid: Uuid, name: &str, data: &[u8], compression: &str) -> serde_json::Value {
    use sha2::Digest;
    serde_json::json!({
        "v": 2, "uuid": uuid, "name": name, "version": "1", "type": "zvol",
        "os": "linux", "published_at": "2026-01-01T00:00:00Z",
        "files": [{"sha256": hex::encode(sha2::Sha256::digest(data)),
                   "size": data.len(), "compression": compression}],
    })
}

/// What is in `<pool>/images`, `.partial` listed entry by entry.
fn store_entries(pool: &Path) -> Vec<String> {
    let images = pool.join("images");
    let mut out: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".partial")
        .collect();
    if let Ok(rd) = std::fs::read_dir(images.join(".partial")) {
        out.extend(rd.map(|e| format!(".partial/{}", e.unwrap().file_name().to_string_lossy())));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_image_servers_fail_their_instances_and_the_node_goes_on() {
    let (huge, bad_sum, range) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (bomb, drip) = (Uuid::new_v4(), Uuid::new_v4());
    let data = vec![7u8; 64 << 10];
    // 200 MiB of zeros whose xz decoder needs a 192 MiB dictionary (within imgadm's
    // 256 MiB xz bound), all of it touched, against children capped at 160 MiB below.
    let work = tempfile::tempdir().unwrap();
    let xz = work.path().join("bomb.xz");
    let sh = format!(
        "head -c {} /dev/zero | xz --lzma2=dict=192MiB > {}",
        200 << 20,
        xz.display()
    );
    assert!(std::process::Command::new("sh")
        .args(["-c", &sh])
        .status()
        .unwrap()
        .success());
    let bomb_file = std::fs::read(&xz).unwrap();
    let mut bomb_manifest = manifest(bomb, "bomb", &bomb_file, "xz");
    bomb_manifest["image_size"] = 200.into();
    let range_manifest = manifest(range, "range", &data, "none");
    let m2 = range_manifest.clone();
    let head_of_file = data[..1000].to_vec();
    let url = hostile(move |path, out| {
        if path == format!("/images/{huge}") {
            // 9 MiB of JSON, no length announced: cut at the 8 MiB bound.
            head(out, 200, None)?;
            out.write_all(b"[")?;
            let chunk = "{\"a\":1},".repeat(8192);
            for _ in 0..(9 << 20) / chunk.len() {
                out.write_all(chunk.as_bytes())?;
            }
            out.write_all(b"{}]")
        } else if path == format!("/images/{bad_sum}") {
            json(out, &manifest(bad_sum, "badsum", &data, "none"))
        } else if path == format!("/images/{bad_sum}/file") {
            head(out, 200, Some(data.len()))?;
            out.write_all(&vec![8u8; data.len()])
        } else if path == format!("/images/{bomb}") {
            json(out, &bomb_manifest)
        } else if path == format!("/images/{bomb}/file") {
            head(out, 200, Some(bomb_file.len()))?;
            out.write_all(&bomb_file)
        } else if path == format!("/images/{drip}") {
            // A manifest a byte every 400 ms: cut at imgadm's 60 s for a JSON answer.
            let body = manifest(drip, "drip", &data, "none").to_string();
            head(out, 200, Some(body.len()))?;
            for b in body.as_bytes() {
                out.write_all(std::slice::from_ref(b))?;
                std::thread::sleep(Duration::from_millis(400));
            }
            Ok(())
        } else if path == format!("/images/{range}") {
            json(out, &m2)
        } else if path == format!("/images/{range}/file") {
            // Whatever range is asked, even none after the retry from byte 0.
            head(out, 416, Some(0))
        } else if path.starts_with("/images?") {
            // A listing that never ends: every page full, each ending on a new UUID.
            let page = path.split("marker=").nth(1).map_or(0, |m| {
                let m = m.split('&').next().unwrap_or(m);
                u64::from_str_radix(m.rsplit('-').next().unwrap(), 16).unwrap_or(0) / 200 + 1
            });
            let rows: Vec<serde_json::Value> = (0..200)
                .map(|i| {
                    let u = format!("00000000-0000-4000-8000-{:012x}", page * 200 + i);
                    manifest(u.parse().unwrap(), "other", b"x", "none")
                })
                .collect();
            json(out, &serde_json::Value::Array(rows))
        } else {
            head(out, 404, Some(0))
        }
    });
    let pool = TestPool::new();
    imgadm::ImageStore::open(pool.path())
        .unwrap()
        .add_source(&url)
        .unwrap();
    // An earlier attempt's partial download of `range`: the import resumes it and
    // meets the 416.
    let partial = pool.path().join(format!("images/.partial/{range}"));
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("manifest.json"), range_manifest.to_string()).unwrap();
    std::fs::write(partial.join("file"), &head_of_file).unwrap();
    let before: Vec<String> = store_entries(pool.path())
        .into_iter()
        .filter(|e| !e.starts_with(".partial"))
        .collect();

    let hostile_images = [
        (
            "huge",
            huge.to_string(),
            "larger than the 8388608 bytes allowed",
        ),
        ("badsum", bad_sum.to_string(), "sha256"),
        ("range", range.to_string(), "416"),
        ("endless", "endless@1".to_string(), "past 500 pages"),
        ("drip", drip.to_string(), "did not arrive within 60 s"),
        // Only a child can be killed at a cap: imported in init, this one would run.
        (
            "bomb",
            bomb.to_string(),
            "killed by the kernel at its memory cap of 160 MiB",
        ),
    ];
    // Every import at once: the slow ones (the drip's 60 s) overlap.
    let node_kdl = "import-memory \"160M\"\napply imports=8\n";
    std::fs::write(pool.path().join("config/node.kdl"), node_kdl).unwrap();
    for (name, image, _) in &hostile_images {
        pool.manifest(
            &format!("{name}.kdl"),
            &format!("zone {name} {{ image \"{image}\"; }}\n"),
        );
    }
    pool.manifest("ok.kdl", "zone ok { image \"busybox@1.36\"; }\n");
    let bus = node_bus();
    let init = Init::start_with(&pool, &bus, &zone_bin());
    init.wait_line("skerry: node ready", Duration::from_secs(180));
    let conn = connect(&bus).await;
    wait_state(&conn, "ok", "running", Duration::from_secs(60)).await;
    for (name, image, why) in &hostile_images {
        wait_state(&conn, name, "failed", Duration::from_secs(120)).await;
        let rows: Vec<spec::api::InstanceSummary> = call(&conn, "List", &()).await.unwrap();
        let row = rows.iter().find(|r| &r.name == name).unwrap();
        assert!(
            row.reason.contains(&format!("image {image}")) && row.reason.contains(why),
            "{name}: {}",
            row.reason
        );
    }
    // init is the same process, still answering, and the good zone still runs.
    assert!(skerry_init::monitor::watch::alive(init.pid()));
    assert_eq!(state_of(&conn, "ok").await.unwrap().0, "running");
    assert_eq!(store_entries(pool.path()), before, "the store changed");
}

/// A store whose source is `imgadm serve`'s router over `source`'s images.
fn serve(source: &Path) -> String {
    let store = imgadm::ImageStore::open(source).unwrap();
    serve_app(imgadm::serve::router(store))
}

/// Installs `file` (compressed as `compression`, a disk of `disk_mib`) in `source`.
fn install(source: &Path, file: &Path, name: &str, compression: &str, disk_mib: u64) -> Uuid {
    let mut m = testkit::image_manifest(file, name, "1", "zvol");
    m["files"][0]["compression"] = compression.into();
    m["image_size"] = disk_mib.into();
    let m = imgadm::ImageManifest::from_json(m.to_string().as_bytes(), "test").unwrap();
    imgadm::ImageStore::open(source)
        .unwrap()
        .install_file(&m, file)
        .unwrap();
    m.uuid
}

fn child_imports(pool: &Path, url: &str, limits: ChildLimits) -> ChildImports {
    let store = imgadm::ImageStore::open_with_sources(pool, &[url.to_string()]).unwrap();
    ChildImports::new(store, testkit::sibling_bin("imgadm"), vec![url.to_string()])
        .with_limits(limits)
}

fn image(s: &str) -> spec::ImageRef {
    imgadm::parse_checked_ref(s).unwrap()
}

#[test]
fn a_child_killed_at_its_memory_cap_is_reported_as_such() {
    let source = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A boot disk (imgadm imports only disks with a kernel on an ext4 /boot) padded
    // with zeros to 128 MiB, by `xz -9`: a few KiB whose decoder needs a 64 MiB
    // dictionary, all of it touched as the disk comes out.
    let boot = work.path().join("boot.raw");
    testkit::boot_disk(&boot);
    let file = work.path().join("disk.xz");
    let sh = format!(
        "{{ cat {}; head -c {} /dev/zero; }} | xz -9 > {}",
        boot.display(),
        (128 << 20) - std::fs::metadata(&boot).unwrap().len(),
        file.display()
    );
    assert!(std::process::Command::new("sh")
        .args(["-c", &sh])
        .status()
        .unwrap()
        .success());
    install(source.path(), &file, "bomb", "xz", 128);
    let url = serve(source.path());
    let pool = tempfile::tempdir().unwrap();
    let limits = ChildLimits {
        memory: 32 << 20,
        ..ChildLimits::default()
    };
    let err = child_imports(pool.path(), &url, limits)
        .ensure(&image("bomb@1"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("image bomb@1: ")
            && err.contains("killed by the kernel at its memory cap of 32 MiB"),
        "{err}"
    );
    assert_eq!(store_entries(pool.path()), Vec::<String>::new());
    // Under the default cap the same image imports.
    let img = child_imports(pool.path(), &url, ChildLimits::default())
        .ensure(&image("bomb@1"))
        .unwrap();
    assert!(img.zvol);
}

#[test]
fn a_child_past_its_time_limit_is_killed_and_leaves_nothing() {
    let uuid = Uuid::new_v4();
    let data = vec![1u8; 1 << 20];
    let m = manifest(uuid, "slow", &data, "none");
    let url = hostile(move |path, out| {
        if path.ends_with("/file") {
            // One byte a second: well within imgadm's own per-read timeout.
            head(out, 200, Some(data.len()))?;
            for b in &data {
                out.write_all(std::slice::from_ref(b))?;
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(())
        } else {
            json(out, &m)
        }
    });
    let pool = tempfile::tempdir().unwrap();
    let limits = ChildLimits {
        time: Duration::from_secs(2),
        ..ChildLimits::default()
    };
    let started = Instant::now();
    let err = child_imports(pool.path(), &url, limits)
        .ensure(&image(&uuid.to_string()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("image {uuid}")) && err.contains("time limit of 2 s"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(store_entries(pool.path()), Vec::<String>::new());
}

#[test]
fn a_crashing_child_is_an_import_error() {
    let work = tempfile::tempdir().unwrap();
    let fake = work.path().join("imgadm");
    testkit::write_executable(
        &fake,
        "#!/bin/sh\necho 'half a thought' >&2\nkill -SEGV $$\n",
    );
    let pool = tempfile::tempdir().unwrap();
    let store = imgadm::ImageStore::open(pool.path()).unwrap();
    let err = ChildImports::new(store, fake, Vec::new())
        .ensure(&image("any@1"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("image any@1: the import process crashed (SIGSEGV)")
            && err.contains("half a thought"),
        "{err}"
    );
}

/// The child's cost: the same small image imported in-process (the imgadm library, as
/// init did before) and by an `imgadm` child, from one server, in this run.
#[test]
fn import_overhead_of_a_child_process() {
    let source = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("disk.raw");
    testkit::boot_disk(&file);
    install(source.path(), &file, "small", "none", 8);
    let url = serve(source.path());
    let runs = 5;
    let mut inproc = Duration::ZERO;
    let mut child = Duration::ZERO;
    for _ in 0..runs {
        let pool = tempfile::tempdir().unwrap();
        let store =
            imgadm::ImageStore::open_with_sources(pool.path(), std::slice::from_ref(&url)).unwrap();
        let t = Instant::now();
        store.import_ref(&image("small@1")).unwrap();
        inproc += t.elapsed();
        let pool = tempfile::tempdir().unwrap();
        let c = child_imports(pool.path(), &url, ChildLimits::default());
        let t = Instant::now();
        c.ensure(&image("small@1")).unwrap();
        child += t.elapsed();
    }
    let (a, b) = (inproc / runs, child / runs);
    eprintln!(
        "import of an 8 MiB image, mean of {runs}: in-process {:.1} ms, imgadm child {:.1} ms \
         (ratio {:.2}x, +{:.1} ms)",
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        b.as_secs_f64() / a.as_secs_f64(),
        (b.as_secs_f64() - a.as_secs_f64()) * 1e3
    );
    assert!(b < a + Duration::from_secs(1), "{b:?} vs {a:?}");
}
