//! init in host mode running REAL zones (the `zone` monitor of this workspace, a
//! busybox rootfs): boot reconcile, stop/start through the API, a monitor crash,
//! kill -9 of init and re-adoption without duplicates, a removed manifest (data kept)
//! and `ensure "absent"` (data gone).

mod common;

use common::*;
use spec::api::PlanStep;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn monitors_of(pool: &TestPool, name: &str) -> Vec<u32> {
    let dir = pool.instance_dir(name).expect("instance dir");
    processes_with(&format!("monitor --config {}/config.json", dir.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_run_stop_start_and_survive_an_init_restart() {
    let zone = zone_bin();
    let bus = node_bus();
    let pool = TestPool::new();
    pool.manifest(
        "web.kdl",
        "zone web { image \"busybox@1.36\"; memory \"64M\"; }\n",
    );
    pool.manifest(
        "idle.kdl",
        "zone idle { image \"busybox@1.36\"; autoboot #false; }\n",
    );
    let mut init = Init::start_with(&pool, &bus, &zone);
    init.wait_line("skerry: instance web zone running", T);
    let ready = init.wait_line("skerry: node ready", T);
    assert!(ready.contains("(1 running)"), "{ready}");
    let conn = connect(&bus).await;
    let pid = wait_state(&conn, "web", "running", T).await;
    assert_ne!(pid, 0);
    assert_eq!(monitors_of(&pool, "web"), vec![pid]);
    assert_eq!(state_of(&conn, "idle").await.unwrap().0, "stopped");

    // Stop and start through the API.
    let () = call(&conn, "Stop", &("web", false, 5u32)).await.unwrap();
    assert_eq!(state_of(&conn, "web").await.unwrap(), ("stopped".into(), 0));
    assert!(
        monitors_of(&pool, "web").is_empty(),
        "monitor still running after Stop"
    );
    let () = call(&conn, "Start", &("web",)).await.unwrap();
    let pid = wait_state(&conn, "web", "running", T).await;
    let info: String = call(&conn, "Info", &("web",)).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["monitor"]["state"], "running", "{info}");
    assert_eq!(info["pid"], pid);

    // Reboot happens inside the same monitor...
    let () = call(&conn, "Reboot", &("web", false)).await.unwrap();
    assert_eq!(wait_state(&conn, "web", "running", T).await, pid);
    // ...unless a change waits for a restart: then a fresh monitor applies it.
    let (restart, msg): (bool, String) = call(&conn, "Update", &("web", r#"{"hostname": "web2"}"#))
        .await
        .unwrap();
    assert!(
        restart,
        "a running zone needs a restart for hostname: {msg}"
    );
    let () = call(&conn, "Reboot", &("web", false)).await.unwrap();
    let pid = wait_state(&conn, "web", "running", T).await;
    let cfg: monitor::InstanceConfig = serde_json::from_slice(
        &std::fs::read(pool.instance_dir("web").unwrap().join("config.json")).unwrap(),
    )
    .unwrap();
    assert!(
        matches!(cfg.spec.kind, spec::Kind::Zone(ref z) if z.hostname == "web2"),
        "config.json not rewritten"
    );
    assert_eq!(monitors_of(&pool, "web"), vec![pid]);

    // kill -9 init: the zone keeps running, a new init adopts it, no duplicate.
    let uuid_dir = pool.instance_dir("web").unwrap();
    init.kill9();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        monitors_of(&pool, "web"),
        vec![pid],
        "monitor died with init"
    );
    let init = Init::start_with(&pool, &bus, &zone);
    let ready = init.wait_line("skerry: node ready", T);
    assert!(ready.contains("(1 running)"), "{ready}");
    let conn = connect(&bus).await;
    assert_eq!(
        state_of(&conn, "web").await.unwrap(),
        ("running".into(), pid)
    );
    assert_eq!(
        monitors_of(&pool, "web"),
        vec![pid],
        "a duplicate monitor was started"
    );
    let steps: Vec<PlanStep> = call(&conn, "Reconcile", &()).await.unwrap();
    assert!(steps.is_empty(), "converged node planned {steps:?}");
    assert_eq!(
        state_of(&conn, "idle").await.unwrap().0,
        "stopped",
        "autoboot off stays off"
    );

    // The adopted monitor is still supervised: a crash is restarted.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    init.wait_line("skerry: instance web zone failed", T);
    let deadline = std::time::Instant::now() + T;
    let new_pid = loop {
        if let Some((st, p)) = state_of(&conn, "web").await {
            if st == "running" && p != pid && p != 0 {
                break p;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "crashed monitor not restarted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(monitors_of(&pool, "web"), vec![new_pid]);

    // Removing the manifest stops the zone and keeps its data.
    pool.remove_manifest("web.kdl");
    let steps: Vec<PlanStep> = call(&conn, "Reconcile", &()).await.unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(
        (steps[0].name.as_str(), steps[0].action.as_str()),
        ("web", "stop")
    );
    assert!(steps[0].reason.contains("data kept"), "{steps:?}");
    assert_eq!(state_of(&conn, "web").await.unwrap(), ("stopped".into(), 0));
    assert!(monitors_of(&pool, "web").is_empty());
    assert!(
        uuid_dir.join("state.json").exists(),
        "data of a removed manifest is kept"
    );
    let steps: Vec<PlanStep> = call(&conn, "Reconcile", &()).await.unwrap();
    assert!(steps.is_empty(), "{steps:?}");

    // ensure "absent" deletes it and its data.
    pool.manifest(
        "web.kdl",
        "zone web { image \"busybox@1.36\"; ensure \"absent\"; }\n",
    );
    let steps: Vec<PlanStep> = call(&conn, "Reconcile", &()).await.unwrap();
    assert_eq!(
        (steps[0].name.as_str(), steps[0].action.as_str()),
        ("web", "delete")
    );
    assert!(
        !uuid_dir.exists(),
        "ensure absent left {}",
        uuid_dir.display()
    );
    assert!(state_of(&conn, "web").await.is_none());
    init.wait_line("skerry: instance web zone deleted", T);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_zone_before_init_exits() {
    let zone = zone_bin();
    let bus = node_bus();
    let pool = TestPool::new();
    pool.manifest(
        "two.kdl",
        "zone one { image \"busybox@1.36\"; }\nzone two { image \"busybox@1.36\"; }\n",
    );
    let mut init = Init::start_with(&pool, &bus, &zone);
    let ready = init.wait_line("skerry: node ready", T);
    assert!(ready.contains("(2 running)"), "{ready}");
    let one = monitors_of(&pool, "one");
    let two = monitors_of(&pool, "two");
    assert_eq!((one.len(), two.len()), (1, 1));
    init.terminate();
    assert!(init.count_lines("all instances stopped") == 1);
    assert!(monitors_of(&pool, "one").is_empty() && monitors_of(&pool, "two").is_empty());
    // Stopped by shutdown, not by the operator: they come back at the next boot.
    std::fs::remove_dir_all(&pool.run_dir).unwrap();
    let init = Init::start_with(&pool, &bus, &zone);
    let ready = init.wait_line("skerry: node ready", T);
    assert!(ready.contains("(2 running)"), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nic_bridge_console_and_instance_changed_signals() {
    use futures_util::StreamExt;
    let zone = zone_bin();
    let bus = node_bus();
    let pool = TestPool::new();
    let tag = format!("t{:x}", std::process::id() & 0xfffff);
    let bridge = format!("skb{:x}", std::process::id() & 0xfffff);
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
        "net.kdl",
        &format!("zone netz {{\n    image \"busybox@1.36\"\n    nic net0 tag=\"{tag}\" ip=\"10.213.77.2/24\"\n}}\n"),
    );
    let init = Init::start_with(&pool, &bus, &zone);
    let ready = init.wait_line("skerry: node ready", T);
    assert!(ready.contains("(1 running)"), "{ready}");
    assert!(
        std::path::Path::new(&format!("/sys/class/net/{bridge}/bridge")).exists(),
        "bridge {bridge} for tag {tag} was not created"
    );
    let ports = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .unwrap()
        .count();
    assert_eq!(ports, 1, "the zone's veth is not on {bridge}");

    let conn = connect(&bus).await;
    // A zone's console is handed over as an fd: one end of a stream socket the zone
    // monitor relays to the zone's pty (the monitor alone reads the pty, so the
    // console log and every attached client see all of the output).
    let fd: zvariant::OwnedFd = call(&conn, "Console", &("netz",)).await.unwrap();
    let st = nix::sys::stat::fstat(&fd).unwrap();
    assert_eq!(
        st.st_mode & libc::S_IFMT,
        libc::S_IFSOCK,
        "console fd is not the monitor's relay socket"
    );

    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(spec::api::INTERFACE)
        .unwrap()
        .member("InstanceChanged")
        .unwrap()
        .build();
    let mut signals = zbus::MessageStream::for_match_rule(rule, &conn, None)
        .await
        .unwrap();
    let () = call(&conn, "Stop", &("netz", false, 5u32)).await.unwrap();
    let () = call(&conn, "Start", &("netz",)).await.unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&"running".to_string()) {
        let msg = tokio::time::timeout(T, signals.next())
            .await
            .expect("InstanceChanged within the timeout")
            .unwrap()
            .unwrap();
        let (name, _uuid, kind, state, _reason): (String, String, String, String, String) =
            msg.body().deserialize().unwrap();
        assert_eq!((name.as_str(), kind.as_str()), ("netz", "zone"));
        seen.push(state);
    }
    assert_eq!(seen, vec!["stopping", "stopped", "provisioning", "running"]);
}
