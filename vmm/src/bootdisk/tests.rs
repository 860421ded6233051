//! Boot disks made by mkfs.ext4/sfdisk, and crafted ones.

use super::*;

#[test]
fn versions_sort_like_sort_v() {
    assert_eq!(
        compare_versions("6.1.0-9-amd64", "6.1.0-10-amd64"),
        Ordering::Less
    );
    assert_eq!(compare_versions("6.10.0", "6.9.0"), Ordering::Greater);
    assert_eq!(compare_versions("5.10", "5.10"), Ordering::Equal);
}

#[test]
fn newest_kernel_with_its_initrd() {
    let names: Vec<String> = [
        "vmlinuz-6.1.0-9-cloud-amd64",
        "vmlinuz-6.1.0-10-cloud-amd64",
        "initrd.img-6.1.0-9-cloud-amd64",
        "initrd.img-6.1.0-10-cloud-amd64",
        "config-6.1.0-10-cloud-amd64",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        pick_kernel(&names),
        Some((
            "6.1.0-10-cloud-amd64".into(),
            Some("initrd.img-6.1.0-10-cloud-amd64".into())
        ))
    );
    assert_eq!(pick_kernel(&["System.map".to_string()]), None);
}

fn mkfs(image: &Path, root: &Path, offset_sectors: u64) {
    // mkfs.ext4 -E offset= writes the filesystem at a byte offset inside the image.
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E"])
        .arg(format!("offset={}", offset_sectors * 512))
        .arg("-d")
        .arg(root)
        .arg(image)
        .arg("16M")
        .status()
        .expect("mkfs.ext4 (e2fsprogs) must be installed");
    assert!(status.success());
}

fn boot_tree(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(
        root.join("boot/vmlinuz-6.1.0-10-cloud-amd64"),
        b"new kernel",
    )
    .unwrap();
    std::fs::write(
        root.join("boot/initrd.img-6.1.0-10-cloud-amd64"),
        b"new initrd",
    )
    .unwrap();
    std::fs::write(root.join("boot/vmlinuz-6.1.0-9-cloud-amd64"), b"old kernel").unwrap();
    root
}

#[test]
fn extracts_from_an_mbr_partition() {
    let dir = tempfile::tempdir().unwrap();
    let root = boot_tree(dir.path());
    let image = dir.path().join("disk.raw");
    std::fs::write(&image, []).unwrap();
    mkfs(&image, &root, 2048);
    // One MBR entry: Linux (0x83) from sector 2048.
    let mut mbr = vec![0u8; 512];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&32768u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &mbr, 0).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let found = extract(&image, &out).unwrap();
    assert_eq!(found.version, "6.1.0-10-cloud-amd64");
    assert_eq!(found.partition.number, 1);
    assert_eq!(found.root_arg(), "root=/dev/vda1");
    assert_eq!(std::fs::read(&found.kernel).unwrap(), b"new kernel");
    assert_eq!(std::fs::read(found.initrd.unwrap()).unwrap(), b"new initrd");
}

#[test]
fn extracts_from_a_gpt_partition() {
    let dir = tempfile::tempdir().unwrap();
    let root = boot_tree(dir.path());
    let image = dir.path().join("gpt.raw");
    std::fs::write(&image, vec![0u8; 20 << 20]).unwrap();
    let mut sfdisk = std::process::Command::new("sfdisk")
        .arg("--quiet")
        .arg(&image)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (fdisk package) must be installed");
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\nstart=2048, size=32768, type=linux\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    mkfs(&image, &root, 2048);
    let found = extract(&image, dir.path()).unwrap();
    assert_eq!(
        found.partition,
        Partition {
            number: 1,
            offset: 2048 * 512
        }
    );
    assert_eq!(std::fs::read(&found.kernel).unwrap(), b"new kernel");
}

#[test]
fn a_disk_without_a_kernel_says_what_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("blank.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let err = extract(&image, dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("blank.raw") && err.contains("no ext4"),
        "{err}"
    );
}

/// A bare ext4 image holding `files` (path under the root, content).
fn ext4_image(dir: &Path, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let root = dir.join("crafted-root");
    for (path, data) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let image = dir.join("crafted.raw");
    std::fs::write(&image, []).unwrap();
    mkfs(&image, &root, 0);
    image
}

#[test]
fn a_huge_declared_kernel_size_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), &[("boot/vmlinuz-1.0", b"tiny".to_vec())]);
    // The inode now says 1 TiB: Ext4::read would allocate that much.
    let ok = std::process::Command::new("debugfs")
        .args(["-w", "-R", "sif /boot/vmlinuz-1.0 size 0x10000000000"])
        .arg(&image)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("debugfs (e2fsprogs)")
        .success();
    assert!(ok);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let t = std::time::Instant::now();
    let err = extract(&image, &out).unwrap_err();
    assert!(
        matches!(&err, BootDiskError::TooLarge { what: "kernel", limit, .. } if *limit == KERNEL_MAX),
        "{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert!(err.to_string().contains("/boot/vmlinuz-1.0"), "{err}");
}

#[test]
fn a_superblock_declaring_billions_of_block_groups_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), &[("boot/vmlinuz-1.0", b"tiny".to_vec())]);
    let mut disk = std::fs::read(&image).unwrap();
    // The superblock (at 1 KiB): 2^32 - 1 blocks, one per group, and no metadata
    // checksum, so nothing objects before Ext4::load allocates a 16-byte descriptor
    // per group (64 GiB; the fuzzer found 3 GB in a 2 KB disk).
    let sb = 1024;
    disk[sb + 0x4..sb + 0x8].copy_from_slice(&u32::MAX.to_le_bytes());
    disk[sb + 0x20..sb + 0x24].copy_from_slice(&1u32.to_le_bytes());
    let ro_compat = u32::from_le_bytes(disk[sb + 0x64..sb + 0x68].try_into().unwrap());
    disk[sb + 0x64..sb + 0x68].copy_from_slice(&(ro_compat & !0x400).to_le_bytes());
    std::fs::write(&image, &disk).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let err = extract(&image, &out).unwrap_err();
    assert!(
        matches!(&err, BootDiskError::NoKernel { reason, .. }
            if reason.contains(&format!("block groups, more than the {MAX_BLOCK_GROUPS} read"))),
        "{err}"
    );
}

