//! `vmadm validate`, run as the real binary: exit codes, output forms, stdin,
//! directories, and SmartOS payloads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn vmadm(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmadm"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmadm");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A scratch directory unique to this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vmadm-validate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, body: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

#[test]
fn accepts_every_example_manifest() {
    let dir = examples();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "kdl"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 8);
    for f in &files {
        let out = vmadm(&["validate", "-f", f], None);
        assert_eq!(out.status.code(), Some(0), "{f}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).starts_with(&format!("{f}: valid (")),
            "{}",
            text(&out.stdout)
        );
    }
    // All of them at once, and the directory: names are unique across the files.
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = vmadm(&args, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), files.len());
    let out = vmadm(&["validate", dir.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("multi-instance.kdl: valid (3 instances)"));
}

#[test]
fn rejects_bad_manifests_at_the_right_line() {
    let s = Scratch::new("bad");
    let bad = s.write(
        "bad.kdl",
        "zone web01 {\n    image \"busybox@1.36\"\n    memroy \"256M\"\n    pids 0\n}\n",
    );
    let good = s.write("good.kdl", "zone db01 { image \"debian@12\"; }\n");
    let out = vmadm(&["validate", &good, &bad], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{bad}:3:5: unknown zone property `memroy` (help: did you mean `memory`?)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{bad}:4:10: `pids` is 0; it must be at least 1")),
        "{err}"
    );
    // Not a terminal: plain lines, no graphics.
    assert!(!err.contains('╭'), "{err}");
    assert!(text(&out.stdout).contains(&format!("{good}: valid (1 instance)")));
}

#[test]
fn refuses_bad_vlans_and_firewall_rules_at_their_place() {
    let s = Scratch::new("iso");
    let bad = s.write(
        "iso.kdl",
        "hvm h {\n    image \"x\"\n    nic net0 tag=\"admin\" vlan=5000\n    firewall {\n        \
         allow \"gre\"\n        allow \"tcp\" port=70000\n        allow \"udp\" port=\"1-x\"\n    }\n}\n",
    );
    let out = vmadm(&["validate", &bad], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for want in [
        format!("{bad}:3:26: `vlan` is 5000; it must be 0 to 4094"),
        format!("{bad}:5:15: unknown protocol `gre`"),
        format!("{bad}:6:21: port outside 1-65535"),
        format!("{bad}:7:21: `1-x` is not a port range"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
}

#[test]
fn names_must_be_unique_across_files() {
    let s = Scratch::new("dup");
    let a = s.write("a.kdl", "zone web01 { image \"busybox@1.36\"; }\n");
    let b = s.write("b.kdl", "\nzone web01 { image \"busybox@1.36\"; }\n");
    let out = vmadm(&["validate", &s.0.display().to_string()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{b}:2:1: instance `web01` is already declared in another file"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{a}:1:1")), "{err}");
}

#[test]
fn reads_stdin_and_sniffs_the_format() {
    let out = vmadm(&["validate"], Some("zone a { image \"busybox@1.36\"; }"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "<stdin>: valid (1 instance)\n");
    let out = vmadm(&["validate", "-"], Some("zone a { image 5; }"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("<stdin>:1:16: `image` takes a string"),
        "{}",
        text(&out.stderr)
    );
    let out = vmadm(
        &["validate"],
        Some(
            r#"{"brand": "kvm", "disks": [{"boot": true, "image_uuid": "71101322-43a5-11e1-8f01-cf2a3031a7f4"}]}"#,
        ),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("VALID 'create' payload for kvm brand VMs"));
}

#[test]
fn smartos_create_and_update_forms() {
    let s = Scratch::new("smartos");
    let good = s.write(
        "good.json",
        r#"{"brand": "joyent", "alias": "web01", "image_uuid": "01b2c898-945f-11e1-a523-af1afbe22822", "max_physical_memory": 512}"#,
    );
    let out = vmadm(&["validate", "create", "-f", &good], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "VALID 'create' payload for joyent brand VMs (web01).\n"
    );

    let bad = s.write(
        "bad.json",
        r#"{"brand": "joyent", "image_uuid": "01b2c898-945f-11e1-a523-af1afbe22822", "autoboot": "aardvark", "dataset_name": "x", "nics": [{"nic_tag": "admin", "ip": "dhcp", "mtu": 500}]}"#,
    );
    let out = vmadm(&["validate", "create", "-f", &bad], None);
    assert_eq!(out.status.code(), Some(1));
    let json = text(&out.stdout);
    let compact: String = json.split_whitespace().collect();
    assert!(
        compact.contains(r#""bad_properties":["dataset_name"]"#),
        "{json}"
    );
    assert!(
        compact.contains(r#""bad_values":["autoboot","nics.*.mtu"]"#),
        "{json}"
    );
    assert!(compact.contains(r#""missing_properties":[]"#), "{json}");
    assert!(
        text(&out.stderr).contains("`nics.*.mtu` is 500; it must be 576 to 9000"),
        "{}",
        text(&out.stderr)
    );

    let upd = s.write(
        "upd.json",
        r#"{"add_nics": [{"nic_tag": "admin", "ip": "dhcp"}], "ram": 1024}"#,
    );
    let out = vmadm(&["validate", "update", "kvm", "-f", &upd], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "VALID 'update' payload for kvm brand VMs.\n"
    );
    let out = vmadm(&["validate", "update", "gorilla", "-f", &upd], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(r#""bad_brand": "gorilla""#),
        "{}",
        text(&out.stdout)
    );
    let out = vmadm(
        &["validate", "update", "joyent"],
        Some(r#"{"uuid": "doogle"}"#),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("\"uuid\""));
}

#[test]
fn usage_errors_exit_2_and_unreadable_files_exit_1() {
    for args in [
        vec!["validate", "--bogus"],
        vec!["validate", "-f"],
        vec!["validate", "update"],
        vec!["validate", "create", "-f", "a", "b"],
    ] {
        let out = vmadm(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("usage: vmadm validate"),
            "{args:?}"
        );
    }
    let out = vmadm(&["validate", "/nonexistent/web.kdl"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/web.kdl: cannot read"),
        "{}",
        text(&out.stderr)
    );
    let out = vmadm(&["validate", "--help"], None);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_terminal_gets_the_span_underlined() {
    let s = Scratch::new("tty");
    let bad = s.write(
        "bad.kdl",
        "zone web01 {\n    image \"busybox@1.36\"\n    memroy \"256M\"\n}\n",
    );
    // `script` (bsdutils) runs vmadm on a pseudo-terminal.
    let cmd = format!("{} validate {bad}", env!("CARGO_BIN_EXE_vmadm"));
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("`script` (package bsdutils) is needed to give vmadm a terminal");
    assert_eq!(out.status.code(), Some(1));
    let tty = text(&out.stdout);
    assert!(tty.contains(&format!("[{bad}:3:5]")), "{tty}");
    assert!(tty.contains("memroy \"256M\""), "{tty}");
    assert!(tty.contains("╰── unknown property"), "{tty}");
    assert!(tty.contains("help: did you mean `memory`?"), "{tty}");
}
