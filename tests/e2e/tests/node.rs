//! End-to-end: real nodes (the real init) PXE-booted in QEMU with the project's
//! images served over IMGAPI; zones and an HVM instance (nested KVM inside the TCG
//! node) reconciled from manifests, across reboots with a kept pool disk.

use e2e::boot_image::{node_image, project_images};
use e2e::node::{Node, NodeBuilder};
use e2e::pool::PoolDisk;
use e2e::repo_root;
use std::path::Path;
use std::time::Duration;

/// Ceiling for one boot (run-node stops QEMU after it).
const LIMIT: Duration = Duration::from_secs(900);
/// Boot to `node ready`, including image imports.
const BOOT: Duration = Duration::from_secs(420);
/// An HVM guest's kernel boot under nested KVM inside TCG.
const HVM_BOOT: Duration = Duration::from_secs(480);
const SHELL: Duration = Duration::from_secs(60);

/// The node's console shell (init opens one when the command line says `skerry.shell`):
/// the first command, with a message that says what is missing when there is none.
fn open_shell(node: &mut Node) {
    node.send("\n").unwrap();
    if let Err(e) = node.shell("true", SHELL) {
        panic!("no shell answers on the node's console (booted with skerry.shell): {e}");
    }
}

/// Runs `cmd` in the node's shell; panics with its output unless it exits 0.
fn sh(node: &mut Node, cmd: &str, timeout: Duration) -> String {
    let (out, rc) = node
        .shell(cmd, timeout)
        .unwrap_or_else(|e| panic!("`{cmd}`: {e}"));
    assert_eq!(rc, 0, "`{cmd}` in the node exited {rc}:\n{out}");
    out
}

/// Powers the node off the documented way (SIGTERM to init) and returns the timeline.
/// The shutdown must stop every instance and unmount the pool (init says so on the
/// console only when it did), and end without a kernel panic (run-node fails then).
fn shut_down(mut node: Node) -> String {
    node.send("kill -TERM 1\n").unwrap();
    let stop = Duration::from_secs(120);
    for line in [
        "skerry: shutting down \\(SIGTERM\\)",
        "skerry: (all instances stopped|shutdown: .*)",
        "skerry: (pool unmounted|pool not unmounted.*)",
    ] {
        let seen = node
            .wait_for(line, stop)
            .unwrap_or_else(|e| panic!("shutdown: {e}"));
        assert!(
            seen[0].ends_with("all instances stopped")
                || seen[0].ends_with("pool unmounted")
                || seen[0].contains("shutting down"),
            "shutdown: {}",
            seen[0]
        );
    }
    let timeline = node
        .wait_exit(Duration::from_secs(180))
        .expect("the node shuts down");
    println!("{timeline}");
    timeline
}

fn copy_example(name: &str, to: &Path) {
    std::fs::copy(repo_root().join("manifests").join(name), to.join(name)).unwrap();
}

