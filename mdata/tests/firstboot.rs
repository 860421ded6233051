//! The first-boot agent against our server: hostname, SSH keys, resolvers, the `ip`
//! commands it runs (recorded, and for real in a network namespace with iproute2's
//! and busybox's `ip`), and the once-per-instance user-script.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use mdata::firstboot::{self, Step};

fn firstboot(sock: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_mdata-firstboot"))
        .args(args)
        .env("MDATA_SOCKET", sock)
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A root with one link whose MAC is the metadata's nic's.
fn fake_root(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("sys/class/net/eth0")).unwrap();
    std::fs::write(
        root.join("sys/class/net/eth0/address"),
        "02:08:20:6a:1c:2f\n",
    )
    .unwrap();
    root
}

fn guest_store(dir: &Path) -> std::sync::Arc<std::sync::Mutex<mdata::MetadataStore>> {
    let store = store_at(&dir.join("metadata.json"));
    store
        .lock()
        .unwrap()
        .put("user-script", "echo ran >> \"$PWD/user-script-runs\"\n")
        .unwrap();
    store
}

#[test]
fn plans_network_steps_from_smartos_json() {
    let mut md = BTreeMap::new();
    md.insert("sdc:uuid".to_string(), UUID.to_string());
    let s = mdata::MetadataStore::in_memory(info(), BTreeMap::new(), mdata::Limits::default());
    for k in ["sdc:nics", "sdc:resolvers"] {
        md.insert(k.to_string(), s.get(k).unwrap());
    }
    md.insert(
        "sdc:routes".to_string(),
        r#"[{"linklocal":false,"dst":"10.1.0.0/16","gateway":"10.88.0.254"},
            {"linklocal":true,"dst":"10.2.0.0/16","gateway":"10.88.0.10"}]"#
            .to_string(),
    );
    let facts = firstboot::fetch(&mut md).unwrap();
    let links = vec![("eth0".to_string(), "02:08:20:6A:1C:2F".to_string())];
    let ips: Vec<String> = firstboot::plan(&facts, &links)
        .into_iter()
        .filter_map(|s| match s {
            Step::Ip(a) => Some(a.join(" ")),
            _ => None,
        })
        .collect();
    assert_eq!(
        ips,
        [
            "link set dev eth0 mtu 1500",
            "addr flush dev eth0",
            "addr add 10.88.0.10/24 dev eth0",
            "link set dev eth0 up",
            "-4 route replace default via 10.88.0.1 dev eth0",
            "route replace 10.1.0.0/16 via 10.88.0.254",
            "route replace 10.2.0.0/16 dev eth0",
        ]
    );
    // No link with that MAC or name: said, not guessed.
    let steps = firstboot::plan(&facts, &[("ens3".into(), "02:00:00:00:00:01".into())]);
    assert!(
        matches!(&steps[0], Step::Warn(m) if m.contains("02:08:20:6a:1c:2f")),
        "{steps:?}"
    );
}

#[test]
fn configures_a_root_and_runs_the_user_script_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    let sock = serve_socket(dir.path(), guest_store(dir.path()));
    // A recording `ip`: the commands land in ip.log.
    let ip = dir.path().join("ip");
    std::fs::write(
        &ip,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}/ip.log\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ip, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = [
        "--root",
        root.to_str().unwrap(),
        "--ip",
        ip.to_str().unwrap(),
    ];

    assert_eq!(firstboot(&sock, &args).status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "web01\n"
    );
    let keys = root.join("root/.ssh/authorized_keys");
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap(),
        "ssh-ed25519 AAAAC3Nz test@skerry\n"
    );
    assert_eq!((mode(&keys), mode(&root.join("root/.ssh"))), (0o600, 0o700));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
        "nameserver 10.88.0.1\n"
    );
    let log = std::fs::read_to_string(dir.path().join("ip.log")).unwrap();
    assert!(log.contains("addr add 10.88.0.10/24 dev eth0\n"), "{log}");
    assert!(
        log.contains("-4 route replace default via 10.88.0.1 dev eth0\n"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("user-script-runs")).unwrap(),
        "ran\n"
    );
    assert!(firstboot::apply::user_script_marker(&root, UUID).exists());

    // The second boot configures again but does not re-run the script.
    assert_eq!(firstboot(&sock, &args).status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(root.join("user-script-runs")).unwrap(),
        "ran\n"
    );
}

#[test]
fn dry_run_prints_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    let sock = serve_socket(dir.path(), guest_store(dir.path()));
    let out = firstboot(&sock, &["--root", root.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "would set hostname web01",
        "would write /root/.ssh/authorized_keys (mode 0600)",
        "would run ip addr add 10.88.0.10/24 dev eth0",
        "would run ip -4 route replace default via 10.88.0.1 dev eth0",
        "would write /etc/resolv.conf (mode 0644)",
        &format!("would run user-script (first boot of instance {UUID})"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(
        !root.join("etc").exists() && !root.join("root").exists() && !root.join("var").exists()
    );
}

/// Runs the agent in a new network namespace holding a veth link with the nic's MAC,
/// with `ip` being `ip_program`, and returns what `ip` shows afterwards.
fn in_netns(ip_program: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let sock = serve_socket(dir.path(), store_at(&dir.path().join("metadata.json")));
    let script = format!(
        "set -e
         ip link add mdfb0 address 02:08:20:6a:1c:2f type veth peer name mdfb1
         ip link set mdfb1 up
         mkdir -p {root}/sys/class/net/mdfb0
         echo 02:08:20:6a:1c:2f > {root}/sys/class/net/mdfb0/address
         {agent} --root {root} --ip {ip}
         ip -o -4 addr show dev mdfb0
         ip -4 route show",
        root = root.display(),
        agent = env!("CARGO_BIN_EXE_mdata-firstboot"),
        ip = ip_program.display(),
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .env("MDATA_SOCKET", &sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn check_configured(shown: &str) {
    assert!(shown.contains("inet 10.88.0.10/24"), "{shown}");
    assert!(shown.contains("default via 10.88.0.1 dev mdfb0"), "{shown}");
}

#[test]
fn configures_a_real_link_with_iproute2() {
    check_configured(&in_netns(Path::new("ip")));
}

#[test]
fn configures_a_real_link_with_busybox_ip() {
    let dir = tempfile::tempdir().unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox (tests/deps: busybox-static)");
    // busybox picks its applet from argv[0].
    let ip = dir.path().join("ip");
    std::os::unix::fs::symlink(busybox, &ip).unwrap();
    check_configured(&in_netns(&ip));
}
