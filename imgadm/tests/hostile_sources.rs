//! Sources that misbehave on purpose, each a real HTTP server on loopback started
//! here: a 416 answered forever, a listing too large to hold, a listing that never
//! ends, a server that drips its answer. Every read is bounded: each ends in a clear
//! error, soon. And a failed import leaves nothing in the store, not even its lock.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::http::{head, hostile};

use common::*;
use imgadm::StoreError;
use imgadm::{parse_ref, Compression, ImageKind, ImageStore, SourceClient, SourceLimits};
use uuid::Uuid;

#[test]
fn a_416_answered_forever_is_an_error_after_one_retry() {
    let (url, requests) = hostile(|_, out| head(out, 416, Some(0)));
    let client = SourceClient::new(&url).unwrap();
    // A resumed download (offset > 0) retries once from 0; a 416 to that is final.
    let err = client
        .open_file(&Uuid::new_v4(), 10)
        .err()
        .expect("an error");
    assert!(
        matches!(err, StoreError::HttpStatus { status: 416, .. }),
        "{err}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[test]
fn a_listing_larger_than_the_limit_is_refused_without_reading_it_all() {
    let limits = SourceLimits {
        max_json_bytes: 1 << 20,
        ..SourceLimits::default()
    };
    // With a Content-Length: refused on the head.
    let (url, _) = hostile(|_, out| head(out, 200, Some(64 << 20)));
    let client = SourceClient::new(&url).unwrap().with_limits(limits);
    let err = client.list().unwrap_err().to_string();
    assert!(
        err.contains("larger than the 1048576 bytes allowed"),
        "{err}"
    );
    // Without one (the body ends when the connection closes): cut at the limit. The
    // server would send 64 MiB of a valid JSON array.
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let (url, _) = hostile(move |_, out| {
        head(out, 200, None)?;
        out.write_all(b"[")?;
        let chunk = "0,".repeat(32 << 10);
        for _ in 0..(64 << 20) / chunk.len() {
            out.write_all(chunk.as_bytes())?;
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
        out.write_all(b"0]")
    });
    let client = SourceClient::new(&url).unwrap().with_limits(limits);
    let err = client.list().unwrap_err().to_string();
    assert!(
        err.contains("larger than the 1048576 bytes allowed"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        sent.load(Ordering::SeqCst) < 32 << 20,
        "the client read on: {} bytes sent",
        sent.load(Ordering::SeqCst)
    );
}

#[test]
fn a_listing_that_never_ends_stops_at_the_page_limit() {
    // Every page is full of fresh, valid manifests (for 50 pages, so that a client
    // without a page limit would come back with 10000 images rather than hang).
    let served = AtomicUsize::new(0);
    let (url, requests) = hostile(move |_, out| {
        let n = if served.fetch_add(1, Ordering::SeqCst) < 50 {
            imgadm::sources::PAGE_LIMIT
        } else {
            0
        };
        let page: Vec<imgadm::ImageManifest> = (0..n)
            .map(|i| {
                let v = i.to_string();
                manifest_for(b"x", "endless", &v, ImageKind::Zvol, Compression::None)
            })
            .collect();
        let body = serde_json::to_vec(&page).unwrap();
        head(out, 200, Some(body.len()))?;
        out.write_all(&body)
    });
    let limits = SourceLimits {
        max_pages: 5,
        ..SourceLimits::default()
    };
    let client = SourceClient::new(&url).unwrap().with_limits(limits);
    let err = client.list().unwrap_err().to_string();
    assert!(err.contains("goes on past 5 pages"), "{err}");
    assert_eq!(requests.load(Ordering::SeqCst), 5);
}

#[test]
fn a_server_dripping_its_answer_runs_out_of_time() {
    // 100 bytes, one every 100 ms: each read is quick, the answer takes 10 s.
    let (url, _) = hostile(|_, out| {
        let body = format!("[{}0]", "0,".repeat(48));
        head(out, 200, Some(body.len()))?;
        for b in body.bytes() {
            out.write_all(&[b])?;
            out.flush()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
    let limits = SourceLimits {
        json_time: Duration::from_secs(1),
        ..SourceLimits::default()
    };
    let client = SourceClient::new(&url).unwrap().with_limits(limits);
    let started = Instant::now();
    let err = client.list().unwrap_err().to_string();
    assert!(err.contains("did not arrive within 1 s"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_failed_import_leaves_nothing_not_even_its_lock() {
    let (data, _) = boot_disk_then(&noise(1 << 20, 7));
    let m = manifest_for(&data, "bad", "1", ImageKind::Zvol, Compression::None);
    let corrupt = Behaviour {
        corrupt: true,
        ..Default::default()
    };
    let srv = TestServer::start(vec![(m.clone(), data.clone())], corrupt);
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap();
    store.add_source(&srv.url).unwrap();
    let err = store.import_ref(&parse_ref("bad")).unwrap_err();
    assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");
    let left: Vec<String> = std::fs::read_dir(store.images_dir().join(".partial"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left in the store: {left:?}");

    // A good import leaves no lock behind either.
    let good = TestServer::start(vec![(m.clone(), data)], Behaviour::default());
    let store = ImageStore::open(pool.path()).unwrap();
    store.remove_source(&srv.url).unwrap();
    store.add_source(&good.url).unwrap();
    store.import_ref(&parse_ref("bad")).unwrap();
    let left = std::fs::read_dir(store.images_dir().join(".partial"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

#[test]
fn a_file_dripping_past_its_time_is_cut_and_kept_to_resume() {
    // 4 MiB in 64 KiB pieces 20 ms apart: 1.3 s, more than the 300 ms allowed.
    let data = noise(4 << 20, 8);
    let m = manifest_for(&data, "drip", "1", ImageKind::Zvol, Compression::None);
    let slow = Behaviour {
        slow: true,
        ..Default::default()
    };
    let srv = TestServer::start(vec![(m.clone(), data)], slow);
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap();
    let limits = SourceLimits {
        file_grace: Duration::from_millis(300),
        file_min_rate: u64::MAX,
        ..SourceLimits::default()
    };
    let client = SourceClient::new(&srv.url).unwrap().with_limits(limits);
    let started = Instant::now();
    let err = store.import_with(&client, &m).unwrap_err().to_string();
    assert!(err.contains("too slowly"), "{err}");
    assert!(err.contains("run the import again to resume"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(store.get(&m.uuid).unwrap().is_none());
}

#[test]
fn a_redirect_loop_is_an_error_after_a_few_hops() {
    let (url, requests) = hostile(|path, out| {
        write!(
            out,
            "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    });
    let client = SourceClient::new(&url).unwrap();
    let err = client.get(&Uuid::new_v4()).unwrap_err().to_string();
    assert!(err.contains("redirect"), "{err}");
    // The first request and MAX_REDIRECTS hops, then the client gives up.
    let n = requests.load(Ordering::SeqCst);
    assert_eq!(n, imgadm::sources::MAX_REDIRECTS + 1, "{n} requests");
}

#[test]
fn a_416_to_a_resumed_import_leaves_nothing_in_the_store() {
    let data = noise(64 << 10, 9);
    let m = manifest_for(&data, "range", "1", ImageKind::Zvol, Compression::None);
    let body = serde_json::to_vec(&m).unwrap();
    let uuid = m.uuid;
    let (url, _) = hostile(move |path, out| {
        if path == format!("/images/{uuid}") {
            head(out, 200, Some(body.len()))?;
            out.write_all(&body)
        } else {
            head(out, 416, Some(0))
        }
    });
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap();
    store.add_source(&url).unwrap();
    // An earlier attempt's partial download of this very file: the import resumes it.
    let partial = store.images_dir().join(".partial").join(uuid.to_string());
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(
        partial.join("manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
    std::fs::write(partial.join("file"), &data[..1000]).unwrap();
    let err = store
        .import_ref(&imgadm::parse_ref(&uuid.to_string()))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::HttpStatus { status: 416, .. }),
        "{err}"
    );
    let left: Vec<String> = std::fs::read_dir(store.images_dir().join(".partial"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left in the store: {left:?}");
}

#[test]
fn what_a_killed_import_left_is_cleaned_and_a_running_one_is_not() {
    use nix::fcntl::{Flock, FlockArg};
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap();
    let root = store.images_dir().join(".partial");
    let (dead, running) = (Uuid::new_v4(), Uuid::new_v4());
    for u in [dead, running] {
        std::fs::create_dir_all(root.join(u.to_string())).unwrap();
        std::fs::write(root.join(u.to_string()).join("file"), b"part").unwrap();
    }
    std::fs::write(root.join(format!("{dead}.lock")), b"").unwrap();
    let held = std::fs::File::create(root.join(format!("{running}.lock"))).unwrap();
    let _held = Flock::lock(held, FlockArg::LockExclusive).unwrap();
    assert_eq!(store.clean_abandoned().unwrap(), vec![dead]);
    let mut left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want = vec![running.to_string(), format!("{running}.lock")];
    want.sort();
    assert_eq!(left, want);
}
