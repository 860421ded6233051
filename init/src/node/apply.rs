//! The executor: runs each instance's step list (`schedule::InstancePlan`) on its own
//! thread, so one instance waiting for a slow import or failing never holds up the
//! others; what they share is bounded by the node's limits (imports in
//! `images::SharedImports`, disk preparation and starts in `concurrency::Limits`).
//!
//! Console lines come from the state changes themselves, each written whole when it
//! happens, so they stay per instance and in the order things happened; at boot
//! each instance's end and each import are also entered in the timeline.

use super::Node;
use crate::plan::{Action, Step};
use crate::pool::InstanceRecord;
use crate::runtime::{ResolvedImage, RuntimeError};
use crate::schedule::{InstancePlan, Room};
use spec::api::PlanStep;
use spec::{Kind, State};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Stack of an instance's apply thread: it runs imgadm's import (streamed, fixed
/// buffers on the heap) and the monitor spawn, nothing deep.
const APPLY_STACK: usize = 1 << 20;

/// Memory the node keeps for itself (init, monitors, page cache) when it admits
/// instances: at least this, or a sixteenth of the node's memory if more.
const NODE_RESERVE: u64 = 512 << 20;

impl Node {
    /// Runs `plans` concurrently; returns what each step did, in the planner's order
    /// (by name, each instance's steps in order). `started` is when the reconcile
    /// began; `boot` enters each instance's end in the timeline.
    pub(super) fn run_plans(
        self: &Arc<Self>,
        plans: Vec<InstancePlan>,
        started: Instant,
        boot: bool,
    ) -> Vec<PlanStep> {
        let done: Mutex<Vec<Vec<PlanStep>>> = Mutex::new(Vec::with_capacity(plans.len()));
        std::thread::scope(|s| {
            for plan in plans {
                let name = plan.name.clone();
                // The plan reaches the thread through a slot, so that if no thread can
                // be made it is still here to run inline.
                let slot = Arc::new(Mutex::new(Some(plan)));
                let mine = Arc::clone(&slot);
                let done = &done;
                let run = move |slot: &Mutex<Option<InstancePlan>>| {
                    let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(plan) = taken {
                        let out = self.run_instance(plan, started, boot);
                        done.lock().unwrap_or_else(|p| p.into_inner()).push(out);
                    }
                };
                let spawned = std::thread::Builder::new()
                    .name(format!("apply-{name}"))
                    .stack_size(APPLY_STACK)
                    .spawn_scoped(s, move || run(&mine));
                if let Err(e) = spawned {
                    log::warn!("{name}: no thread to apply it on ({e}); applying it inline");
                    run(&slot);
                }
            }
        });
        let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
        done.sort_by(|a, b| {
            let name = |v: &Vec<PlanStep>| v.first().map(|s| s.name.clone());
            name(a).cmp(&name(b))
        });
        done.into_iter().flatten().collect()
    }

    /// One instance's steps, in order.
    fn run_instance(
        self: &Arc<Self>,
        plan: InstancePlan,
        started: Instant,
        boot: bool,
    ) -> Vec<PlanStep> {
        let mut out = Vec::with_capacity(plan.steps.len());
        for s in plan.steps {
            let mut reason = s.reason.clone();
            if s.action == Action::Refuse && plan.held.as_deref() == Some(s.reason.as_str()) {
                log::warn!("{}: {}", s.name, s.reason);
                self.hold(&s.name, &s.reason);
            } else {
                match self.apply(&s) {
                    Err(e) => {
                        log::error!("{} {}: {e}", s.label(), s.name);
                        reason = format!("{reason}; FAILED: {e}");
                    }
                    // The wire has no room for the label: the reason says it.
                    Ok(()) if s.live => reason.push_str("; applied live"),
                    Ok(()) => {}
                }
            }
            out.push(PlanStep {
                name: s.name,
                action: s.action,
                reason,
            });
        }
        if boot {
            let state = self
                .find(&plan.name)
                .and_then(|u| self.entry(&u))
                .map_or("gone", |e| e.rec.state.as_str());
            self.timeline.record(
                &format!("instance {} {state}", plan.name),
                started.elapsed(),
            );
        }
        out
    }

    /// Marks an instance whose start did not fit: wanted running (a later reconcile
    /// with room starts it) but `failed`, with the reason.
    fn hold(&self, name: &str, reason: &str) {
        let Some(uuid) = self.find(name) else { return };
        self.update_record(&uuid, |e| e.rec.want_running = true);
        self.set_state(&uuid, State::Failed, reason);
    }

    /// `Runtime::prepare`, holding one of the node's disk slots for an HVM (whose
    /// boot disk may be a copy of gigabytes); a zone's preparation is a few small
    /// files and waits for nothing.
    pub(super) fn prepare(
        &self,
        rec: &InstanceRecord,
        image: &ResolvedImage,
    ) -> Result<(), RuntimeError> {
        let _slot = matches!(rec.spec.kind, Kind::Hvm(_)).then(|| self.limits.disks.acquire());
        self.runtime.prepare(rec, image)
    }

    /// What the node has left for the instances `plans` would start: memory (the
    /// node's, less its reserve, less what running instances the plans leave running
    /// take) and the pool's free space.
    pub(super) fn room(&self, plans: &[InstancePlan]) -> Room {
        let stopping: HashSet<&str> = plans
            .iter()
            .filter(|p| {
                p.steps.iter().any(|s: &Step| {
                    matches!(s.action, Action::Stop | Action::Delete | Action::Restart)
                })
            })
            .map(|p| p.name.as_str())
            .collect();
        let restarted: u64 = plans
            .iter()
            .filter(|p| p.steps.iter().any(|s| s.action == Action::Restart))
            .map(|p| p.needs.memory)
            .sum();
        let running: u64 = self
            .table()
            .values()
            .filter(|e| e.pid != 0 && !stopping.contains(e.rec.name.as_str()))
            .map(|e| e.rec.spec.memory)
            .sum();
        let total = memory_total().unwrap_or(u64::MAX);
        let usable = total.saturating_sub(NODE_RESERVE.max(total / 16));
        Room {
            memory: usable.saturating_sub(running + restarted),
            pool: pool_free(self.pool.root()).unwrap_or(u64::MAX),
        }
    }
}

/// `MemTotal` of /proc/meminfo, bytes.
fn memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes free for an unprivileged writer on the filesystem of `path`.
fn pool_free(path: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}
