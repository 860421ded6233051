//! A full pool is loud: when init cannot write an instance's state, the instance shows
//! `failed` with the reason, on the console and in `List` (`vmadm list`), instead of a
//! state silently lost at the next boot; once space is back, the next change is saved.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A small tmpfs for the pool, unmounted (lazily) when dropped.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn new(size: &str) -> SmallFs {
        let dir = tempfile::Builder::new()
            .prefix("init-fullfs")
            .tempdir()
            .unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
        SmallFs(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Writes `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 256 << 10];
    while f.write_all(&chunk).is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_cannot_be_saved_fails_the_instance_with_the_reason() {
    let zone = zone_bin();
    let bus = node_bus();
    let fs = SmallFs::new("48m");
    let mut pool = TestPool::new_in(fs.0.path());
    // Sockets and pidfiles elsewhere: a monitor that exits frees no space in the pool.
    let run = tempfile::tempdir().unwrap();
    pool.run_dir = run.path().to_path_buf();
    pool.manifest(
        "web.kdl",
        "zone web { image \"busybox@1.36\"; memory \"64M\"; }\n",
    );
    let mut init = Init::start_with(&pool, &bus, &zone);
    init.wait_line("skerry: instance web zone running", T);
    let conn = connect(&bus).await;
    wait_state(&conn, "web", "running", T).await;

    let filler = fs.0.path().join("filler");
    fill(&filler);
    let () = call(&conn, "Stop", &("web", false, 5u32)).await.unwrap();
    wait_state(&conn, "web", "failed", T).await;
    let rows: Vec<spec::api::InstanceSummary> = call(&conn, "List", &()).await.unwrap();
    let web = rows.iter().find(|r| r.name == "web").unwrap();
    assert!(
        web.reason.contains("stopped, but its state was not saved")
            && web.reason.contains("No space left"),
        "{web:?}"
    );
    let line = init.wait_line("skerry: instance web zone failed", T);
    assert!(line.contains("its state was not saved"), "{line}");

    // Space back: the next change is saved and the instance is itself again.
    std::fs::remove_file(&filler).unwrap();
    let () = call(&conn, "Start", &("web",)).await.unwrap();
    wait_state(&conn, "web", "running", T).await;
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(pool.instance_dir("web").unwrap().join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["state"], "running", "{saved}");
    init.terminate();
}

/// The node's default quota (node.kdl `zone-quota`) counts for a zone without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_or_disks_larger_than_the_free_space_are_refused_at_creation() {
    let zone = zone_bin();
    let bus = node_bus();
    let fs = SmallFs::new("48m");
    let pool = TestPool::new_in(fs.0.path());
    install_zvol_image(pool.path());
    // The node's default quota, for a zone whose manifest sets none.
    std::fs::create_dir_all(pool.path().join("config")).unwrap();
    std::fs::write(pool.path().join("config/node.kdl"), "zone-quota \"64M\"\n").unwrap();
    pool.manifest(
        "plain.kdl",
        "zone plain { image \"busybox@1.36\"; memory \"64M\"; }\n",
    );
    pool.manifest(
        "big.kdl",
        "zone big { image \"busybox@1.36\"; memory \"64M\"; quota \"64M\"; }\n\
         zone small { image \"busybox@1.36\"; memory \"64M\"; quota \"8M\"; }\n\
         hvm disky { image \"tiny-hvm@1\"; memory \"64M\"; autoboot #false;\n\
           disk root boot=#true\n disk data size=\"64M\" }\n",
    );
    let mut init = Init::start_with(&pool, &bus, &zone);
    init.wait_line("skerry: node ready", T);
    let conn = connect(&bus).await;
    // What will not fit (its own quota, the node's default quota, its disks) is
    // refused before anything of it is made, with the reason on the console and in
    // the reconcile's answer (init::schedule::admit, the one pool-space check).
    for refused in ["big", "disky", "plain"] {
        let line = init.wait_line(&format!("refuse {refused}:"), T);
        assert!(
            line.contains("not created: needs 64M of pool space"),
            "{line}"
        );
        assert_eq!(state_of(&conn, refused).await, None, "{refused} was made");
    }
    for refused in ["disky", "plain"] {
        assert!(
            pool.instance_dir(refused).is_none(),
            "refused {refused} was made"
        );
    }
    // A quota that fits runs, its own winning over the node's.
    wait_state(&conn, "small", "running", T).await;
    let cfg: monitor::InstanceConfig = serde_json::from_slice(
        &std::fs::read(pool.instance_dir("small").unwrap().join("config.json")).unwrap(),
    )
    .unwrap();
    assert!(matches!(cfg.spec.kind, spec::Kind::Zone(ref z) if z.quota == Some(8 << 20)));
    init.terminate();
}
