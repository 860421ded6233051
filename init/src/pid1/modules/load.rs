//! Loading a [`LoadPlan`] from several threads: the kernel loads (reads, relocates,
//! initialises) different modules at once, so independent modules overlap; a module
//! starts only once everything it waits for is loaded.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::plan::{LoadPlan, PlannedLoad};
use crate::pid1::error::ModuleLoadError;

/// What became of one planned module.
#[derive(Debug)]
pub enum LoadOutcome {
    /// Loaded (or already there), in this long.
    Loaded(Duration),
    /// The kernel refused it.
    Failed(ModuleLoadError),
    /// Not tried: a module it waits for was not loaded (named).
    DependencyFailed(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Waiting,
    Loading,
    Ok,
    NotLoaded,
}

/// Loads every module of `plan` with `load`, at most `threads` at a time; returns
/// one outcome per planned module, in plan order. Never waits on a module that
/// cannot finish: the plan lists each module after everything it waits for.
pub fn load_plan<F>(plan: &LoadPlan, threads: usize, load: F) -> Vec<LoadOutcome>
where
    F: Fn(&PlannedLoad) -> Result<(), ModuleLoadError> + Sync,
{
    let n = plan.loads.len();
    let state = Mutex::new((vec![Slot::Waiting; n], Vec::from_iter((0..n).map(|_| None))));
    let changed = Condvar::new();
    let worker = || {
        let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (slots, _) = &*guard;
            // The first waiting module whose dependencies are all done, in plan order.
            let ready = (0..n).find(|&i| {
                slots[i] == Slot::Waiting
                    && plan.loads[i]
                        .after
                        .iter()
                        .all(|&a| matches!(slots[a], Slot::Ok | Slot::NotLoaded))
            });
            let Some(i) = ready else {
                if !slots.contains(&Slot::Waiting) {
                    return;
                }
                guard = changed.wait(guard).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let item = &plan.loads[i];
            let (slots, outcomes) = &mut *guard;
            if let Some(&bad) = item.after.iter().find(|&&a| slots[a] == Slot::NotLoaded) {
                slots[i] = Slot::NotLoaded;
                outcomes[i] = Some(LoadOutcome::DependencyFailed(plan.loads[bad].name.clone()));
                changed.notify_all();
                continue;
            }
            slots[i] = Slot::Loading;
            drop(guard);
            let started = Instant::now();
            let r = load(item);
            let took = started.elapsed();
            guard = state.lock().unwrap_or_else(|p| p.into_inner());
            let (slots, outcomes) = &mut *guard;
            (slots[i], outcomes[i]) = match r {
                Ok(()) => (Slot::Ok, Some(LoadOutcome::Loaded(took))),
                Err(e) => (Slot::NotLoaded, Some(LoadOutcome::Failed(e))),
            };
            changed.notify_all();
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.clamp(1, n.max(1)) {
            s.spawn(worker);
        }
        worker();
    });
    let (_, outcomes) = state.into_inner().unwrap_or_else(|p| p.into_inner());
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(LoadOutcome::DependencyFailed(String::new())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pid1::modules::ModuleIndex;
    use std::path::Path;
    use std::sync::mpsc;

    const DEP: &str = "\
kernel/virtio_ring.ko:
kernel/virtio.ko: kernel/virtio_ring.ko
kernel/virtio_blk.ko: kernel/virtio.ko kernel/virtio_ring.ko
kernel/virtio_net.ko: kernel/virtio.ko kernel/virtio_ring.ko
kernel/veth.ko:
kernel/tun.ko:
";

    fn plan(names: &[&str]) -> LoadPlan {
        let idx = ModuleIndex::parse(Path::new("/m"), DEP);
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let (plan, errs) = idx.plan(&names);
        assert!(errs.is_empty(), "{errs:?}");
        plan
    }

    #[test]
    fn dependents_start_only_after_their_dependencies_finish() {
        let plan = plan(&["virtio_blk", "virtio_net", "veth", "tun"]);
        let log = Mutex::new(Vec::new());
        let outcomes = load_plan(&plan, 4, |l| {
            log.lock().unwrap().push(format!("start {}", l.name));
            std::thread::sleep(Duration::from_millis(20));
            log.lock().unwrap().push(format!("end {}", l.name));
            Ok(())
        });
        assert!(outcomes.iter().all(|o| matches!(o, LoadOutcome::Loaded(_))));
        let log = log.into_inner().unwrap();
        let at = |e: &str| log.iter().position(|l| l == e).unwrap();
        for (dep, dependent) in [
            ("virtio_ring", "virtio"),
            ("virtio", "virtio_blk"),
            ("virtio", "virtio_net"),
        ] {
            assert!(
                at(&format!("end {dep}")) < at(&format!("start {dependent}")),
                "{dependent} started before {dep} ended: {log:?}"
            );
        }
        assert_eq!(log.len(), 12, "each module loaded once: {log:?}");
    }

    /// Independent modules load at the same time: each of the three roots waits (in
    /// its load) until the other two have started, which only threads loading at
    /// once can satisfy.
    #[test]
    fn independent_modules_load_at_once() {
        let plan = plan(&["virtio_ring", "veth", "tun"]);
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Mutex::new(rx);
        let started = Mutex::new(0usize);
        let all_started = Condvar::new();
        let outcomes = load_plan(&plan, 3, |_| {
            let mut n = started.lock().unwrap();
            *n += 1;
            all_started.notify_all();
            let (n, timeout) = all_started
                .wait_timeout_while(n, Duration::from_secs(5), |n| *n < 3)
                .unwrap();
            drop(n);
            if timeout.timed_out() {
                let _ = tx.send(());
                return Err(ModuleLoadError::NoSuchHardware);
            }
            Ok(())
        });
        assert!(
            rx.lock().unwrap().try_recv().is_err(),
            "the independent loads did not overlap: {outcomes:?}"
        );
        assert!(outcomes.iter().all(|o| matches!(o, LoadOutcome::Loaded(_))));
    }

    #[test]
    fn a_failed_module_skips_its_dependents_only() {
        let plan = plan(&["virtio_blk", "veth"]);
        let outcomes = load_plan(&plan, 2, |l| match l.name.as_str() {
            "virtio" => Err(ModuleLoadError::NoSuchHardware),
            _ => Ok(()),
        });
        let by_name: Vec<(String, String)> = plan
            .loads
            .iter()
            .zip(&outcomes)
            .map(|(l, o)| (l.name.clone(), format!("{o:?}")))
            .collect();
        let of = |n: &str| &by_name.iter().find(|(m, _)| m == n).unwrap().1;
        assert!(of("virtio_ring").starts_with("Loaded"), "{by_name:?}");
        assert!(of("virtio").starts_with("Failed"), "{by_name:?}");
        assert_eq!(of("virtio_blk"), "DependencyFailed(\"virtio\")");
        assert!(of("veth").starts_with("Loaded"), "{by_name:?}");
    }

    #[test]
    fn one_thread_loads_in_plan_order() {
        let plan = plan(&["virtio_net", "tun"]);
        let order = Mutex::new(Vec::new());
        load_plan(&plan, 1, |l| {
            order.lock().unwrap().push(l.name.clone());
            Ok(())
        });
        let want: Vec<String> = plan.loads.iter().map(|l| l.name.clone()).collect();
        assert_eq!(order.into_inner().unwrap(), want);
    }
}
