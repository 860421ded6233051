//! End-to-end: a node whose image trusts a minisign key (`build-image/build
//! --manifest-key`) fetches `skerry.manifests=URL` from a real HTTP server on the
//! host, checks its signature inside the real PID 1, and runs the zone it names.
//! The refusals (bad, missing, unknown, replayed signatures; cut, oversized, slow
//! bodies; a foreign CA) are tested against real servers in init/tests/boot_manifests.rs.

use e2e::boot_image::{assemble_with, project_images};
use e2e::node::NodeBuilder;
use std::time::Duration;
use testkit::http::file_server;
use testkit::minisign::Key;

const LIMIT: Duration = Duration::from_secs(900);
const BOOT: Duration = Duration::from_secs(420);

#[test]
fn a_node_runs_the_zone_of_its_signed_boot_manifest() {
    let images = project_images().expect("images/build");
    let tmp = tempfile::tempdir().unwrap();
    let key = Key::new(tmp.path(), "ops");
    let image = assemble_with(
        &tmp.path().join("out"),
        None,
        &["--manifest-key".as_ref(), key.public.as_os_str()],
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
    key.sign(&manifest, None);
    let server = file_server(&www);
    let port = server.port;

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
    drop(server);
    seen.expect("the node checks the signature with the image's key");
    node.wait_seen(r"skerry: instance fetched01 zone running", BOOT)
        .expect("the fetched manifest's zone runs");
    node.wait_for(r"skerry: node ready \(1 running\)", BOOT)
        .expect("node ready, 1 running");
}
