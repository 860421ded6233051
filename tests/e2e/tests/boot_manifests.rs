//! End-to-end: a node whose image trusts a minisign key (`build-image/build
//! --manifest-key`) fetches `skerry.manifests=URL` from a real HTTP server on the
//! host, checks its signature inside the real PID 1, and runs the zone it names.
//! The refusals (bad, missing, unknown, replayed signatures; cut, oversized, slow
//! bodies; a foreign CA) are tested against real servers in init/tests/boot_manifests.rs.

use e2e::boot_image::{assemble_with, project_images};
use e2e::node::NodeBuilder;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(900);
const BOOT: Duration = Duration::from_secs(420);

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_node_runs_the_zone_of_its_signed_boot_manifest() {
    let images = project_images().expect("images/build");
    let tmp = tempfile::tempdir().unwrap();
    let (public, secret) = (tmp.path().join("ops.pub"), tmp.path().join("ops.sec"));
    run(Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret));
    let image = assemble_with(
        &tmp.path().join("out"),
        None,
        &["--manifest-key".as_ref(), public.as_os_str()],
    )
    .expect("build-image/build --manifest-key");

    let www = tmp.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let manifest = www.join("node.kdl");
    std::fs::write(
        &manifest,
        "zone fetched01 {\n    image \"busybox@1.36\"\n}\n",
    )
    .unwrap();
    run(Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(&secret)
        .arg("-m")
        .arg(&manifest));
    let mut server = Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "0",
            "--directory",
        ])
        .arg(&www)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .unwrap_or_else(|| panic!("http.server said {line:?}"))
        .to_string();

    // QEMU's user network: the host's loopback is 10.0.2.2 to the node.
    let mut node = NodeBuilder::new(&image, LIMIT)
        .images(images)
        .cmdline(&format!("skerry.manifests=http://10.0.2.2:{port}/node.kdl"))
        .boot()
        .expect("run-node starts");
    let seen = node.wait_seen(
        &format!(
            r"boot manifests from http://10\.0\.2\.2:{port}/node\.kdl: good signature by key [0-9A-F]{{16}}"
        ),
        BOOT,
    );
    let _ = server.kill();
    let _ = server.wait();
    seen.expect("the node checks the signature with the image's key");
    node.wait_seen(r"skerry: instance fetched01 zone running", BOOT)
        .expect("the fetched manifest's zone runs");
    node.wait_for(r"skerry: node ready \(1 running\)", BOOT)
        .expect("node ready, 1 running");
}
