//! `zone run` against the real kernel, asserting from inside the zone.

mod common;
use common::*;
use std::path::Path;

#[test]
fn zone_init_is_pid_1_with_its_hostname_and_only_lo() {
    require_root();
    let r = busybox_rootfs();
    let out = sh(
        r.path(),
        &["--hostname", "zt-host"],
        "cat /etc/hostname; echo pid=$$; hostname; cat /proc/net/dev; ls /sys/class/net",
    );
    assert!(
        out.starts_with("zt-host\npid=1\n"),
        "/etc/hostname names the zone: {out}"
    );
    assert!(
        !r.path().join("etc/hostname").exists(),
        "/etc/hostname reached the image"
    );
    assert!(out.contains("\nzt-host\n"), "{out}");
    let ifaces: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("zt-host"))
        .skip(1)
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, _)| n.trim())
                .filter(|n| !n.contains('|'))
        })
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{out}");
    assert_eq!(out.lines().last(), Some("lo"), "/sys/class/net: {out}");
}

#[test]
fn zone_root_is_mapped_to_an_unprivileged_host_range() {
    require_root();
    let r = busybox_rootfs();
    let out = sh(
        r.path(),
        &[],
        "id -u; cat /proc/self/uid_map /proc/self/gid_map; stat -c %u /etc/motd",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "zone root is uid 0 inside: {out}");
    for map in &lines[1..3] {
        let f: Vec<u64> = map.split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert_eq!(f[0], 0);
        assert_ne!(f[1], 0, "mapping is the identity: {out}");
        assert!(f[1] >= 65536, "zone root maps to a low host id: {out}");
        assert_eq!(f[2], 65536);
    }
    // The image's root-owned files look root-owned in the zone (idmapped lower).
    assert_eq!(lines[3], "0", "{out}");
}

#[test]
fn writes_do_not_reach_the_image() {
    require_root();
    let r = busybox_rootfs();
    let out = sh(
        r.path(),
        &[],
        "echo new > /newfile && echo changed >> /etc/motd && rm /bin/vi && cat /newfile /etc/motd && ls /bin/vi 2>&1; true",
    );
    assert!(out.contains("new\nfrom the image\nchanged\n"), "{out}");
    assert!(out.contains("No such file"), "{out}");
    assert!(!r.path().join("newfile").exists());
    assert_eq!(
        std::fs::read_to_string(r.path().join("etc/motd")).unwrap(),
        "from the image\n"
    );
    assert!(r.path().join("bin/vi").symlink_metadata().is_ok());
}

#[test]
fn memory_cap_kills_an_allocation_past_it() {
    require_root();
    let r = busybox_rootfs();
    let out = sh(
        r.path(),
        &["--memory", "32M"],
        "(dd if=/dev/zero of=/dev/null bs=96M count=1 2>/dev/null); echo big=$?; (dd if=/dev/zero of=/dev/null bs=4M count=1 2>/dev/null); echo small=$?",
    );
    assert!(
        out.contains("big=137"),
        "96M allocation under a 32M cap was not OOM-killed: {out}"
    );
    assert!(out.contains("small=0"), "{out}");
}

#[test]
fn pids_cap_stops_a_fork_loop() {
    require_root();
    let r = busybox_rootfs();
    // The fork loop runs in a subshell, which dies when fork fails; without the cap it
    // would never end (the test would time out). The count is taken by a glob: no fork.
    let out = sh(
        r.path(),
        &["--pids", "10"],
        "(while :; do sleep 30 & done) 2>/dev/null; echo loop=$?; set -- /proc/[0-9]*; echo count=$#",
    );
    assert!(out.contains("loop=2"), "the fork loop did not fail: {out}");
    let count: usize = out.split("count=").nth(1).unwrap().trim().parse().unwrap();
    assert!(
        (5..=10).contains(&count),
        "tasks in the zone: {count}: {out}"
    );
}

