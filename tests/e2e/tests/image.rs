//! The boot image pipeline on its own: reproducible builds, what the initramfs
//! carries, and a PXE boot (iPXE over QEMU's TFTP, per-MAC script) plus a reboot with
//! a kept, edited pool disk, driven by a probe /init instead of the real one.

use e2e::boot_image::{assemble, node_image};
use e2e::node::NodeBuilder;
use e2e::pool::PoolDisk;
use e2e::{repo_root, run};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(300);

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path)).expect("sha256sum runs");
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The initramfs's entries through `zstd -dc | cpio -it` and then `filter`, a shell
/// pipeline stage.
fn initramfs_listing(image: &Path, cpio_flags: &str, filter: &str) -> Vec<String> {
    let listing = run(Command::new("sh").arg("-c").arg(format!(
        "zstd -dc '{}' | cpio {cpio_flags} --quiet | {filter}",
        image.join("initramfs").display()
    )))
    .expect("the initramfs is a zstd-compressed cpio archive");
    listing.lines().map(str::to_string).collect()
}

/// Entry names, in archive order.
fn initramfs_entries(image: &Path) -> Vec<String> {
    initramfs_listing(image, "-it", "cat")
}

/// `cpio -itv` lines without the link count and date: mode, owner, size, name.
fn initramfs_entries_long(image: &Path) -> Vec<String> {
    initramfs_listing(image, "-itv", "awk '{print $1, $3, $4, $5, $9, $10, $11}'")
}

#[test]
fn image_build_is_reproducible_and_carries_the_node() {
    let image = node_image().expect("build-image/build");
    let again = tempfile::tempdir().unwrap();
    let again = assemble(again.path(), None).expect("second build");
    // First what differs, in words: the archive's entries (mode, size, name).
    let (a, b) = (
        initramfs_entries_long(&image.dir),
        initramfs_entries_long(&again.dir),
    );
    let only_a: Vec<&String> = a.iter().filter(|e| !b.contains(e)).collect();
    let only_b: Vec<&String> = b.iter().filter(|e| !a.contains(e)).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "two builds of the same inputs differ in their initramfs entries:\nfirst only: {only_a:#?}\nsecond only: {only_b:#?}"
    );
    for f in ["vmlinuz", "initramfs", "boot.ipxe", "manifest.json"] {
        let (a, b) = (image.dir.join(f), again.dir.join(f));
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{f} differs between two builds of the same inputs ({} vs {})",
            a.display(),
            b.display()
        );
    }

    let manifest = std::fs::read_to_string(image.dir.join("manifest.json")).unwrap();
    for f in ["vmlinuz", "initramfs", "boot.ipxe"] {
        let sum = sha256(&image.dir.join(f));
        assert!(
            manifest.contains(&format!("\"name\": \"{f}\"")) && manifest.contains(&sum),
            "manifest.json lacks {f} with sha256 {sum}:\n{manifest}"
        );
    }

    let entries = initramfs_entries(&image.dir);
    let mut sorted = entries.clone();
    sorted.sort();
    assert_eq!(entries, sorted, "cpio entries are not sorted");
    let kver = manifest
        .split("\"kernel_version\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("manifest.json names the kernel version");
    let mods = format!("lib/modules/{kver}");
    let required = [
        "init".to_string(),
        "bin/init".into(),
        "bin/vmadm".into(),
        "bin/imgadm".into(),
        "bin/zone".into(),
        "bin/vmm".into(),
        "bin/busybox".into(),
        "bin/sh".into(),
        "usr/bin/dbus-daemon".into(),
        "usr/share/dbus-1/system.conf".into(),
        "etc/dbus-1/system.d/org.skerry.Node1.conf".into(),
        "etc/passwd".into(),
        "etc/profile".into(),
        "usr/sbin/dropbear".into(),
        "usr/bin/dropbearkey".into(),
        "lib64/ld-linux-x86-64.so.2".into(),
        format!("{mods}/modules.dep"),
        format!("{mods}/kernel/drivers/block/virtio_blk.ko"),
        format!("{mods}/kernel/drivers/net/virtio_net.ko"),
        format!("{mods}/kernel/drivers/virtio/virtio_pci.ko"),
        format!("{mods}/kernel/fs/overlayfs/overlay.ko"),
        format!("{mods}/kernel/net/bridge/bridge.ko"),
        format!("{mods}/kernel/drivers/net/veth.ko"),
        format!("{mods}/kernel/drivers/net/tun.ko"),
        format!("{mods}/kernel/arch/x86/kvm/kvm.ko"),
        format!("{mods}/kernel/arch/x86/kvm/kvm-amd.ko"),
        format!("{mods}/kernel/arch/x86/kvm/kvm-intel.ko"),
    ];
    for r in &required {
        assert!(entries.contains(r), "the initramfs lacks {r}");
    }
    let size = |f: &str| std::fs::metadata(image.dir.join(f)).unwrap().len();
    println!(
        "boot image: vmlinuz {} KiB, initramfs {} KiB (zstd), {} entries",
        size("vmlinuz") / 1024,
        size("initramfs") / 1024,
        entries.len()
    );
}

