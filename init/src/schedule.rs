//! From a plan to what the executor runs: one step list per instance, in manifest
//! order, and the admission rule that keeps a node from taking more than it holds.
//!
//! Pure, like the planner: the executor (`node::apply`) measures the node's room and
//! runs each [`InstancePlan`] on its own, concurrently with the others; everything
//! decided here is unit-tested without threads or I/O.
//!
//! Instances are independent of each other: no step of one waits for a step of
//! another. What they share (an image both need, the node's import, disk and start
//! slots) is shared at run time by `images::SharedImports` and `concurrency::Limits`,
//! so an instance's only prerequisites are its own earlier steps.

use crate::plan::{Action, Step};
use spec::{InstanceSpec, Kind};
use std::collections::HashMap;

/// One instance's share of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct InstancePlan {
    /// Instance name.
    pub name: String,
    /// Its steps, in the order they run (create before start).
    pub steps: Vec<Step>,
    /// What it takes from the node if it runs.
    pub needs: Needs,
    /// Why a start was held back by [`admit`]; the executor marks the instance with it.
    pub held: Option<String>,
}

/// What an instance takes from the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Memory while it runs (its limit or guest RAM), bytes.
    pub memory: u64,
    /// Pool space its creation sets aside (HVM disk sizes, a zone's quota), bytes.
    pub pool: u64,
}

impl Needs {
    /// What `spec` takes on a node whose default zone quota (node.kdl `zone-quota`)
    /// is `zone_quota`: the pool space is the effective spec's (see [`effective_spec`]).
    pub fn of(spec: &InstanceSpec, zone_quota: Option<u64>) -> Needs {
        let pool = match &spec.kind {
            Kind::Zone(z) => z.quota.or(zone_quota).unwrap_or(0),
            Kind::Hvm(h) => h.disks.iter().filter_map(|d| d.size).sum(),
        };
        Needs {
            memory: spec.memory,
            pool,
        }
    }
}

/// The spec an instance runs with on a node whose default zone quota is `zone_quota`:
/// a zone without a quota of its own gets the node's. Admission counts this spec's
/// pool space and the monitor is given this spec, so what is checked is what runs.
pub fn effective_spec(spec: &InstanceSpec, zone_quota: Option<u64>) -> InstanceSpec {
    let mut spec = spec.clone();
    if let Kind::Zone(zone) = &mut spec.kind {
        zone.quota = zone.quota.or(zone_quota);
    }
    spec
}

/// What the node has left for the instances of this plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Memory for instances not yet running, bytes.
    pub memory: u64,
    /// Free pool space, bytes.
    pub pool: u64,
}

/// Groups `steps` by instance. Declared instances come in manifest order (the order
/// of `desired`), then the others (stops of instances no manifest declares) by name;
/// each instance keeps its steps in the planner's order. `zone_quota` is the node's
/// default zone quota, counted in [`Needs`] for a zone that sets none.
pub fn per_instance(
    steps: Vec<Step>,
    desired: &[InstanceSpec],
    zone_quota: Option<u64>,
) -> Vec<InstancePlan> {
    let position: HashMap<&str, usize> = desired
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.as_str(), i))
        .collect();
    let mut plans: Vec<InstancePlan> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for step in steps {
        let at = *index.entry(step.name.clone()).or_insert_with(|| {
            let needs = position
                .get(step.name.as_str())
                .map(|&i| Needs::of(&desired[i], zone_quota))
                .unwrap_or_default();
            plans.push(InstancePlan {
                name: step.name.clone(),
                steps: Vec::new(),
                needs,
                held: None,
            });
            plans.len() - 1
        });
        plans[at].steps.push(step);
    }
    plans.sort_by(|a, b| {
        let rank = |p: &InstancePlan| position.get(p.name.as_str()).copied();
        match (rank(a), rank(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.name.cmp(&b.name),
        }
    });
    plans
}

/// Admits, in order, what fits in `room`: a create whose disks (or quota) do not fit
/// in the pool is refused and nothing of it is made; a start that does not fit in
/// memory is held back (the instance is created, and marked with the reason by the
/// executor). Earlier instances in manifest order come first, so a node asked for
/// too much starts the same instances every boot.
pub fn admit(plans: &mut [InstancePlan], mut room: Room) {
    for p in plans.iter_mut() {
        let has = |a: Action| p.steps.iter().any(|s| s.action == a);
        if has(Action::Create) {
            if p.needs.pool > room.pool {
                let reason = format!(
                    "not created: needs {} of pool space (disks, quota) and the pool has {} \
                     free for it; instances earlier in manifest order come first",
                    approx_size(p.needs.pool),
                    approx_size(room.pool)
                );
                p.steps = vec![refusal(&p.name, reason)];
                continue;
            }
            room.pool -= p.needs.pool;
        }
        if has(Action::Start) {
            if p.needs.memory > room.memory {
                let reason = format!(
                    "not started: needs {} of memory and the node has {} left for \
                     instances; instances earlier in manifest order come first",
                    approx_size(p.needs.memory),
                    approx_size(room.memory)
                );
                p.steps.retain(|s| s.action != Action::Start);
                p.steps.push(refusal(&p.name, reason.clone()));
                p.held = Some(reason);
                continue;
            }
            room.memory -= p.needs.memory;
        }
    }
}

