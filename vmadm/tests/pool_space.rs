//! `vmadm create` is admitted like a manifest: init's one pool-space check
//! (`init::schedule::admit`, on the spec the instance would run with, node.kdl's
//! default zone quota included) refuses what does not fit before anything of it is
//! made, and the refused payload leaves no manifest behind.

mod common;
use common::Node;

/// More than any test machine's pool has free.
const HUGE: &str = "64T";

/// The manifest files in the pool.
fn manifests(node: &Node) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(node.pool.join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts that `vmadm create` of `payload` (declaring `name`) is refused for pool
/// space before anything of it exists.
#[track_caller]
fn refused(node: &Node, name: &str, payload: &str) {
    let run = node.vmadm_stdin(&["create"], payload).expect(1);
    assert!(
        run.stderr
            .contains(&format!("not created: needs {HUGE} of pool space")),
        "{name}: {}",
        run.stderr
    );
    assert_eq!(node.state(name), None, "{name} was made");
    let list = node.vmadm(&["list", "-H", "-o", "alias"]).ok().stdout;
    assert!(!list.contains(name), "{list}");
    assert!(
        !manifests(node).contains(&format!("{name}.kdl")),
        "{name}'s manifest stayed: {:?}",
        manifests(node)
    );
}

#[test]
fn a_create_the_pool_cannot_hold_is_refused_and_makes_nothing() {
    let node = Node::start_with_config(&format!("zone-quota \"{HUGE}\"\n"));
    common::install_tiny_hvm_image(node.work_dir(), &node.pool);

    // An HVM whose new data disk is larger than the pool's free space.
    refused(
        &node,
        "disky",
        &format!(
            "hvm disky {{\n    image \"tiny-hvm@1\"\n    autoboot #false\n    memory \"32M\"\n    \
             disk root boot=#true\n    disk data size=\"{HUGE}\"\n}}\n"
        ),
    );
    // A zone without a quota of its own gets node.kdl's, which does not fit.
    refused(
        &node,
        "plain",
        "zone plain {\n    image \"busybox@1.36\"\n    autoboot #false\n    memory \"32M\"\n}\n",
    );
    // Its own quota wins over the node's: this one fits and is made.
    node.vmadm_stdin(
        &["create"],
        "zone small {\n    image \"busybox@1.36\"\n    autoboot #false\n    memory \"32M\"\n    \
         quota \"8M\"\n}\n",
    )
    .ok();
    node.wait_state("small", "stopped");
    assert_eq!(manifests(&node), ["small.kdl"]);
}
