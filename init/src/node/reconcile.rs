//! Reconcile: load the manifests, plan against the table, log the plan, apply it.

use super::{Entry, Node};
use crate::plan::{self, Action, Actual, Step};
use crate::pool::{allocate_id_range, InstanceRecord};
use crate::runtime::{Images, RuntimeError};
use crate::schedule;
use spec::api::PlanStep;
use spec::unix_now;
use spec::State;
use spec::{InstanceSpec, Kind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The outcome of one reconcile.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Steps planned, each with its reason (and the error, when it failed).
    pub steps: Vec<PlanStep>,
    /// Manifest problems (`FILE:LINE:COL: message`).
    pub problems: Vec<String>,
}

impl Node {
    /// Computes the plan without applying it.
    pub fn plan(&self) -> (Vec<Step>, Vec<String>) {
        let (steps, problems, _) = self.plan_with_specs();
        (steps, problems)
    }

    /// The plan, the manifest problems, and the specs it was made from (in manifest
    /// order: the executor's admission order).
    fn plan_with_specs(&self) -> (Vec<Step>, Vec<String>, Vec<InstanceSpec>) {
        let loaded = self.manifests.load_dir(&self.pool.manifests_dir());
        let broken: Vec<PathBuf> = loaded
            .problems
            .iter()
            .filter_map(|p| p.file.clone())
            .collect();
        let problems = loaded.problems.iter().map(|p| p.message.clone()).collect();
        let entries: Vec<Entry> = self.table().values().cloned().collect();
        let actual: Vec<Actual<'_>> = entries
            .iter()
            .map(|e| Actual {
                record: &e.rec,
                running: e.pid != 0,
            })
            .collect();
        let steps = plan::plan(&loaded.specs, &actual, &broken);
        (steps, problems, loaded.specs)
    }

    /// One reconcile pass: plan, log, apply. Idempotent: a second pass over the same
    /// manifests plans nothing. Instances are applied concurrently, each as soon as
    /// its own steps allow ([`crate::schedule`], `apply.rs`); what does not fit in the
    /// node's memory or pool is refused in manifest order.
    pub fn reconcile(self: &Arc<Self>) -> Outcome {
        self.reconcile_pass(false)
    }

    /// The reconcile at boot: as [`Node::reconcile`], and each import and each
    /// instance's end (with its state) enter the boot timeline.
    pub fn boot_reconcile(self: &Arc<Self>) -> Outcome {
        let timeline = Arc::clone(&self.timeline);
        self.images
            .set_import_hook(Some(Box::new(move |image, took| {
                timeline.record(&format!("import {image}"), took)
            })));
        let out = self.reconcile_pass(true);
        self.images.set_import_hook(None);
        out
    }

