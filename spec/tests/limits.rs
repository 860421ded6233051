//! Manifests cannot blow the stack: `kdl`'s parser recurses without a limit, so
//! `spec` refuses what would recurse too deep before the parser sees it. Each hostile
//! text is parsed on a thread whose stack is far too small for the parser to get
//! through it, so an answer (rather than an abort) proves the parser was never handed
//! the text, or handed only what it can take.

use spec::manifest::limits::{MAX_BYTES, MAX_COMMENT_PIECES, MAX_DEPTH};
use spec::{load_dir, parse_str};

/// Parses `text` on a thread with `stack` bytes of stack; the rendered errors.
fn errors_with_stack(text: String, stack: usize) -> Vec<String> {
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || match parse_str("hostile.kdl", &text) {
            Ok(_) => Vec::new(),
            Err(e) => e.render_plain().lines().map(str::to_owned).collect(),
        })
        .expect("spawn")
        .join()
        .expect("the parse thread returned")
}

/// Small enough that `kdl` overflows it on any of the texts below (a debug build
/// spends about 20 KiB of stack per nested block), big enough for a refusal.
const SMALL_STACK: usize = 256 << 10;

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let e = errors_with_stack("zone a {".repeat(100_000), SMALL_STACK);
    assert_eq!(e.len(), 1, "{e:?}");
    // The block that goes one level too deep: the 17th `{`, column 8 * 17.
    let col = 8 * (MAX_DEPTH + 1);
    assert_eq!(
        e[0],
        format!("hostile.kdl:1:{col}: blocks are nested deeper than {MAX_DEPTH} levels")
    );
}

#[test]
fn nesting_at_the_limit_still_parses() {
    let mut text = String::from("zone a {\n  image \"x\"\n  metadata {\n");
    for _ in 2..MAX_DEPTH {
        text.push_str("n {\n");
    }
    text.push_str(&"}\n".repeat(MAX_DEPTH));
    let e = errors_with_stack(text, 4 << 20);
    // The schema refuses the nesting, but the KDL itself was parsed.
    assert!(e.iter().any(|l| l.contains("nesting")), "{e:?}");
}

#[test]
fn recursion_in_comments_slashdashes_and_error_recovery_is_refused() {
    let hostile = [
        // One recursion per piece of a block comment, per nesting of comments.
        format!("/*{}*/", "* ".repeat(100_000)),
        format!("{}{}", "/*".repeat(100_000), "*/".repeat(100_000)),
        // One recursion per recovered syntax error at the top of the document.
        "}".repeat(100_000),
        "=".repeat(100_000),
        ")".repeat(100_000),
        "a =\n".repeat(100_000),
        "a (x)\n".repeat(100_000),
        "a #\"\n".repeat(100_000),
        format!("zone a {{\n{}}}\n", "a =\n".repeat(100_000)),
        // One recursion per slashdash of a chain.
        "/- ".repeat(100_000) + "a",
    ];
    for text in hostile {
        let head: String = text.chars().take(12).collect();
        let e = errors_with_stack(text, SMALL_STACK);
        assert_eq!(e.len(), 1, "{head:?}: {e:?}");
        assert!(e[0].starts_with("hostile.kdl:"), "{head:?}: {e:?}");
        assert!(
            e[0].contains("nested deeper")
                || e[0].contains("comment")
                || e[0].contains("too many syntax errors"),
            "{head:?}: {e:?}"
        );
    }
}

#[test]
fn a_long_block_comment_is_refused() {
    let text = format!(
        "/*{}*/\nzone a {{ image \"x\"; }}\n",
        "*".repeat(MAX_COMMENT_PIECES)
    );
    let e = errors_with_stack(text, SMALL_STACK);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("hostile.kdl:1:1: this block comment has more than"),
        "{e:?}"
    );
}

#[test]
fn a_few_syntax_errors_still_get_kdl_messages() {
    // Under the error budget the parser reports, with its own words and places.
    let e = errors_with_stack("zone a {\n  image \"x\n}\n".into(), 4 << 20);
    assert!(e[0].starts_with("hostile.kdl:2:9:"), "{e:?}");
    let e = errors_with_stack("zone a { image \"x\"; autoboot true; }".into(), 4 << 20);
    assert!(e.iter().any(|l| l.contains("#true")), "{e:?}");
}

