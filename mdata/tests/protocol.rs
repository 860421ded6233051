//! The server's answers, byte for byte, to requests as mdata-client, cloud-init and a
//! hostile guest send them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use mdata::crc32::crc32_hex;
use mdata::{base64, frame, InstanceInfo, Limits, MetadataStore, Session, SessionConfig};

fn store() -> Mutex<MetadataStore> {
    let info = InstanceInfo {
        uuid: "0b5d7d4a-7a0b-4c67-9d8c-2d1a1b9c0001".into(),
        hostname: Some("web01".into()),
        ..Default::default()
    };
    let mut m = BTreeMap::new();
    m.insert("role".to_string(), "web".to_string());
    m.insert("motd".to_string(), ".dotted\nline\n.again".to_string());
    Mutex::new(MetadataStore::in_memory(info, m, Limits::default()))
}

/// Feeds `input` whole and returns every answer byte.
fn talk(store: &Mutex<MetadataStore>, input: &[u8]) -> String {
    // Unlimited rate: these tests are about answers (tests/hostile.rs is about rate).
    let config = SessionConfig {
        requests_per_second: 1e9,
        burst: 1e9,
        ..SessionConfig::default()
    };
    let mut s = Session::new(config, Instant::now());
    assert_eq!(s.feed(input, store, Instant::now()), input.len());
    String::from_utf8(s.take_output()).unwrap()
}

/// A request frame as mdata-client builds it.
fn v2(reqid: &str, cmd: &str, arg: Option<&[u8]>) -> String {
    let mut body = format!("{reqid} {cmd}");
    if let Some(a) = arg {
        body.push(' ');
        body.push_str(&base64::encode(a));
    }
    format!("V2 {} {} {body}\n", body.len(), crc32_hex(body.as_bytes()))
}

fn answer(line: &str) -> frame::Frame {
    frame::parse_response(line.trim_end_matches('\n').as_bytes()).unwrap()
}

#[test]
fn reset_newline_and_negotiation() {
    let s = store();
    // mdata-client's and cloud-init's reset: a bare newline gets "invalid command".
    assert_eq!(talk(&s, b"\n"), "invalid command\n");
    assert_eq!(talk(&s, b"NEGOTIATE V2\n"), "V2_OK\n");
    assert_eq!(talk(&s, b"NEGOTIATE V3\n"), "FAILURE\n");
    assert_eq!(talk(&s, b"NEGOTIATE\n"), "invalid command\n");
}

#[test]
fn v1_get_dot_stuffs_and_terminates() {
    let s = store();
    assert_eq!(talk(&s, b"GET role\n"), "SUCCESS\nweb\n.\n");
    assert_eq!(
        talk(&s, b"GET motd\r\n"),
        "SUCCESS\n..dotted\nline\n..again\n.\n"
    );
    assert_eq!(talk(&s, b"GET sdc:hostname\n"), "SUCCESS\nweb01\n.\n");
    assert_eq!(talk(&s, b"GET nope\n"), "NOTFOUND\n");
    assert_eq!(talk(&s, b"GET\n"), "invalid command\n");
    assert_eq!(talk(&s, b"KEYS\n"), "SUCCESS\nmotd\nrole\n.\n");
}

#[test]
fn v1_cannot_write_and_unknown_commands_fail() {
    let s = store();
    assert_eq!(talk(&s, b"PUT a b\n"), "FAILURE\n");
    assert_eq!(talk(&s, b"DELETE role\n"), "FAILURE\n");
    assert_eq!(talk(&s, b"FROB\n"), "FAILURE\n");
    assert_eq!(talk(&s, b"  GET role\n"), "invalid command\n");
    assert_eq!(s.lock().unwrap().get("role").as_deref(), Some("web"));
}

#[test]
fn v2_get_echoes_the_request_id() {
    let s = store();
    let a = answer(&talk(&s, v2("dc4fae17", "GET", Some(b"role")).as_bytes()));
    assert_eq!((a.reqid.as_str(), a.code.as_str()), ("dc4fae17", "SUCCESS"));
    assert_eq!(a.payload, b"web");
    let a = answer(&talk(
        &s,
        v2("0000beef", "GET", Some(b"missing")).as_bytes(),
    ));
    assert_eq!(
        (a.reqid.as_str(), a.code.as_str()),
        ("0000beef", "NOTFOUND")
    );
    let a = answer(&talk(
        &s,
        v2("0000beef", "GET", Some(b"sdc:uuid")).as_bytes(),
    ));
    assert_eq!(a.payload, b"0b5d7d4a-7a0b-4c67-9d8c-2d1a1b9c0001");
}