    fn reconcile_pass(self: &Arc<Self>, boot: bool) -> Outcome {
        let _ops = self.lock_ops();
        let started = Instant::now();
        let (steps, problems, specs) = self.plan_with_specs();
        for p in &problems {
            log::error!("{p}; instances of that file are left as they are");
        }
        let mut plans = schedule::per_instance(steps, &specs, self.opts.zone_quota);
        let room = self.room(&plans);
        schedule::admit(&mut plans, room);
        if plans.is_empty() {
            log::info!("reconcile: nothing to do");
        }
        for s in plans.iter().flat_map(|p| &p.steps) {
            log::info!("plan: {} {}: {}", s.label(), s.name, s.reason);
        }
        let out = Outcome {
            steps: self.run_plans(plans, started, boot),
            problems,
        };
        log::info!(
            "reconcile: {} steps in {:.1} ms",
            out.steps.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        out
    }

    fn uuid_of(&self, name: &str) -> Option<String> {
        self.find(name)
    }

    pub(super) fn apply(self: &Arc<Self>, s: &Step) -> Result<(), RuntimeError> {
        match s.action {
            Action::Create => {
                let spec = s.spec.as_ref().expect("create carries its spec");
                self.create_instance(spec).map(|_| ())
            }
            Action::Start => match self.uuid_of(&s.name) {
                Some(u) => {
                    self.update_record(&u, |e| e.failures = 0);
                    self.start_instance(&u)
                }
                None => Ok(()),
            },
            Action::Stop => match self.uuid_of(&s.name) {
                Some(u) => self.stop_instance(&u, false, self.opts.stop_timeout),
                None => Ok(()),
            },
            Action::Update => {
                let spec = s.spec.clone().expect("update carries its spec");
                if let Some(u) = self.uuid_of(&s.name) {
                    let running = self.entry(&u).is_some_and(|e| e.pid != 0);
                    let old = self.entry(&u).map(|e| e.rec.spec);
                    let turned_on = old.as_ref().is_some_and(|o| !o.autoboot) && spec.autoboot;
                    let changed = old
                        .as_ref()
                        .map(|o| plan::changed_properties(o, &spec))
                        .unwrap_or_default();
                    let restart =
                        running && changed.iter().any(|p| plan::needs_restart(&spec.kind, p));
                    let rec = self.update_record(&u, |e| {
                        e.rec.spec = spec;
                        e.rec.needs_restart |= restart;
                        if turned_on && e.pid == 0 {
                            e.rec.want_running = true;
                        }
                    });
                    if let Some(rec) = rec {
                        self.apply_live_or_wait_for_restart(&rec, &changed)?;
                    }
                }
                Ok(())
            }
            Action::Restart => {
                let spec = s.spec.clone().expect("restart carries its spec");
                let Some(u) = self.uuid_of(&s.name) else {
                    return Ok(());
                };
                self.stop_instance(&u, false, self.opts.stop_timeout)?;
                self.update_record(&u, |e| e.rec.spec = spec);
                self.start_instance(&u)
            }
            Action::Delete => match self.uuid_of(&s.name) {
                Some(u) => self.delete_instance(&u),
                None => Ok(()),
            },
            Action::Refuse | Action::Error => Err(RuntimeError::Provision {
                instance: s.name.clone(),
                message: s.reason.clone(),
            }),
        }
    }

    /// Provisions a new instance: record, id range, image, disks and config. Leaves
    /// it stopped; the plan's start step (autoboot) starts it.
    pub(crate) fn create_instance(
        self: &Arc<Self>,
        spec: &InstanceSpec,
    ) -> Result<String, RuntimeError> {
        let uuid = spec.uuid.unwrap_or_else(uuid::Uuid::new_v4).to_string();
        let rec = {
            let mut t = self.table();
            let id_range_start = match spec.kind {
                Kind::Zone(_) => allocate_id_range(t.values().map(|e| &e.rec)).map_err(|e| {
                    RuntimeError::Provision {
                        instance: spec.name.clone(),
                        message: e.to_string(),
                    }
                })?,
                Kind::Hvm(_) => 0,
            };
            let rec = InstanceRecord {
                id_range_start,
                created_at: unix_now(),
                ..InstanceRecord::provisioning(uuid.clone(), spec.clone())
            };
            t.insert(
                uuid.clone(),
                Entry {
                    rec: rec.clone(),
                    pid: 0,
                    failures: 0,
                    started: None,
                    generation: 0,
                },
            );
            rec
        };
        if self.persist(&rec) {
            self.announce(
                &rec.name,
                &uuid,
                spec.kind.as_str(),
                Some(State::Provisioning),
                "creating",
            );
        }
        let provisioned = self.images.ensure(&spec.image).and_then(|image| {
            // Persisted with the state change below: one fsync'd write fewer per
            // instance, which adds up when a node provisions hundreds at once.
            if let Some(e) = self.table().get_mut(&uuid) {
                e.rec.image_uuid = image.uuid.clone();
            }
            self.prepare(&rec, &image)
        });
        match provisioned {
            Ok(()) => {
                self.set_state(&uuid, State::Stopped, "created");
                Ok(uuid)
            }
            Err(e) => {
                self.set_state(&uuid, State::Failed, &e.to_string());
                Err(e)
            }
        }
    }

    /// Stops an instance and removes it and its data from the pool.
    pub(crate) fn delete_instance(self: &Arc<Self>, uuid: &str) -> Result<(), RuntimeError> {
        self.stop_instance(uuid, false, self.opts.stop_timeout)?;
        let Some(entry) = self.entry(uuid) else {
            return Ok(());
        };
        self.pool
            .remove_instance(uuid)
            .map_err(|e| RuntimeError::Provision {
                instance: entry.rec.name.clone(),
                message: e.to_string(),
            })?;
        self.table().remove(uuid);
        self.announce(
            &entry.rec.name,
            uuid,
            entry.rec.spec.kind.as_str(),
            None,
            "data removed",
        );
        Ok(())
    }
}