/// A size for a reason line: exact when it is round (`64T`), else to a tenth of a
/// GiB or a whole MiB.
fn approx_size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes.is_multiple_of(MIB) {
        spec::size::format_size(bytes)
    } else if bytes >= GIB {
        format!("{:.1}G", bytes as f64 / GIB as f64)
    } else {
        format!("{}M", bytes / MIB)
    }
}

fn refusal(name: &str, reason: String) -> Step {
    Step {
        name: name.to_string(),
        action: Action::Refuse,
        reason,
        spec: None,
        live: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;
    use crate::pool::tests::zone_spec;
    use spec::{Disk, HvmSpec};

    const MIB: u64 = 1 << 20;

    fn zone(name: &str, memory: u64) -> InstanceSpec {
        let mut s = zone_spec(name);
        s.memory = memory;
        s
    }

    fn hvm(name: &str, disk: u64) -> InstanceSpec {
        let mut s = zone_spec(name);
        s.kind = Kind::Hvm(HvmSpec {
            vcpus: 1,
            disks: vec![Disk {
                name: "root".into(),
                boot: true,
                size: Some(disk),
            }],
            cmdline: None,
            cpu_cap: 0,
        });
        s
    }

    fn shape(plans: &[InstancePlan]) -> Vec<(String, Vec<&'static str>)> {
        plans
            .iter()
            .map(|p| {
                let actions = p.steps.iter().map(|s| s.action.as_str()).collect();
                (p.name.clone(), actions)
            })
            .collect()
    }

    #[test]
    fn each_instance_gets_its_own_steps_in_manifest_order() {
        // Declared z, a, m: the planner sorts by name, the executor's lists follow
        // the manifests.
        let desired = [zone("z", MIB), zone("a", MIB), zone("m", MIB)];
        let plans = per_instance(plan(&desired, &[], &[]), &desired, None);
        assert_eq!(
            shape(&plans),
            vec![
                ("z".into(), vec!["create", "start"]),
                ("a".into(), vec!["create", "start"]),
                ("m".into(), vec!["create", "start"]),
            ]
        );
        assert_eq!(plans[0].needs.memory, MIB);
    }

    #[test]
    fn what_does_not_fit_in_memory_is_created_but_held_in_manifest_order() {
        let desired = [
            zone("first", 600 * MIB),
            zone("big", 600 * MIB),
            zone("small", 300 * MIB),
        ];
        let mut plans = per_instance(plan(&desired, &[], &[]), &desired, None);
        admit(
            &mut plans,
            Room {
                memory: 1000 * MIB,
                pool: u64::MAX,
            },
        );
        assert_eq!(
            shape(&plans),
            vec![
                ("first".into(), vec!["create", "start"]),
                ("big".into(), vec!["create", "refuse"]),
                // What fits after a refusal still starts.
                ("small".into(), vec!["create", "start"]),
            ]
        );
        let held = plans[1].held.as_deref().unwrap();
        assert!(
            held.contains("needs 600M of memory") && held.contains("400M left"),
            "{held}"
        );
        assert_eq!(plans[1].steps[1].reason, held);
        assert!(plans[0].held.is_none() && plans[2].held.is_none());
    }

    #[test]
    fn a_create_that_does_not_fit_in_the_pool_makes_nothing() {
        let desired = [
            hvm("db", 8 << 30),
            hvm("huge", 100 << 30),
            hvm("web", 1 << 30),
        ];
        let mut plans = per_instance(plan(&desired, &[], &[]), &desired, None);
        admit(
            &mut plans,
            Room {
                memory: u64::MAX,
                pool: 10 << 30,
            },
        );
        assert_eq!(
            shape(&plans),
            vec![
                ("db".into(), vec!["create", "start"]),
                ("huge".into(), vec!["refuse"]),
                ("web".into(), vec!["create", "start"]),
            ]
        );
        assert!(
            plans[1].steps[0]
                .reason
                .contains("needs 100G of pool space"),
            "{}",
            plans[1].steps[0].reason
        );
        assert!(plans[1].held.is_none(), "nothing exists to mark");
    }

    #[test]
    fn the_nodes_default_zone_quota_counts_for_a_zone_without_one() {
        let mut own = zone("own", MIB);
        if let Kind::Zone(z) = &mut own.kind {
            z.quota = Some(MIB);
        }
        let desired = [zone("plain", MIB), own];
        let mut plans = per_instance(plan(&desired, &[], &[]), &desired, Some(64 * MIB));
        assert_eq!(plans[0].needs.pool, 64 * MIB);
        assert_eq!(plans[1].needs.pool, MIB, "its own quota wins");
        admit(
            &mut plans,
            Room {
                memory: u64::MAX,
                pool: 8 * MIB,
            },
        );
        assert_eq!(
            shape(&plans),
            vec![
                ("plain".into(), vec!["refuse"]),
                ("own".into(), vec!["create", "start"]),
            ]
        );
        assert!(plans[0].steps[0].reason.contains("needs 64M of pool space"));
        // What the monitor is given is what admission counted.
        let run = effective_spec(&desired[0], Some(64 * MIB));
        assert!(matches!(run.kind, Kind::Zone(ref z) if z.quota == Some(64 * MIB)));
    }
}
