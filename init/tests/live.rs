//! Live updates of REAL running zones (init in host mode, the `zone` monitor, a
//! busybox rootfs): limits and nics change through `Update` and through a manifest
//! edit while the zone's init keeps its pid; a value the zone cannot take changes
//! nothing.

mod common;

use common::*;
use host::cgroup::Hierarchy;
use spec::api::PlanStep;
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A control file of the zone `uuid`'s cgroup: `v1` in that controller's hierarchy
/// on a v1 host, `v2` in the zone's one directory on a v2 host.
fn cgroup_file(uuid: &str, controller: &str, v1: &str, v2: &str) -> PathBuf {
    match Hierarchy::detect().unwrap() {
        Hierarchy::V1 { controllers } => controllers[controller].join("skerry").join(uuid).join(v1),
        Hierarchy::V2 { root } => root.join("skerry").join(uuid).join(v2),
    }
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The zone's cgroup limits as the kernel has them: (memory bytes, CFS quota µs,
/// pids.max).
fn limits(uuid: &str) -> (u64, String, String) {
    let mem = read(&cgroup_file(
        uuid,
        "memory",
        "memory.limit_in_bytes",
        "memory.max",
    ));
    let cpu = match Hierarchy::detect().unwrap() {
        Hierarchy::V1 { .. } => read(&cgroup_file(uuid, "cpu", "cpu.cfs_quota_us", "")),
        Hierarchy::V2 { .. } => read(&cgroup_file(uuid, "cpu", "", "cpu.max"))
            .split(' ')
            .next()
            .unwrap()
            .to_string(),
    };
    let pids = read(&cgroup_file(uuid, "pids", "pids.max", "pids.max"));
    (mem.parse().unwrap(), cpu, pids)
}

fn memory_usage(uuid: &str) -> u64 {
    read(&cgroup_file(
        uuid,
        "memory",
        "memory.usage_in_bytes",
        "memory.current",
    ))
    .parse()
    .unwrap()
}

/// The zone's init pid and its monitor's, as `Info` reports them.
async fn pids_of(conn: &zbus::Connection, name: &str) -> (u64, u64) {
    let info: String = call(conn, "Info", &(name,)).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let zone = info["monitor"]["instance_pid"].as_u64().expect("zone pid");
    (zone, info["pid"].as_u64().unwrap())
}

fn uuid_of(pool: &TestPool, name: &str) -> String {
    let dir = pool.instance_dir(name).expect("instance dir");
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

async fn update(
    conn: &zbus::Connection,
    name: &str,
    payload: &str,
) -> zbus::Result<(bool, String)> {
    call(conn, "Update", &(name, payload)).await
}

fn manifest(memory: &str, cpu_cap: u32, pids: u32) -> String {
    // The zone's init holds 16M of its own (a doubled string), so the zone uses more
    // than the 16M smallest cap.
    format!(
        "zone lim {{\n    image \"busybox@1.36\"\n    memory \"{memory}\"\n    cpu-cap {cpu_cap}\n    \
         pids {pids}\n    init \"/bin/sh\" \"-c\" \"s=x; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24; do s=$s$s; done; trap 'exit 0' TERM INT; while :; do sleep 1; done\"\n}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_limits_change_live_and_a_refused_value_changes_nothing() {
    let zone = zone_bin();
    let bus = node_bus();
    let pool = TestPool::new();
    pool.manifest("lim.kdl", &manifest("128M", 50, 100));
    let init = Init::start_with(&pool, &bus, &zone);
    init.wait_line("skerry: instance lim zone running", T);
    let conn = connect(&bus).await;
    wait_state(&conn, "lim", "running", T).await;
    let uuid = uuid_of(&pool, "lim");
    let before = pids_of(&conn, "lim").await;
    assert_eq!(
        limits(&uuid),
        (128 << 20, "50000".into(), "100".into()),
        "the zone did not start with its limits"
    );
    testkit::wait_for("the zone's init to hold 16M", T, || {
        (memory_usage(&uuid) > 17 << 20).then_some(())
    });

    // vmadm update's SmartOS keys: applied to the running zone's cgroup.
    let (restart, msg) = update(
        &conn,
        "lim",
        r#"{"max_physical_memory": 256, "cpu_cap": 25, "max_lwps": 150}"#,
    )
    .await
    .unwrap();
    assert!(!restart, "{msg}");
    assert!(msg.contains("applied live"), "{msg}");
    assert_eq!(limits(&uuid), (256 << 20, "25000".into(), "150".into()));
    assert_eq!(
        pids_of(&conn, "lim").await,
        before,
        "the zone was restarted"
    );

    // A cap under what the zone uses cannot apply live: refused, nothing changed.
    let manifest_before = std::fs::read_to_string(pool.path().join("manifests/lim.kdl")).unwrap();
    let config = pool.instance_dir("lim").unwrap().join("config.json");
    let config_before = std::fs::read_to_string(&config).unwrap();
    let err = update(&conn, "lim", r#"{"max_physical_memory": 16}"#)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot apply the change live") && err.contains("below"),
        "{err}"
    );
    // An unknown key and a bad value: refused with the key named, nothing changed.
    let err = update(&conn, "lim", r#"{"max_physical_memory": 200, "bogus": 1}"#)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus: unknown"), "{err}");
    let err = update(&conn, "lim", r#"{"cpu_cap": "lots"}"#)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cpu_cap: "), "{err}");
    assert_eq!(limits(&uuid), (256 << 20, "25000".into(), "150".into()));
    assert_eq!(
        std::fs::read_to_string(pool.path().join("manifests/lim.kdl")).unwrap(),
        manifest_before
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), config_before);
    let detail: String = call(&conn, "Get", &("lim",)).await.unwrap();
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["spec"]["memory"], 256u64 << 20, "{detail}");

    // A manifest edit of only limits: the plan says the update is live, and it is.
    pool.manifest("lim.kdl", &manifest("200M", 10, 120));
    let steps: Vec<PlanStep> = call(&conn, "Reconcile", &()).await.unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].action, "update", "{steps:?}");
    assert_eq!(
        steps[0].reason, "changed: memory, cpu-cap, pids; applied live",
        "{steps:?}"
    );
    init.wait_line("plan: update (live) lim: changed: memory, cpu-cap, pids", T);
    assert_eq!(limits(&uuid), (200 << 20, "10000".into(), "120".into()));
    assert_eq!(
        pids_of(&conn, "lim").await,
        before,
        "the zone was restarted"
    );
    let steps: Vec<PlanStep> = call(&conn, "Reconcile", &()).await.unwrap();
    assert!(steps.is_empty(), "{steps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_nics_are_added_and_removed_live() {
    let zone = zone_bin();
    let bus = node_bus();
    let pool = TestPool::new();
    let tag = format!("l{:x}", std::process::id() & 0xfffff);
    let bridge = format!("skl{:x}", std::process::id() & 0xfffff);
    struct DropBridge(String);
    impl Drop for DropBridge {
        fn drop(&mut self) {
            let _ = skerry_init::net::delete_link(&self.0);
        }
    }
    let _cleanup = DropBridge(bridge.clone());
    std::fs::create_dir_all(pool.path().join("config")).unwrap();
    std::fs::write(
        pool.path().join("config/node.kdl"),
        format!("nic-tag \"{tag}\" bridge=\"{bridge}\"\n"),
    )
    .unwrap();
    pool.manifest(
        "nets.kdl",
        &format!("zone nets {{\n    image \"busybox@1.36\"\n    nic net0 tag=\"{tag}\" ip=\"10.213.78.2/24\"\n}}\n"),
    );
    let init = Init::start_with(&pool, &bus, &zone);
    init.wait_line("skerry: instance nets zone running", T);
    let conn = connect(&bus).await;
    wait_state(&conn, "nets", "running", T).await;
    let before = pids_of(&conn, "nets").await;
    let zone_pid = before.0;
    // /proc/<pid>/net is the network namespace of that process: the zone's.
    let links = || std::fs::read_to_string(format!("/proc/{zone_pid}/net/dev")).unwrap();
    let addrs = || std::fs::read_to_string(format!("/proc/{zone_pid}/net/fib_trie")).unwrap();
    let ports = || {
        std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
            .unwrap()
            .count()
    };
    assert!(links().contains("net0:") && !links().contains("net1:"));
    assert_eq!(ports(), 1);

    let add = format!(
        r#"{{"add_nics": [{{"nic_tag": "{tag}", "ip": "10.213.79.3", "netmask": "255.255.255.0", "interface": "net1", "mac": "02:00:5e:00:53:01"}}]}}"#
    );
    let (restart, msg) = update(&conn, "nets", &add).await.unwrap();
    assert!(!restart && msg.contains("applied live"), "{msg}");
    assert!(
        links().contains("net1:"),
        "no net1 in the zone:\n{}",
        links()
    );
    assert!(addrs().contains("10.213.79.3"), "{}", addrs());
    assert_eq!(ports(), 2, "the new veth is not on {bridge}");
    assert_eq!(
        pids_of(&conn, "nets").await,
        before,
        "the zone was restarted"
    );

    // update_nics (by mac, SmartOS's key): the nic is plugged in again with the new mtu.
    let link = |name: &str| {
        let out = std::process::Command::new("nsenter")
            .args([
                "-t",
                &zone_pid.to_string(),
                "-n",
                "ip",
                "-o",
                "link",
                "show",
                name,
            ])
            .output()
            .expect("nsenter (util-linux) and ip (iproute2)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(link("net1").contains("mtu 1500"), "{}", link("net1"));
    let (restart, msg) = update(
        &conn,
        "nets",
        r#"{"update_nics": [{"mac": "02:00:5e:00:53:01", "mtu": 1400}]}"#,
    )
    .await
    .unwrap();
    assert!(!restart && msg.contains("applied live"), "{msg}");
    assert!(link("net1").contains("mtu 1400"), "{}", link("net1"));
    assert!(
        link("net1").contains("02:00:5e:00:53:01"),
        "{}",
        link("net1")
    );
    assert!(addrs().contains("10.213.79.3"), "{}", addrs());

    let (restart, msg) = update(&conn, "nets", r#"{"remove_nics": ["net1"]}"#)
        .await
        .unwrap();
    assert!(!restart && msg.contains("applied live"), "{msg}");
    assert!(
        !links().contains("net1:"),
        "net1 still in the zone:\n{}",
        links()
    );
    assert!(links().contains("net0:"));
    assert_eq!(ports(), 1);
    assert_eq!(
        pids_of(&conn, "nets").await,
        before,
        "the zone was restarted"
    );

    // A nic the manifest gains is plugged in too, and comes back after a restart.
    pool.manifest(
        "nets.kdl",
        &format!(
            "zone nets {{\n    image \"busybox@1.36\"\n    nic net0 tag=\"{tag}\" ip=\"10.213.78.2/24\"\n    \
             nic net2 tag=\"{tag}\" ip=\"10.213.80.4/24\"\n}}\n"
        ),
    );
    let steps: Vec<PlanStep> = call(&conn, "Reconcile", &()).await.unwrap();
    assert_eq!(
        steps.iter().map(|s| s.reason.as_str()).collect::<Vec<_>>(),
        vec!["changed: nic; applied live"]
    );
    assert!(links().contains("net2:"), "{}", links());
    let () = call(&conn, "Reboot", &("nets", false)).await.unwrap();
    let deadline = std::time::Instant::now() + T;
    let dev = loop {
        let info: String = call(&conn, "Info", &("nets",)).await.unwrap();
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        let pid = info["monitor"]["instance_pid"].as_u64();
        if let Some(pid) = pid.filter(|&p| p != zone_pid) {
            if let Ok(dev) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) {
                if dev.contains("net2:") {
                    break dev;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reboot with net2: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(dev.contains("net0:"), "{dev}");
}
