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