/// The probe's report lines of a console.
fn probe_lines(console: &str) -> String {
    let lines: Vec<&str> = console
        .lines()
        .filter(|l| l.starts_with("probe:"))
        .collect();
    lines.join("\n") + "\n"
}

#[test]
fn pxe_boot_and_kept_pool_with_a_probe_init() {
    node_image().expect("build-image/build");
    let tmp = tempfile::tempdir().unwrap();
    let probe = repo_root().join("tests/e2e/probe-init.sh");
    let image = assemble(&tmp.path().join("out"), Some(&probe)).expect("probe image");
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("a.kdl"),
        "zone a { image \"busybox@1.36\"; }\n",
    )
    .unwrap();
    std::fs::write(
        manifests.join("b.kdl"),
        "zone b { image \"busybox@1.36\"; }\n",
    )
    .unwrap();
    let disk = tmp.path().join("pool.img");

    // First boot: PXE, a fresh pool made from the manifests.
    let mut node = NodeBuilder::new(&image, BOOT)
        .pxe()
        .images(Path::new("none"))
        .manifests(&manifests)
        .pool_disk(&disk)
        .boot()
        .expect("run-node starts");
    node.wait_for(r"iPXE", BOOT).expect("iPXE runs");
    node.wait_for(r"node-52-54-00-5c-e0-01\.ipxe\.\.\. ok", BOOT)
        .expect("iPXE chains the per-MAC script from TFTP");
    let cmdline = node
        .wait_for(r"probe: cmdline (.*)", BOOT)
        .expect("probe runs")[1]
        .clone();
    assert!(cmdline.contains("skerry.pool=LABEL=zones"), "{cmdline}");
    assert!(cmdline.contains("ip=10.0.2.15::10.0.2.2:"), "{cmdline}");
    node.wait_for(r"probe: done", BOOT).expect("probe finishes");
    let first = probe_lines(&node.console());
    let timeline = node.wait_exit(BOOT).expect("the node powers off");
    println!("{timeline}");
    assert!(
        timeline.contains("iPXE") && timeline.contains("kernel"),
        "{timeline}"
    );
    assert!(first.contains("probe: manifests a.kdl b.kdl\n"), "{first}");
    assert!(first.contains("probe: boots 1\n"), "{first}");

    // Second boot: direct, same pool disk, manifests edited (b changed, a removed, c added).
    std::fs::remove_file(manifests.join("a.kdl")).unwrap();
    std::fs::write(
        manifests.join("b.kdl"),
        "zone b { image \"busybox@1.36\"; memory \"64M\"; }\n",
    )
    .unwrap();
    std::fs::write(
        manifests.join("c.kdl"),
        "zone c { image \"busybox@1.36\"; }\n",
    )
    .unwrap();
    let mut node = NodeBuilder::new(&image, BOOT)
        .images(Path::new("none"))
        .manifests(&manifests)
        .pool_disk(&disk)
        .boot()
        .expect("run-node starts");
    node.wait_for(r"probe: done", BOOT).expect("probe finishes");
    let second = probe_lines(&node.console());
    node.wait_exit(BOOT).expect("the node powers off");
    for m in [
        "virtio_pci",
        "virtio_blk",
        "virtio_net",
        "overlay",
        "bridge",
        "veth",
        "tun",
    ] {
        assert!(
            second.contains(&format!("probe: module {m} ok")),
            "{second}"
        );
    }
    for b in ["init", "vmadm", "imgadm", "zone", "vmm"] {
        assert!(second.contains(&format!("probe: bin {b} runs")), "{second}");
    }
    assert!(second.contains("probe: kvm ok"), "{second}");
    assert!(second.contains("probe: pool /dev/vda"), "{second}");
    assert!(
        second.contains("probe: manifests b.kdl c.kdl\n"),
        "{second}"
    );
    assert!(
        second.contains("probe: boots 2"),
        "the pool did not persist:\n{second}"
    );
    assert!(second.contains("probe: system bus ok"), "{second}");
    assert!(!second.contains("FAILED"), "{second}");

    let pool = PoolDisk::new(&disk);
    assert_eq!(pool.ls("/manifests").unwrap(), ["b.kdl", "c.kdl"]);
    assert!(pool.cat("/manifests/b.kdl").unwrap().contains("64M"));
}
