//! How much of a reconcile runs at once: the limits (`apply` in node.kdl) and the
//! counting semaphore that holds them.
//!
//! Independent instances are applied concurrently, but three kinds of work are each
//! bounded on their own, so a node importing a large image still starts its zones:
//! image imports (network and unpacking), HVM disk preparation (copying boot disks)
//! and monitor starts (process spawns, the monitor's own setup).

use std::sync::{Condvar, Mutex};

/// The limits of one node, from `apply imports=N disks=N starts=N` in node.kdl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    /// Image imports at once.
    pub imports: usize,
    /// HVM disk preparations at once.
    pub disks: usize,
    /// Monitor starts at once (spawned and not yet reporting running).
    pub starts: usize,
}

impl Default for Concurrency {
    /// Imports are bound by the network and the pool's disk, disk copies by the pool's
    /// disk; starts are mostly waiting on the monitor, so more of them overlap well.
    fn default() -> Self {
        Concurrency {
            imports: 2,
            disks: 2,
            starts: 16,
        }
    }
}

/// The largest value node.kdl may give a limit: beyond it a node only thrashes.
pub const MAX_LIMIT: usize = 256;

/// A counting semaphore for blocking threads.
#[derive(Debug)]
pub struct Limit {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A held permit of a [`Limit`]; released on drop.
#[derive(Debug)]
pub struct Permit<'a>(&'a Limit);

impl Limit {
    /// A limit of `n` at once (at least one).
    pub fn new(n: usize) -> Limit {
        Limit {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free permit.
    pub fn acquire(&self) -> Permit<'_> {
        // A panic while holding the lock leaves a plain counter behind; keep using it.
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

/// The node's limits on disk preparation and starts (imports are bounded by
/// `images::SharedImports`, which also shares them).
#[derive(Debug)]
pub struct Limits {
    /// HVM disk preparation.
    pub disks: Limit,
    /// Monitor starts.
    pub starts: Limit,
}

impl Limits {
    /// Limits as configured.
    pub fn new(c: Concurrency) -> Limits {
        Limits {
            disks: Limit::new(c.disks),
            starts: Limit::new(c.starts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn a_limit_never_lets_more_than_n_in() {
        let limit = Limit::new(3);
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..12 {
                s.spawn(|| {
                    let _p = limit.acquire();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }
}
