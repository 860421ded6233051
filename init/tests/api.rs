//! init in host mode on a private bus: boot reconcile with a bad manifest beside good
//! ones, API create/delete, introspection, the timeline, and callers that are not
//! root. These need no running zone (autoboot is off).

mod common;

use common::*;
use spec::api::{InstanceSummary, PlanStep};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_reconcile_reports_a_bad_manifest_and_creates_the_good_ones() {
    let bus = node_bus();
    let pool = TestPool::new();
    pool.manifest(
        "good.kdl",
        "zone alpha { image \"busybox@1.36\"; autoboot #false; }\nzone beta { image \"busybox@1.36\"; autoboot #false; memory \"64M\"; }\n",
    );
    pool.manifest(
        "bad.kdl",
        "zone gamma {\n    image \"busybox@1.36\"\n    memroy \"64M\"\n}\n",
    );
    let init = Init::start(&pool, &bus);
    let ready = init.wait_line("skerry: node ready", T);
    assert!(ready.contains("(0 running)"), "{ready}");
    // Timestamped like the kernel: "[   12.345678] skerry: ...".
    assert!(
        ready.starts_with('[') && ready.contains("] skerry: node ready"),
        "{ready}"
    );
    init.wait_line("skerry: instance alpha zone stopped", T);
    init.wait_line("skerry: instance beta zone stopped", T);
    let err = init.wait_line("bad.kdl:3:", T);
    assert!(err.contains("memroy"), "{err}");

    let conn = connect(&bus).await;
    let rows: Vec<InstanceSummary> = call(&conn, "List", &()).await.unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["alpha", "beta"]);
    assert_eq!(rows[1].memory, 64 << 20);
    assert!(rows
        .iter()
        .all(|r| r.state == spec::State::Stopped && r.pid == 0));

    // A second reconcile is a no-op apart from the bad file's error.
    let steps: Vec<PlanStep> = call(&conn, "Reconcile", &()).await.unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].action, "error");
    assert!(steps[0].reason.contains("bad.kdl:3:"), "{steps:?}");

    // Fixing the file brings gamma in.
    pool.manifest(
        "bad.kdl",
        "zone gamma {\n    image \"busybox@1.36\"\n    autoboot #false\n}\n",
    );
    let steps: Vec<PlanStep> = call(&conn, "Reconcile", &()).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.name.as_str(), s.action.as_str()))
            .collect::<Vec<_>>(),
        vec![("gamma", "create")]
    );

    let detail: String = call(&conn, "Get", &("beta",)).await.unwrap();
    let detail: spec::api::InstanceDetail = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail.spec.unwrap().memory, 64 << 20);
    let e = call::<_, String>(&conn, "Get", &("nope",))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("NotFound") || format!("{e:?}").contains("NotFound"),
        "{e:?}"
    );

    let phases: Vec<(String, u64)> = call(&conn, "Timeline", &()).await.unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p.0.as_str()).collect();
    for want in ["open-pool", "adopt", "api", "reconcile"] {
        assert!(names.contains(&want), "{names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_create_writes_a_manifest_and_delete_removes_everything() {
    let bus = node_bus();
    let pool = TestPool::new();
    let init = Init::start(&pool, &bus);
    init.wait_line("skerry: node ready", T);
    let conn = connect(&bus).await;

    let names: Vec<String> = call(
        &conn,
        "Create",
        &(
            "zone made { image \"busybox@1.36\"; autoboot #false; cpu-cap 20; }",
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(names, vec!["made"]);
    let written = std::fs::read_to_string(pool.path().join("manifests/made.kdl")).unwrap();
    assert!(
        written.contains("zone made") && written.contains("cpu-cap 20"),
        "{written}"
    );
    let dir = pool.instance_dir("made").expect("instance directory");
    assert!(dir.join("config.json").exists());
    let cfg: monitor::InstanceConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert!(cfg.id_range_start >= skerry_init::pool::ID_RANGE_BASE);
    assert!(
        cfg.image_path.join("bin/busybox").exists(),
        "{}",
        cfg.image_path.display()
    );

    // Creating the same name again is refused; so is an invalid payload.
    let e = call::<_, Vec<String>>(
        &conn,
        "Create",
        &("zone made { image \"busybox@1.36\"; }", "kdl"),
    )
    .await
    .unwrap_err();
    assert!(format!("{e:?}").contains("Invalid"), "{e:?}");
    let errs: Vec<String> = call(&conn, "Validate", &("zone x { cpu-cap -1; }", "kdl"))
        .await
        .unwrap();
    assert!(!errs.is_empty());
    // A payload made to overflow the KDL parser's stack is answered, and init lives.
    let hostile = "zone a {".repeat(100_000);
    let errs: Vec<String> = call(&conn, "Validate", &(hostile.as_str(), "kdl"))
        .await
        .unwrap();
    assert!(errs.iter().any(|e| e.contains("nested deeper")), "{errs:?}");

    // Update rewrites the manifest; the change shows in Get.
    let (restart, msg): (bool, String) = call(
        &conn,
        "Update",
        &("made", r#"{"max_physical_memory": 128}"#),
    )
    .await
    .unwrap();
    assert!(!restart, "stopped instance needs no restart: {msg}");
    let written = std::fs::read_to_string(pool.path().join("manifests/made.kdl")).unwrap();
    assert!(
        written.contains("128M") || written.contains("memory"),
        "{written}"
    );
    let steps: Vec<PlanStep> = call(&conn, "Reconcile", &()).await.unwrap();
    assert!(steps.is_empty(), "update left reconcile work: {steps:?}");

    let () = call(&conn, "Delete", &("made",)).await.unwrap();
    assert!(!dir.exists(), "data of a deleted instance is gone");
    assert!(!pool.path().join("manifests/made.kdl").exists());
    init.wait_line("skerry: instance made zone deleted", T);
    let rows: Vec<InstanceSummary> = call(&conn, "List", &()).await.unwrap();
    assert!(rows.is_empty(), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_other_than_root_may_read_but_not_change() {
    let bus = node_bus();
    let pool = TestPool::new();
    pool.manifest(
        "a.kdl",
        "zone alpha { image \"busybox@1.36\"; autoboot #false; }\n",
    );
    let init = Init::start(&pool, &bus);
    init.wait_line("skerry: node ready", T);

    let as_other = |method: &str, args: &[&str]| {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", bus.address))
            .args([
                "--print-reply",
                "--dest=org.skerry.Node1",
                "/org/skerry/Node1",
            ])
            .arg(format!("org.skerry.Node1.{method}"))
            .args(args)
            .uid(OTHER_UID)
            .gid(OTHER_UID)
            .output()
            .expect("dbus-send (package dbus-bin) as another uid");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = as_other("List", &[]);
    assert!(
        ok && out.contains("alpha"),
        "List as uid {OTHER_UID}: {out}"
    );
    for (method, args) in [
        ("Start", vec!["string:alpha"]),
        ("Delete", vec!["string:alpha"]),
        (
            "Create",
            vec!["string:zone x { image \"busybox@1.36\"; }", "string:kdl"],
        ),
        ("Reconcile", vec![]),
        ("Shutdown", vec![]),
    ] {
        let (ok, out) = as_other(method, &args);
        assert!(!ok, "{method} as uid {OTHER_UID} succeeded: {out}");
        assert!(
            out.contains("org.skerry.Node1.Error.AccessDenied"),
            "{method}: {out}"
        );
        assert!(out.contains("uid 65534"), "{method}: {out}");
    }
    assert!(pool.instance_dir("alpha").is_some(), "nothing was deleted");

    // Another uid may not own the name either.
    let out = Command::new("dbus-send")
        .arg(format!("--bus={}", bus.address))
        .args([
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            "string:org.skerry.Node1",
            "uint32:0",
        ])
        .uid(OTHER_UID)
        .gid(OTHER_UID)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "uid {OTHER_UID} could request org.skerry.Node1"
    );

    // Introspection shows the whole interface.
    let out = Command::new("dbus-send")
        .arg(format!("--bus={}", bus.address))
        .args([
            "--print-reply",
            "--dest=org.skerry.Node1",
            "/org/skerry/Node1",
            "org.freedesktop.DBus.Introspectable.Introspect",
        ])
        .output()
        .unwrap();
    let xml = String::from_utf8_lossy(&out.stdout);
    for m in [
        "List",
        "Get",
        "Create",
        "Update",
        "Delete",
        "Start",
        "Stop",
        "Reboot",
        "Validate",
        "Reconcile",
        "Console",
        "Info",
        "Timeline",
        "Usage",
        "Shutdown",
    ] {
        assert!(
            xml.contains(&format!("<method name=\"{m}\">")),
            "{m} missing:\n{xml}"
        );
    }
    assert!(xml.contains("<signal name=\"InstanceChanged\">"), "{xml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvm_provisioning_clones_the_boot_disk_and_makes_blank_disks() {
    let bus = node_bus();
    let pool = TestPool::new();
    let image = install_zvol_image(pool.path());
    pool.manifest(
        "db.kdl",
        "hvm db {\n    image \"tiny-hvm@1\"\n    autoboot #false\n    disk root boot=#true size=\"64M\"\n    disk data size=\"1G\"\n}\n",
    );
    // A zone on a zvol image is refused with a reason naming the image kind.
    pool.manifest(
        "wrong.kdl",
        "zone wrong { image \"tiny-hvm@1\"; autoboot #false; }\n",
    );
    let init = Init::start(&pool, &bus);
    init.wait_line("skerry: node ready", T);
    init.wait_line("skerry: instance db hvm stopped", T);
    let line = init.wait_line("skerry: instance wrong zone failed", T);
    assert!(line.contains("zvol"), "{line}");

    let dir = pool.instance_dir("db").unwrap();
    let root = dir.join("disks/root.raw");
    let data = dir.join("disks/data.raw");
    // The boot disk starts as the image's disk, grown to its declared size.
    assert!(std::fs::read(&root).unwrap().starts_with(&image));
    assert_eq!(std::fs::metadata(&root).unwrap().len(), 64 << 20);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 1 << 30);
    let cfg: monitor::InstanceConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert!(matches!(cfg.spec.kind, spec::Kind::Hvm(_)));
    assert_eq!(cfg.id_range_start, 0);
}