#[test]
fn a_kernel_or_initrd_over_its_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(
        dir.path(),
        &[
            ("boot/vmlinuz-2.0", vec![7u8; 5000]),
            ("boot/initrd.img-2.0", vec![9u8; 9000]),
        ],
    );
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let opts = |kernel, initrd| ExtractOptions {
        limits: Limits {
            kernel,
            initrd,
            ..Limits::default()
        },
        ..ExtractOptions::default()
    };
    let err = extract_with(&image, &out, &opts(4999, 1 << 20)).unwrap_err();
    assert!(
        matches!(
            err,
            BootDiskError::TooLarge {
                what: "kernel",
                limit: 4999,
                ..
            }
        ),
        "{err}"
    );
    let err = extract_with(&image, &out, &opts(5000, 8999)).unwrap_err();
    assert!(
        matches!(
            err,
            BootDiskError::TooLarge {
                what: "initrd",
                limit: 8999,
                ..
            }
        ),
        "{err}"
    );
    let found = extract_with(&image, &out, &opts(5000, 9000)).unwrap();
    assert_eq!(std::fs::read(found.kernel).unwrap(), vec![7u8; 5000]);
    assert_eq!(std::fs::read(found.initrd.unwrap()).unwrap().len(), 9000);
}

/// A protective MBR and a GPT header whose fields come from the caller.
fn gpt_disk(table_lba: u64, entries: &[(u64, u8)]) -> Vec<u8> {
    let mut d = vec![0u8; 64 << 10];
    d[446 + 4] = 0xee;
    d[510] = 0x55;
    d[511] = 0xaa;
    d[512..520].copy_from_slice(b"EFI PART");
    d[512 + 72..512 + 80].copy_from_slice(&table_lba.to_le_bytes());
    d[512 + 80..512 + 84].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    d[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
    for (i, (first_lba, type_byte)) in entries.iter().enumerate() {
        let e = 1024 + i * 128;
        d[e] = *type_byte;
        d[e + 32..e + 40].copy_from_slice(&first_lba.to_le_bytes());
    }
    d
}

#[test]
fn partition_offsets_that_overflow_are_skipped() {
    // Entries whose byte offset does not fit in 64 bits, one that leaves no room for
    // the superblock, and a table LBA that overflows.
    let disk = gpt_disk(2, &[(u64::MAX, 1), (u64::MAX / 512, 1), (1 << 60, 1)]);
    let parts = partitions(&disk).unwrap();
    assert_eq!(
        parts,
        vec![
            Partition {
                number: 2,
                offset: u64::MAX / 512 * 512
            },
            Partition {
                number: 0,
                offset: 0
            }
        ]
    );
    assert_eq!(partitions(&gpt_disk(u64::MAX, &[(1, 1)])).unwrap().len(), 1);
    // Scanning them finds nothing, without panicking on the superblock offset.
    let mut out = Vec::new();
    scan(Arc::new(disk), &Limits::default(), &mut out).unwrap();
    let err = receive(
        &mut &out[..],
        Path::new("crafted"),
        Path::new("/nonexistent"),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, BootDiskError::NoKernel { .. }), "{err}");
}

fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn the_monitor_trusts_nothing_the_reader_sends() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        kernel: 100,
        ..Limits::default()
    };
    let recv = |bytes: Vec<u8>| receive(&mut &bytes[..], Path::new("d"), dir.path(), &limits);
    // A version that would leave the output directory.
    let e = recv(frame(b'P', b"1 0 0 ../../etc/x")).unwrap_err();
    assert!(matches!(e, BootDiskError::Reader { .. }), "{e}");
    // More kernel than the cap, without saying so.
    let mut s = frame(b'P', b"1 0 0 1.0");
    s.extend(frame(b'K', &[0u8; 64]));
    s.extend(frame(b'K', &[0u8; 64]));
    let e = recv(s).unwrap_err();
    assert!(
        matches!(e, BootDiskError::TooLarge { limit: 100, .. }),
        "{e}"
    );
    // An oversized frame, data before the location, a stream that stops.
    let mut big = vec![b'K'];
    big.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(recv(big), Err(BootDiskError::Reader { .. })));
    assert!(matches!(
        recv(frame(b'K', b"x")),
        Err(BootDiskError::Reader { .. })
    ));
    assert!(matches!(
        recv(frame(b'P', b"1 0 0 1.0")),
        Err(BootDiskError::Reader { .. })
    ));
    // Initrd data when none was announced.
    let mut s = frame(b'P', b"1 0 0 1.0");
    s.extend(frame(b'I', b"x"));
    assert!(matches!(recv(s), Err(BootDiskError::Reader { .. })));
    // And a well-formed stream lands in the directory.
    let mut s = frame(b'P', b"2 1048576 0 1.0");
    s.extend(frame(b'K', b"kernel"));
    s.extend(frame(b'D', b""));
    let files = recv(s).unwrap();
    assert_eq!(files.kernel, dir.path().join("vmlinuz-1.0"));
    assert_eq!(std::fs::read(&files.kernel).unwrap(), b"kernel");
    assert_eq!(files.root_arg(), "root=/dev/vda2");
}
