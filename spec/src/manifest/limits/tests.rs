//! The scanner's own view: what it finds suspect in valid KDL.

use super::*;

/// Bytes of suspected errors the scanner finds in a text it accepts.
fn suspicion(text: &str) -> usize {
    let mut scan = Scanner {
        text,
        pos: 0,
        depth: 0,
        state: State::NodeStart,
        first_error: None,
        error_bytes: 0,
    };
    scan.run().expect("accepted");
    scan.error_bytes
}

#[test]
fn valid_kdl_costs_nothing() {
    // Everything the examples use, and the KDL v2 forms they do not.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "kdl") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(suspicion(&text), 0, "{}", path.display());
        }
    }
    let forms = [
        "\u{feff}a",
        "a; b; c",
        "a 1 -2 +3 1.5e3 0x1f 0o7 0b1 1_000 #true #false #null #inf #-inf #nan",
        "a key=1 key = \"v\" \"quoted key\"=#\"raw\"# ##\"r\"#\"##",
        "(t)a (u)1 k=(v)\"x\" (\"quoted type\")b",
        "a /- 1 /- k=2 /-(t)3 { b; } /- { c; }",
        "/- a { b }\nc",
        "/-\n  a\nb",
        "a \\\n  b \\ // comment\n  c",
        "a /* inline */ b /* nested /* comment */ here */ c",
        "a \"esc \\\" \\\\ \\n\" \"\"",
        "a \"\"\"\n  multi\n  \"line\"\n  \"\"\"",
        "a #\"\"\"\n  raw \" multi\n  \"\"\"#",
        "a #\"\"#",
        "a { b { c { d; }; }; }",
        "a {}\n",
        "a { }; b {\n}\n",
        "// only a comment",
        "a // trailing\n",
        "ident-with.dots_and:colons+x 'quote'",
        "a {\n  b 1\n}\n/- c {\n  d\n}\n",
        "node \u{e9}t\u{e9} \"\u{1f600}\"",
    ];
    for text in forms {
        assert!(
            kdl::KdlDocument::parse_v2(text).is_ok(),
            "not KDL v2: {text:?}"
        );
        assert_eq!(suspicion(text), 0, "{text:?}");
    }
}
