//! Alone in its test binary: it counts this process's threads, which tests running
//! in parallel would disturb.

use host::net::Netlink;

/// Dropping the handle ends its thread (the vmm relies on this before seccomp), and
/// the handle works in the caller's namespace.
#[test]
fn dropping_the_handle_joins_its_thread() {
    assert!(nix::unistd::getuid().is_root(), "net tests need root");
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let before = threads();
    let nl = Netlink::new().unwrap();
    assert_eq!(threads(), before + 1);
    assert!(nl.blocking().exists("lo").unwrap());
    let clone = nl.clone();
    drop(nl);
    assert_eq!(threads(), before + 1, "a clone keeps the connection");
    drop(clone);
    // The join returns when the thread's exit clears its tid, a moment before the
    // kernel takes its /proc/self/task entry away.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while threads() != before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(threads(), before);
}