#[test]
fn cpu_cap_holds_a_busy_loop_near_its_share() {
    require_root();
    let r = busybox_rootfs();
    let out = sh(
        r.path(),
        &["--cpu-cap", "20"],
        "while :; do :; done & p=$!; read u0 x < /proc/uptime; sleep 3; read s < /proc/$p/stat; read u1 x < /proc/uptime; kill $p; echo \"$u0 $u1 $s\"",
    );
    let f: Vec<&str> = out.split_whitespace().collect();
    let (u0, u1): (f64, f64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
    // /proc/<pid>/stat after the two uptimes: field 14 utime, 15 stime (clock ticks).
    let ticks: f64 = f[2 + 13].parse::<f64>().unwrap() + f[2 + 14].parse::<f64>().unwrap();
    let hz = 100.0; // USER_HZ on x86_64
    let share = ticks / hz / (u1 - u0);
    assert!(
        (0.10..=0.35).contains(&share),
        "busy loop under cpu-cap 20 used {:.0}% ({out})",
        share * 100.0
    );
}

#[test]
fn cpu_cap_zero_means_no_cap() {
    require_root();
    let r = busybox_rootfs();
    let out = sh(r.path(), &["--cpu-cap", "0"], "echo ok");
    assert_eq!(out, "ok\n");
}

#[test]
fn exit_status_is_the_commands() {
    require_root();
    let r = busybox_rootfs();
    let (out, pid) = zone_run(
        &["--rootfs", r.path().to_str().unwrap()],
        &["/bin/sh", "-c", "exit 7"],
    );
    assert_eq!(out.status.code(), Some(7));
    assert_nothing_left(pid);
    // A child killed by a signal: the shell reports 128+n, which becomes ours.
    let (out, pid) = zone_run(
        &["--rootfs", r.path().to_str().unwrap()],
        &["/bin/sh", "-c", "sh -c 'kill -9 $$'; exit $?"],
    );
    assert_eq!(out.status.code(), Some(137));
    assert_nothing_left(pid);
}

#[test]
fn missing_rootfs_is_a_clear_error() {
    require_root();
    let (out, pid) = zone_run(&["--rootfs", "/nonexistent/zone-rootfs"], &["/bin/true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/nonexistent/zone-rootfs") && err.contains("No such file"),
        "{err}"
    );
    assert_nothing_left(pid);
}

#[test]
fn image_without_sh_is_a_clear_error() {
    require_root();
    let empty = tempfile::tempdir().unwrap();
    let (out, pid) = zone_run(
        &["--rootfs", empty.path().to_str().unwrap()],
        &["/bin/sh", "-c", "true"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/bin/sh: not found in the zone's rootfs"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(empty.path()).unwrap().next().is_none(),
        "the rootfs was written to"
    );
    assert_nothing_left(pid);
}

#[test]
fn seccomp_and_capabilities_confine_zone_root() {
    require_root();
    let r = busybox_rootfs();
    // Zone root may mount what a user namespace may (tmpfs, in its own mount namespace)
    // and set its hostname, but not load modules (seccomp + no CAP_SYS_MODULE), not
    // mount a host block device, and gains nothing through exec (no_new_privs).
    let out = sh(
        r.path(),
        &[],
        "grep CapBnd /proc/self/status; touch /m.ko; insmod /m.ko 2>&1; echo insmod=$?; \
         mkdir -p /mnt/t && mount -t tmpfs t /mnt/t; echo tmpfs=$?; hostname renamed; echo host=$?; \
         mount -t ext4 /dev/vda /mnt/t 2>&1; echo blockdev=$?; grep NoNewPrivs /proc/self/status",
    );
    let bnd = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    let mask = u64::from_str_radix(bnd, 16).unwrap();
    assert_eq!(mask & (1 << 16), 0, "CAP_SYS_MODULE kept: {out}");
    assert_eq!(mask & (1 << 17), 0, "CAP_SYS_RAWIO kept: {out}");
    assert!(out.contains("insmod=1"), "{out}");
    assert!(out.contains("tmpfs=0"), "{out}");
    assert!(out.contains("host=0"), "{out}");
    assert!(
        !out.contains("blockdev=0"),
        "a host block device was mounted: {out}"
    );
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}

/// The /proc masks and the read-only /sys and /proc/sys come from the runtime, so the
/// kernel locks them in the zone: zone root's CAP_SYS_ADMIN (in its user namespace)
/// cannot undo them, nor get a fresh unmasked procfs.
#[test]
fn zone_root_cannot_undo_the_proc_masks_or_read_only_mounts() {
    require_root();
    // Masks that exist on this kernel (no /proc/kcore here, for one).
    let file_mask = zone::rootfs::MASKED_PATHS
        .iter()
        .find(|p| p.starts_with("proc/") && Path::new("/").join(p).is_file())
        .expect("no masked /proc file exists on this host");
    let dir_mask = zone::rootfs::MASKED_PATHS
        .iter()
        .find(|p| p.starts_with("proc/") && Path::new("/").join(p).is_dir())
        .expect("no masked /proc directory exists on this host");
    let r = busybox_rootfs();
    let script = format!(
        "for p in /{file_mask} /{dir_mask} /proc/sys /proc; do umount $p 2>/dev/null; echo umount $p=$?; umount -l $p 2>/dev/null; echo umount -l $p=$?; done; \
         mount -o remount,rw /sys 2>/dev/null; echo remount /sys=$?; \
         mount -o remount,rw /proc/sys 2>/dev/null; echo remount /proc/sys=$?; \
         mount -o remount,rw,bind /proc/sys 2>/dev/null; echo rebind /proc/sys=$?; \
         mkdir -p /mnt/p; mount -t proc proc /mnt/p 2>/dev/null; echo fresh proc=$?; \
         echo; cat /proc/self/mountinfo"
    );
    let out = sh(r.path(), &[], &script);
    let (results, mountinfo) = out.split_once("\n\n").unwrap();
    for line in results.lines() {
        let (what, code) = line.rsplit_once('=').unwrap();
        assert_ne!(code, "0", "zone root could {what}: {out}");
    }
    // Each mask and read-only mount is still there, as it was.
    let mount_of = |path: &str| {
        mountinfo
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(path))
            .unwrap_or_else(|| panic!("{path} is no longer a mount: {mountinfo}"))
    };
    assert!(
        mount_of(&format!("/{dir_mask}")).contains(" - tmpfs "),
        "{mountinfo}"
    );
    let ro = |l: &str| {
        l.split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro")
    };
    assert!(ro(mount_of("/sys")), "{mountinfo}");
    assert!(ro(mount_of("/proc/sys")), "{mountinfo}");
    mount_of(&format!("/{file_mask}"));
    assert!(!mountinfo.contains("/mnt/p"), "{mountinfo}");
}

#[test]
fn signals_are_forwarded_and_a_second_one_kills_the_zone() {
    require_root();
    let r = busybox_rootfs();
    // The zone init (a shell as pid 1) ignores SIGTERM: the first is forwarded and
    // ignored, the second turns into SIGKILL of the whole zone.
    let mut child = std::process::Command::new(ZONE)
        .args([
            "run",
            "--rootfs",
            r.path().to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            "echo up; sleep 60; echo never",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 3];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert_eq!(&first, b"up\n");
    let term = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGTERM,
        )
        .unwrap()
    };
    term();
    std::thread::sleep(std::time::Duration::from_millis(200));
    term();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(137));
    assert_eq!(rest, "", "the zone went on after SIGKILL");
    assert_nothing_left(pid);
}