#[test]
fn pxe_node_runs_a_zone_and_an_hvm_then_reconciles_edits_across_a_reboot() {
    let image = node_image().expect("build-image/build");
    let images = project_images().expect("images/build");
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    copy_example("zone-minimal.kdl", &manifests); // zone `hello`, busybox@1.36
    copy_example("hvm-minimal.kdl", &manifests); // hvm `tiny01`, debian-hvm@12
    let disk = tmp.path().join("pool.img");

    // Boot 1: PXE, fresh pool; both instances come up.
    let mut node = NodeBuilder::new(image, LIMIT)
        .pxe()
        .images(images)
        .manifests(&manifests)
        .pool_disk(&disk)
        .cmdline("skerry.shell")
        .boot()
        .expect("run-node starts");
    node.wait_for(r"node-[0-9a-f-]+\.ipxe\.\.\. ok", BOOT)
        .expect("iPXE chains the node's script");
    node.wait_seen(r"skerry: instance hello zone running", BOOT)
        .expect("zone hello runs");
    node.wait_seen(r"skerry: instance tiny01 hvm running", BOOT)
        .expect("hvm tiny01 runs");
    node.wait_for(r"skerry: node ready \(2 running\)", BOOT)
        .expect("node ready, 2 running");

    open_shell(&mut node);
    let list = sh(&mut node, "vmadm list", SHELL);
    for name in ["hello", "tiny01"] {
        assert!(
            list.lines()
                .any(|l| l.contains(name) && l.contains("running")),
            "vmadm list in the node does not show {name} running:\n{list}"
        );
    }
    let ids = sh(&mut node, "vmadm list -p -o uuid,alias", SHELL);
    let uuid_of = |alias: &str| {
        ids.lines()
            .find_map(|l| l.strip_suffix(&format!(":{alias}")))
            .unwrap_or_else(|| panic!("no {alias} in `vmadm list -p -o uuid,alias`:\n{ids}"))
            .trim()
            .to_string()
    };
    let (hello, tiny01) = (uuid_of("hello"), uuid_of("tiny01"));
    // The HVM guest (stock Debian kernel, nested KVM) reaches its login prompt.
    let wait_login = format!(
        "i=0; until grep -q 'login:' /zones/{tiny01}/console.log; do \
         i=$((i+1)); [ $i -lt {} ] || exit 1; sleep 1; done",
        HVM_BOOT.as_secs()
    );
    let started = std::time::Instant::now();
    let waited = node.shell(&wait_login, HVM_BOOT + SHELL);
    println!(
        "tiny01's login prompt {:.1}s after `vmadm list`",
        started.elapsed().as_secs_f64()
    );
    let guest_console = node.shell(&format!("tail -n 15 /zones/{tiny01}/console.log"), SHELL);
    assert!(
        matches!(waited, Ok((_, 0))),
        "tiny01's console shows no login prompt: {waited:?}\nits console:\n{guest_console:?}"
    );
    shut_down(node);

    // Edit the manifests: hello gets 128M, zone `extra` is added, tiny01's manifest
    // is removed (it stops; its data stays on the pool).
    let zone = std::fs::read_to_string(manifests.join("zone-minimal.kdl")).unwrap();
    let zone = zone.replace(
        "image \"busybox@1.36\"",
        "image \"busybox@1.36\"\n    memory \"128M\"",
    );
    assert!(
        zone.contains("128M"),
        "zone-minimal.kdl changed shape:\n{zone}"
    );
    std::fs::write(manifests.join("zone-minimal.kdl"), zone).unwrap();
    std::fs::write(
        manifests.join("extra.kdl"),
        "zone extra {\n    image \"busybox@1.36\"\n}\n",
    )
    .unwrap();
    std::fs::remove_file(manifests.join("hvm-minimal.kdl")).unwrap();

    // Boot 2: same pool disk.
    let mut node = NodeBuilder::new(image, LIMIT)
        .pxe()
        .images(images)
        .manifests(&manifests)
        .pool_disk(&disk)
        .cmdline("skerry.shell")
        .boot()
        .expect("run-node starts");
    node.wait_seen(r"skerry: instance hello zone running", BOOT)
        .expect("hello runs");
    node.wait_seen(r"skerry: instance extra zone running", BOOT)
        .expect("extra runs");
    node.wait_for(r"skerry: node ready \(2 running\)", BOOT)
        .expect("node ready, 2 running");
    open_shell(&mut node);
    let list = sh(&mut node, "vmadm list -p -o alias,ram,state", SHELL);
    assert!(
        list.lines().any(|l| l.trim() == "hello:128:running"),
        "hello is not 128M, running:\n{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("extra:") && l.ends_with(":running")),
        "{list}"
    );
    assert!(
        !list
            .lines()
            .any(|l| l.starts_with("tiny01:") && l.ends_with(":running")),
        "tiny01 still runs without a manifest:\n{list}"
    );
    shut_down(node);

    let pool = PoolDisk::new(&disk);
    let entries = pool.ls(&format!("/{tiny01}")).unwrap();
    assert!(
        !entries.is_empty(),
        "the removed instance's data is gone from the pool (/{tiny01} is empty)"
    );
    assert!(!pool.ls(&format!("/{hello}")).unwrap().is_empty());
    println!("tiny01's data kept on the pool: /{tiny01}: {entries:?}");
}

