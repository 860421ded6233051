//! The metadata protocol server (`mdata::Session`) fed arbitrary bytes, as a guest on
//! /dev/ttyS1 or the metadata socket would send them: shared by the cargo-fuzz target
//! `mdata_session` and the stable test `mdata/tests/fuzz_harness.rs`.
//!
//! The first byte picks how the rest is cut into reads (a guest's writes arrive in any
//! pieces). Time advances a second per read, so the rate limit refills. Checked on
//! every input: no panic, the session's unwritten answers stay within their bound plus
//! one answer, every answer is a well-formed frame line, and the session consumes the
//! whole input.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mdata::{frame, InstanceInfo, Limits, MetadataStore, Session, SessionConfig};

/// The status words that start a V1 answer.
const V1_STATUS: [&[u8]; 3] = [b"SUCCESS", b"NOTFOUND", b"FAILURE"];

/// Runs `data` through a fresh session; returns how many answers it wrote.
pub fn run(data: &[u8]) -> usize {
    let Some((&cut, input)) = data.split_first() else {
        return 0;
    };
    let limits = Limits::default();
    let store = Mutex::new(MetadataStore::in_memory(
        InstanceInfo::default(),
        BTreeMap::new(),
        limits,
    ));
    let config = SessionConfig::for_limits(&limits);
    let start = Instant::now();
    let mut session = Session::new(config, start);
    let piece = 1 + usize::from(cut) * 8;
    let (mut rest, mut now, mut answers) = (input, start, 0);
    // Each round consumes bytes or answers a line; twice the input bounds the rounds.
    for _ in 0..2 * input.len() + 2 {
        if rest.is_empty() {
            break;
        }
        let n = piece.min(rest.len());
        let used = session.feed(&rest[..n], &store, now);
        assert!(used <= n, "consumed {used} of {n}");
        rest = &rest[used..];
        let out = session.take_output();
        assert!(
            out.len() <= config.max_pending_output + config.max_line_bytes + 4096,
            "{} unwritten answer bytes",
            out.len()
        );
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if line.starts_with(b"V2 ") {
                frame::parse_response(line).unwrap_or_else(|e| {
                    panic!("malformed answer {:?}: {e}", String::from_utf8_lossy(line))
                });
                answers += 1;
            } else if V1_STATUS.contains(&line) || line == b"V2_OK" {
                // NEGOTIATE's bare `V2_OK`, or a V1 answer's status word (its data
                // lines and final `.` follow).
                answers += 1;
            }
        }
        now += Duration::from_secs(1);
    }
    assert!(rest.is_empty(), "{} bytes never consumed", rest.len());
    answers
}
