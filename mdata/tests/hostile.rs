//! A guest that misbehaves: a 100 MiB line, thousands of puts, a flood of requests,
//! never reading its answers. The server answers as SmartOS does and stays bounded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mdata::crc32::crc32_hex;
use mdata::{base64, frame, InstanceInfo, Limits, MetadataStore, Session, SessionConfig};

fn store(limits: Limits) -> Mutex<MetadataStore> {
    Mutex::new(MetadataStore::in_memory(
        InstanceInfo::default(),
        BTreeMap::new(),
        limits,
    ))
}

fn v2(reqid: &str, cmd: &str, arg: &[u8]) -> String {
    let body = format!("{reqid} {cmd} {}", base64::encode(arg));
    format!("V2 {} {} {body}\n", body.len(), crc32_hex(body.as_bytes()))
}

#[test]
fn the_largest_allowed_put_fits_in_a_line() {
    let limits = Limits::default();
    let s = store(limits);
    let value = "v".repeat(limits.max_value_bytes);
    let key = "k".repeat(limits.max_key_bytes);
    let arg = format!(
        "{} {}",
        base64::encode(key.as_bytes()),
        base64::encode(value.as_bytes())
    );
    let req = v2("00000001", "PUT", arg.as_bytes());
    assert!(req.len() <= limits.max_line_bytes());
    let mut sess = Session::new(SessionConfig::for_limits(&limits), Instant::now());
    sess.feed(req.as_bytes(), &s, Instant::now());
    let out = sess.take_output();
    let f = frame::parse_response(&out[..out.len() - 1]).unwrap();
    assert_eq!(
        f.code,
        "SUCCESS",
        "{:?}",
        String::from_utf8_lossy(&f.payload)
    );
    assert_eq!(
        s.lock().unwrap().get(&key).map(|v| v.len()),
        Some(value.len())
    );
}

#[test]
fn thousands_of_puts_stop_at_the_key_bound() {
    let limits = Limits::default();
    let s = store(limits);
    let mut sess = Session::new(SessionConfig::default(), Instant::now());
    let mut refused = 0;
    for i in 0..3000 {
        let arg = format!(
            "{} {}",
            base64::encode(format!("key{i}").as_bytes()),
            base64::encode(b"v")
        );
        let req = v2(&format!("{i:08x}"), "PUT", arg.as_bytes());
        let mut pos = 0;
        while pos < req.len() {
            pos += sess.feed(&req.as_bytes()[pos..], &s, Instant::now());
            if let Some(at) = sess.ready_at() {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            }
        }
        let out = sess.take_output();
        let f = frame::parse_response(&out[..out.len() - 1]).unwrap();
        if f.code == "FAILURE" {
            assert_eq!(
                f.payload,
                format!("too many metadata keys (limit {})", limits.max_keys).as_bytes()
            );
            refused += 1;
        }
    }
    assert_eq!(s.lock().unwrap().keys().len(), limits.max_keys);
    assert_eq!(refused, 3000 - limits.max_keys);
}

#[test]
fn a_request_flood_is_slowed_to_the_rate() {
    let s = store(Limits::default());
    let config = SessionConfig {
        requests_per_second: 100.0,
        burst: 10.0,
        ..SessionConfig::default()
    };
    let start = Instant::now();
    let mut sess = Session::new(config, start);
    let flood = "NEGOTIATE V2\n".repeat(50);
    // At one instant, only the burst is served; the rest waits in the caller's buffer.
    let used = sess.feed(flood.as_bytes(), &s, start);
    assert_eq!(sess.take_output(), "V2_OK\n".repeat(10).as_bytes());
    assert!(!sess.wants_input(start));
    let at = sess.ready_at().unwrap();
    assert!(
        at > start && at <= start + Duration::from_millis(11),
        "{:?}",
        at - start
    );
    // Half a second later the budget is full again, never more than the burst.
    let later = start + Duration::from_millis(500);
    let more = sess.feed(&flood.as_bytes()[used..], &s, later);
    assert_eq!(sess.take_output().len(), 10 * 6);
    assert!(used + more < flood.len());
}

#[test]
fn a_guest_that_never_reads_is_not_buffered() {
    let s = store(Limits::default());
    s.lock().unwrap().put("big", &"b".repeat(1 << 20)).unwrap();
    let config = SessionConfig::default();
    let mut sess = Session::new(config, Instant::now());
    let flood = v2("00000001", "GET", b"big").repeat(100);
    let used = sess.feed(flood.as_bytes(), &s, Instant::now());
    assert!(used < flood.len());
    assert!(sess.output().len() < config.max_pending_output + (2 << 20));
    assert!(!sess.wants_input(Instant::now()));
    // Once the answers are written, it serves again.
    let n = sess.output().len();
    sess.consume_output(n);
    assert!(sess.wants_input(Instant::now()));
}
