//! A zone's metadata under init in host mode: what the zone puts survives a kill -9
//! of init and a monitor that init restarts (and so rewrites config.json for).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Runs a static mdata tool on the host against the zone's socket (`sock`): its exit
/// code and stdout. `timeout`, since the tools wait for an absent service.
fn mdata(sock: &Path, tool: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(testkit::program("timeout"))
        .arg("10")
        .arg(testkit::static_mdata_tools().join(tool))
        .args(args)
        .env("MDATA_SOCKET", sock)
        .env("MDATA_SERIAL_DEVICE", "/nonexistent")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_puts_survive_an_init_kill_and_a_monitor_restart() {
    let zone = zone_bin();
    let bus = node_bus();
    let pool = TestPool::new();
    pool.manifest(
        "web.kdl",
        "zone web { image \"busybox@1.36\"; memory \"64M\"; metadata { role \"web\"; } }\n",
    );
    let mut init = Init::start_with(&pool, &bus, &zone);
    init.wait_line("skerry: instance web zone running", T);
    let conn = connect(&bus).await;
    let pid = wait_state(&conn, "web", "running", T).await;
    let dir = pool.instance_dir("web").unwrap();
    let uuid = dir.file_name().unwrap().to_str().unwrap().to_string();
    let sock = monitor::zonecontrol_dir(&pool.run_dir, &uuid).join(monitor::METADATA_SOCKET);
    assert_eq!(
        mdata(&sock, "mdata-get", &["sdc:uuid"]),
        (0, format!("{uuid}\n"))
    );
    assert_eq!(mdata(&sock, "mdata-get", &["role"]), (0, "web\n".into()));
    assert_eq!(mdata(&sock, "mdata-put", &["kept", "by-the-zone"]).0, 0);
    assert_eq!(mdata(&sock, "mdata-put", &["role", "db"]).0, 0);
    // `vmadm get` shows what the zone sees: the manifest's keys with its own writes.
    let get = |conn: zbus::Connection| async move {
        let json: String = call(&conn, "Get", &("web",)).await.unwrap();
        let detail: spec::api::InstanceDetail = serde_json::from_str(&json).unwrap();
        detail.customer_metadata
    };
    let seen = get(conn.clone()).await;
    assert_eq!(seen.get("kept").map(String::as_str), Some("by-the-zone"));
    assert_eq!(seen.get("role").map(String::as_str), Some("db"));
    assert_eq!(mdata(&sock, "mdata-delete", &["role"]).0, 0);
    assert_eq!(get(conn.clone()).await.get("role"), None);
    assert_eq!(mdata(&sock, "mdata-put", &["role", "web"]).0, 0);

    // kill -9 init: the monitor and its store go on; a new init adopts them.
    init.kill9();
    let init = Init::start_with(&pool, &bus, &zone);
    init.wait_line("skerry: node ready", T);
    let conn = connect(&bus).await;
    assert_eq!(wait_state(&conn, "web", "running", T).await, pid);
    assert_eq!(
        mdata(&sock, "mdata-get", &["kept"]),
        (0, "by-the-zone\n".into())
    );

    // A monitor killed and restarted by init (which rewrites config.json first)
    // reads the zone's write back from the pool.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + T;
    loop {
        if let Some((st, p)) = state_of(&conn, "web").await {
            if st == "running" && p != pid && p != 0 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "monitor not restarted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        mdata(&sock, "mdata-get", &["kept"]),
        (0, "by-the-zone\n".into())
    );
    assert_eq!(mdata(&sock, "mdata-get", &["role"]), (0, "web\n".into()));
    let saved = std::fs::read_to_string(dir.join("metadata.json")).unwrap();
    assert!(saved.contains("by-the-zone"), "{saved}");
}
