//! An OCI zone on a booted node: a registry on the host (Debian's docker-registry,
//! which the node reaches through QEMU's user network as 10.0.2.2, the host's
//! loopback), fed with a busybox image built and pushed in the test; the operator adds
//! it as a plain-HTTP docker source and creates a zone whose manifest names the image.

use super::{sh, SHELL};
use e2e::node::Node;
use std::path::Path;
use std::time::Duration;
use testkit::registry::Registry;

/// Starts the registry and pushes `skerry/e2e:v1`, whose entrypoint prints a marker
/// built from its Env and then waits.
pub fn registry_with_an_image(scratch: &Path) -> Registry {
    let registry = testkit::registry::start();
    let layout = testkit::registry::busybox_layout(scratch, |_| {});
    testkit::registry::configure(
        &layout,
        &[
            "--config.entrypoint=/bin/sh",
            "--config.entrypoint=-c",
            "--config.cmd=echo oci-entrypoint-ran-$MARK; trap 'exit 0' TERM; while :; do sleep 1; done",
            "--config.env=MARK=e2e",
        ],
    );
    testkit::registry::push(&layout, "v1", &registry.addr, "skerry/e2e");
    registry
}

/// The operator's steps on the node (the source is kept in the pool's
/// config/sources.json); init pulls the image and the zone runs its entrypoint with
/// its Env.
pub fn zone_runs_its_entrypoint(node: &mut Node, registry: &Registry) {
    let source = format!("http://10.0.2.2:{}", registry.port());
    sh(
        node,
        &format!("imgadm sources -a {source} -t docker"),
        SHELL,
    );
    sh(
        node,
        &format!(
            "printf 'zone ociapp {{\\n    image \"oci:10.0.2.2:{}/skerry/e2e:v1\"\\n    \
             memory \"64M\"\\n}}\\n' > /tmp/oci.kdl && vmadm create -f /tmp/oci.kdl",
            registry.port()
        ),
        Duration::from_secs(300),
    );
    // (vmadm create answers once the zone started: its console lines went by with
    // the command's output.)
    let uuid = sh(node, "vmadm list -H -p -o uuid alias=ociapp", SHELL);
    let console = sh(
        node,
        &format!(
            "i=0; until grep -q oci-entrypoint-ran /zones/{0}/console.log; do \
             i=$((i+1)); [ $i -lt 60 ] || break; sleep 1; done; cat /zones/{0}/console.log",
            uuid.trim()
        ),
        Duration::from_secs(90),
    );
    assert!(
        console.contains("oci-entrypoint-ran-e2e"),
        "the OCI zone's entrypoint did not run:\n{console}"
    );
    let list = sh(node, "vmadm list -p -o alias,state", SHELL);
    assert!(list.lines().any(|l| l.trim() == "ociapp:running"), "{list}");
    let list = sh(node, "imgadm list", SHELL);
    assert!(list.contains("oci:10.0.2.2:"), "{list}");
}