#[test]
fn v2_put_keys_delete() {
    let s = store();
    let put = |k: &[u8], v: &[u8]| {
        let arg = format!("{} {}", base64::encode(k), base64::encode(v));
        answer(&talk(
            &s,
            v2("00000001", "PUT", Some(arg.as_bytes())).as_bytes(),
        ))
    };
    let a = put(b"color", b"blue\nsky");
    assert_eq!(
        (a.code.as_str(), a.payload.as_slice()),
        ("SUCCESS", &b"OK"[..])
    );
    let a = answer(&talk(&s, v2("00000002", "KEYS", None).as_bytes()));
    assert_eq!(a.payload, b"color\nmotd\nrole");
    let a = put(b"sdc:uuid", b"x");
    assert_eq!(a.code, "FAILURE");
    assert_eq!(a.payload, br#"Cannot update the "sdc" Namespace."#);
    let a = answer(&talk(
        &s,
        v2("00000003", "DELETE", Some(b"sdc:hostname")).as_bytes(),
    ));
    assert_eq!(a.payload, br#"Cannot update the "sdc" Namespace."#);
    let a = answer(&talk(
        &s,
        v2("00000004", "DELETE", Some(b"color")).as_bytes(),
    ));
    assert_eq!(
        (a.code.as_str(), a.payload.as_slice()),
        ("SUCCESS", &b"OK"[..])
    );
    assert_eq!(s.lock().unwrap().get("color"), None);
    // Deleting what is not there still succeeds, as on SmartOS.
    let a = answer(&talk(
        &s,
        v2("00000005", "DELETE", Some(b"color")).as_bytes(),
    ));
    assert_eq!(a.code, "SUCCESS");
    let a = answer(&talk(
        &s,
        v2("00000006", "PUT", Some(b"onlyonearg")).as_bytes(),
    ));
    assert_eq!(
        (a.code.as_str(), a.payload.as_slice()),
        ("FAILURE", &b"Invalid PUT Request"[..])
    );
}

#[test]
fn v2_errors_are_the_agents() {
    let s = store();
    let a = answer(&talk(&s, v2("0000000a", "FROB", None).as_bytes()));
    assert_eq!(
        (a.code.as_str(), a.payload.as_slice()),
        ("FAILURE", &b"Unknown command FROB"[..])
    );
    let a = answer(&talk(
        &s,
        v2("0000000b", "NEGOTIATE", Some(b"V2")).as_bytes(),
    ));
    assert_eq!(a.payload, b"Unknown command NEGOTIATE");
    let a = answer(&talk(&s, v2("0000000c", "GET", None).as_bytes()));
    assert_eq!(a.payload, b"Invalid GET Request");
    let a = answer(&talk(&s, v2("0000000d", "DELETE", None).as_bytes()));
    assert_eq!(a.payload, b"Invalid DELETE Request");
}

#[test]
fn damaged_frames_get_no_answer() {
    let s = store();
    let good = v2("12345678", "GET", Some(b"role"));
    // Wrong checksum, wrong length, missing fields: the agent stays silent.
    let bad_crc = good.replacen(&good[6..14], "00000000", 1);
    assert_ne!(bad_crc, good);
    assert_eq!(talk(&s, bad_crc.as_bytes()), "");
    let bad_len = good.replacen("V2 21", "V2 22", 1);
    assert_eq!(talk(&s, bad_len.as_bytes()), "");
    assert_eq!(talk(&s, b"V2 garbage\n"), "");
    assert_eq!(talk(&s, b"V2\n"), "");
    // The next good frame on the same connection is served.
    let out = talk(&s, format!("{bad_crc}{good}").as_bytes());
    assert_eq!(answer(&out).payload, b"web");
}

#[test]
fn binary_garbage_gets_answers_and_no_panic() {
    let s = store();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut junk = Vec::new();
    for _ in 0..200_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        junk.push(rng as u8);
    }
    let lines = junk.iter().filter(|&&b| b == b'\n').count();
    let out = talk(&s, &junk);
    // Every line is answered with one of the agent's v1 answers, or silently dropped.
    assert!(out.lines().count() <= lines);
    assert!(
        out.lines().all(
            |l| ["FAILURE", "invalid command", "NOTFOUND"].contains(&l) || l.starts_with("V2 ")
        ),
        "{out}"
    );
}

#[test]
fn requests_split_across_reads_are_reassembled() {
    let s = store();
    let req = v2("abcdef01", "GET", Some(b"role"));
    let mut sess = Session::new(SessionConfig::default(), Instant::now());
    for b in req.as_bytes() {
        assert_eq!(sess.feed(std::slice::from_ref(b), &s, Instant::now()), 1);
    }
    let out = String::from_utf8(sess.take_output()).unwrap();
    assert_eq!(answer(&out).payload, b"web");
}

#[test]
fn token_soup_never_panics_and_every_answer_is_well_formed() {
    let s = store();
    let tokens: &[&str] = &[
        "V2",
        "GET",
        "PUT",
        "KEYS",
        "DELETE",
        "NEGOTIATE",
        " ",
        "  ",
        "\t",
        "\r",
        "0",
        "21",
        "99999999999999999999999",
        "ffffffff",
        "265ae1d8",
        "dc4fae17",
        "é",
        "\u{fffd}",
        "=",
        "cm9sZQ==",
        "c2RjOnV1aWQ=",
        "Y29sb3I= Ymx1ZQ==",
        ".",
        "sdc:",
        "role",
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut input = String::new();
    let mut lines = 0;
    for _ in 0..20_000 {
        for _ in 0..next(8) {
            input.push_str(tokens[next(tokens.len())]);
            if next(2) == 0 {
                input.push(' ');
            }
        }
        // Now and then a well-formed frame, so the v2 paths run too.
        if next(4) == 0 {
            let cmd = ["GET", "PUT", "KEYS", "DELETE", "FROB"][next(5)];
            input.push_str(
                v2(
                    &format!("{:08x}", next(1 << 30)),
                    cmd,
                    Some(tokens[next(tokens.len())].as_bytes()),
                )
                .trim_end(),
            );
        }
        input.push('\n');
        lines += 1;
    }
    let out = talk(&s, input.as_bytes());
    let mut answers = out.lines().peekable();
    let mut count = 0;
    while let Some(l) = answers.next() {
        count += 1;
        match l {
            "FAILURE" | "invalid command" | "NOTFOUND" | "V2_OK" => {}
            "SUCCESS" => {
                // A v1 value runs up to a lone ".".
                for body in answers.by_ref() {
                    if body == "." {
                        break;
                    }
                }
            }
            l => assert!(
                frame::parse_response(l.as_bytes()).is_ok(),
                "bad answer {l:?}"
            ),
        }
    }
    assert!(
        count <= lines && count > 1000,
        "{count} answers to {lines} lines"
    );
}
