//! A 100 MiB request line streamed through a session: discarded as it arrives, answered
//! with FAILURE, peak memory unchanged. Alone in its file so that its process measures
//! only itself.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use mdata::{frame, InstanceInfo, Limits, MetadataStore, Session, SessionConfig};

/// Peak resident memory of this process, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_100_mib_line_is_discarded_in_bounded_memory() {
    let s = Mutex::new(MetadataStore::in_memory(
        InstanceInfo::default(),
        BTreeMap::new(),
        Limits::default(),
    ));
    let config = SessionConfig::default();
    let mut sess = Session::new(config, Instant::now());
    let chunk = vec![b'A'; 1 << 20];
    let before = vm_hwm_kib();
    // "V2 <len> <crc> <reqid> GET " and then 100 MiB without a newline.
    assert_eq!(
        sess.feed(b"V2 999 0badc0de 00c0ffee GET ", &s, Instant::now()),
        29
    );
    for _ in 0..100 {
        assert_eq!(sess.feed(&chunk, &s, Instant::now()), chunk.len());
        assert!(sess.output().is_empty());
    }
    let grown_kib = vm_hwm_kib().saturating_sub(before);
    assert!(
        grown_kib < 16 * 1024,
        "peak memory grew by {grown_kib} KiB for a 100 MiB line"
    );
    assert_eq!(sess.feed(b"\n", &s, Instant::now()), 1);
    let out = sess.take_output();
    let f = frame::parse_response(&out[..out.len() - 1]).unwrap();
    assert_eq!((f.reqid.as_str(), f.code.as_str()), ("00c0ffee", "FAILURE"));
    assert!(
        String::from_utf8_lossy(&f.payload).contains("too long"),
        "{f:?}"
    );

    // A plain (v1) overlong line gets the agent's v1 FAILURE, and the session goes on.
    let long = vec![b'x'; config.max_line_bytes + 1];
    sess.feed(&long, &s, Instant::now());
    sess.feed(b"\nNEGOTIATE V2\n", &s, Instant::now());
    assert_eq!(sess.take_output(), b"FAILURE\nV2_OK\n");
}