#[test]
fn everything_at_the_limits_fits_a_thread_stack() {
    // Deepest nesting, the longest comment and a full error budget at once: what
    // the parser may be handed fits the 2 MiB stack of a default thread (tokio's
    // workers and blocking threads alike), even in a debug build.
    let mut text = "=".repeat(spec::manifest::limits::MAX_ERROR_BYTES - 20);
    text.push('\n');
    for i in 0..MAX_DEPTH {
        text.push_str(&format!("n{i} {{\n"));
    }
    text.push_str(&format!("/*{}*/\n", "*".repeat(MAX_COMMENT_PIECES - 2)));
    text.push_str(&"}\n".repeat(MAX_DEPTH));
    let e = errors_with_stack(text, 2 << 20);
    assert!(!e.is_empty());
    assert!(
        e.iter().all(|l| !l.contains("safely")),
        "kdl had the text: {e:?}"
    );
}

#[test]
fn a_manifest_past_one_mib_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("zone a {\n  image \"x\"\n}\n");
    let filler = "// a comment line, harmless on its own\n";
    while text.len() <= 2 * MAX_BYTES {
        text.push_str(filler);
    }
    std::fs::write(dir.path().join("big.kdl"), &text).unwrap();
    std::fs::write(dir.path().join("ok.kdl"), "zone b { image \"x\"; }\n").unwrap();
    let loaded = load_dir(dir.path());
    assert_eq!(loaded.instances.len(), 1, "the other file still loads");
    assert_eq!(loaded.errors.len(), 1);
    let msg = loaded.errors[0].to_string();
    assert!(msg.contains("big.kdl:") && msg.contains("1 MiB"), "{msg}");
    let e = errors_with_stack(text, SMALL_STACK);
    assert!(e[0].contains("past the 1048576 bytes (1 MiB)"), "{e:?}");
}

#[test]
fn random_token_soup_never_reaches_the_parser_too_deep() {
    // Long random sequences of the tokens the parser recurses on, and of those that
    // end or open strings and comments: whatever the pre-scan lets through must parse
    // (or fail) within a 1 MiB stack. A recursion the pre-scan misses aborts the test.
    const TOKENS: &[&str] = &[
        "{", "}", "=", "(", ")", "/-", "/*", "*/", "*", "/", "\"", "#\"", "\"#", "\"\"\"", "\n",
        ";", "\\", "[", "#", "a ", "1 ", "k=", "#true ", " ", "//", "é",
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..200 {
        let len = 200 + (next() % 20_000) as usize;
        let text: String = (0..len)
            .map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize])
            .collect();
        let e = errors_with_stack(text.clone(), 1 << 20);
        assert!(!e.is_empty() || text.is_empty(), "round {round}");
    }
    // Mostly valid lines with a token of trouble every so often: texts near the
    // error budget, which the parser does get.
    for _ in 0..200 {
        let mut text = String::new();
        for _ in 0..(next() % 3000) {
            if next() % 50 == 0 {
                text.push_str(TOKENS[(next() % TOKENS.len() as u64) as usize]);
            }
            text.push_str(match next() % 4 {
                0 => "zone a {\n",
                1 => "}\n",
                2 => "n 1 k=\"v\" /- x (t)#true\n",
                _ => "/* c */ m \"s\"; // c\n",
            });
        }
        errors_with_stack(text, 1 << 20);
    }
}

#[test]
fn one_error_that_could_shift_the_rest_of_the_file_is_not_a_recursion_per_line() {
    // An unclosed string, type or block on the first line, then thousands of valid
    // lines: the parser reports a few errors (or the pre-scan refuses the text), and
    // never recurses once per following line (a stack of 256 KiB holds ~100 levels).
    for head in [
        "a \"b\n",
        "a #\"b\n",
        "a (\n",
        "a /* x\n",
        "a \\ x\n",
        "a \"\"\"\n",
        "a {\n",
    ] {
        let text = format!("{head}{}", "c \"d\" e=\"f\"\n".repeat(5_000));
        let e = errors_with_stack(text, SMALL_STACK);
        assert!(!e.is_empty() && e.len() < 10, "{head:?}: {e:?}");
    }
}

#[test]
fn where_the_parser_would_read_on_differently_the_rest_counts() {
    // After each of these the parser's recovery reads later text otherwise than a
    // lexer would (a string ends, or does not, where one thinks): the 40 `{` that
    // follow must not reach it as 40 nested blocks.
    let nested = "zone a {\n".repeat(40);
    for head in [
        "\"\"\"/* c */ m \"s\"; // c\n",
        "  \"\"\"\n",
        "a 1x\"b { c\"\n",
        "a \"\\q { b\"\n",
        "a #\"b\n",
    ] {
        let text = format!("{head}{nested}s #\"raw\"# \"\"\"\n");
        let e = errors_with_stack(text, SMALL_STACK);
        assert!(!e.is_empty(), "{head:?}");
    }
}