#[test]
fn bad_arguments_are_clear_errors() {
    require_root();
    let r = busybox_rootfs();
    let root = r.path().to_str().unwrap();
    let (out, _) = zone_run(&["--rootfs", root, "--net", "admin"], &["/bin/true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(err.contains("TAG=IP/PREFIX"), "{err}");
    let (out, _) = zone_run(&["--rootfs", root, "--memory", "12Q"], &["/bin/true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("12Q"));
    let (out, pid) = zone_run(
        &["--rootfs", root, "--hostname", &"h".repeat(70)],
        &["/bin/true"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("hostname"));
    assert_nothing_left(pid);
}

#[test]
fn a_terminal_on_stdin_gives_the_zone_a_pty() {
    require_root();
    let r = busybox_rootfs();
    assert!(
        std::path::Path::new("/usr/bin/script").exists(),
        "script(1) is missing: install bsdutils (tests/deps/zone.txt)"
    );
    // script(1) runs zone run on a pseudo-terminal: the zone gets its own pty as
    // controlling terminal and /dev/console; exit codes pass through (-e).
    let cmd = format!(
        "{ZONE} run --rootfs {} -- /bin/sh -c 'tty; test -t 0 && echo stdin-is-a-tty; exit 4'",
        r.path().display()
    );
    let out = std::process::Command::new("/usr/bin/script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("/dev/console"), "{text:?}");
    assert!(text.contains("stdin-is-a-tty"), "{text:?}");
}