/// One broken manifest is reported and skipped; the good ones run, with their limits:
/// `capped`'s writable-layer quota is enforced by the pool's ext4 project quota (this
/// needs the node's kernel: the dev host's has no ext4 quota format), and its cgroup
/// is delegated to it on the node's pure cgroup v2: it moves itself into a sub-cgroup
/// and enables a controller below its own.
#[test]
fn a_broken_manifest_is_reported_and_the_rest_runs() {
    let image = node_image().expect("build-image/build");
    let images = project_images().expect("images/build");
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("good.kdl"),
        "zone good01 {\n    image \"busybox@1.36\"\n}\n",
    )
    .unwrap();
    // 2 MiB fit in capped's 8M quota, 32 MiB more do not.
    std::fs::write(
        manifests.join("capped.kdl"),
        r#"zone capped {
    image "busybox@1.36"
    quota "8M"
    init "/bin/sh" "-c" "mkdir /sys/fs/cgroup/init.scope && echo $$ > /sys/fs/cgroup/init.scope/cgroup.procs && echo +pids > /sys/fs/cgroup/cgroup.subtree_control && echo delegated-pids.max=$(cat /sys/fs/cgroup/init.scope/pids.max); dd if=/dev/zero of=/small bs=1M count=2 && echo small-write-ok; dd if=/dev/zero of=/big bs=1M count=32; echo big-write-exit=$?; trap 'exit 0' TERM; while :; do sleep 1; done"
}
"#,
    )
    .unwrap();
    // Line 2: an unknown size suffix; line 3: an unclosed block.
    std::fs::write(
        manifests.join("broken.kdl"),
        "zone bad01 {\n    memory \"12Q\"\n",
    )
    .unwrap();
    let mut node = NodeBuilder::new(image, LIMIT)
        .images(images)
        .manifests(&manifests)
        .cmdline("skerry.shell")
        .boot()
        .expect("run-node starts");
    node.wait_seen(r"broken\.kdl:\d+:\d+", BOOT)
        .expect("the broken manifest is reported with FILE:LINE:COL");
    node.wait_seen(r"skerry: instance good01 zone running", BOOT)
        .expect("good01 runs");
    node.wait_seen(r"skerry: instance capped zone running", BOOT)
        .expect("capped runs");
    node.wait_for(r"skerry: node ready \(2 running\)", BOOT)
        .expect("node ready, 2 running");
    open_shell(&mut node);
    let list = sh(&mut node, "vmadm list -p -o alias,state", SHELL);
    assert!(list.lines().any(|l| l.trim() == "good01:running"), "{list}");
    assert!(list.lines().any(|l| l.trim() == "capped:running"), "{list}");
    assert!(!list.contains("bad01"), "{list}");

    let info = sh(&mut node, "vmadm info capped", SHELL);
    assert!(
        info.contains("8M enforced (project quota"),
        "capped's quota is not enforced by project quota:\n{info}"
    );
    let uuid = sh(&mut node, "vmadm list -H -p -o uuid alias=capped", SHELL);
    let wait_writes = format!(
        "i=0; until grep -q big-write-exit /zones/{0}/console.log; do \
         i=$((i+1)); [ $i -lt 60 ] || break; sleep 1; done; cat /zones/{0}/console.log",
        uuid.trim()
    );
    let console = sh(&mut node, &wait_writes, Duration::from_secs(90));
    assert!(
        console.contains("small-write-ok")
            && console.contains("Disk quota exceeded")
            && console.contains("big-write-exit=1"),
        "inside capped, 2M should fit its 8M quota and 32M should not:\n{console}"
    );
    assert!(
        console.contains("delegated-pids.max=max"),
        "capped could not use its delegated cgroup:\n{console}"
    );
    shut_down(node);
}
