//! The reconcile planner: desired specs + recorded instances -> steps with reasons.
//!
//! Pure: no I/O, so every rule is unit-tested and the 1000-instance benchmark measures
//! the planner itself.

use crate::pool::InstanceRecord;
use spec::{Ensure, InstanceSpec, Kind};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

pub use spec::api::Action;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Instance name.
    pub name: String,
    /// What to do.
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// The desired spec, for create/update/restart.
    pub spec: Option<InstanceSpec>,
    /// An update the running instance's monitor applies in place (no restart).
    pub live: bool,
}

impl Step {
    /// The action as the plan shows it: `update (live)` for an update the running
    /// instance takes in place.
    pub fn label(&self) -> String {
        if self.live {
            format!("{} (live)", self.action)
        } else {
            self.action.to_string()
        }
    }
}

/// What the planner knows about an existing instance.
#[derive(Debug, Clone)]
pub struct Actual<'a> {
    /// Its record in the pool.
    pub record: &'a InstanceRecord,
    /// Whether a live monitor runs it.
    pub running: bool,
}

/// Computes the steps that take `actual` to `desired`.
///
/// `broken_files` are manifest files that failed to parse: instances last declared in
/// one are left alone (a typo must not stop anything). Steps come in a stable order:
/// by name, create before start.
pub fn plan(
    desired: &[InstanceSpec],
    actual: &[Actual<'_>],
    broken_files: &[PathBuf],
) -> Vec<Step> {
    let by_name: BTreeMap<&str, &Actual<'_>> =
        actual.iter().map(|a| (a.record.name.as_str(), a)).collect();
    let broken: HashSet<&PathBuf> = broken_files.iter().collect();
    let mut steps = Vec::new();
    let mut declared = HashSet::new();

    for d in desired {
        declared.insert(d.name.as_str());
        let step = |action, reason: String, spec: Option<&InstanceSpec>| Step {
            name: d.name.clone(),
            action,
            reason,
            spec: spec.cloned(),
            live: false,
        };
        let current = by_name.get(d.name.as_str());
        match (d.ensure, current) {
            (Ensure::Absent, Some(_)) => steps.push(step(
                Action::Delete,
                format!("ensure \"absent\" in {}", origin(d)),
                None,
            )),
            (Ensure::Absent, None) => {}
            (Ensure::Present, None) => {
                steps.push(step(
                    Action::Create,
                    format!("declared in {}", origin(d)),
                    Some(d),
                ));
                if d.autoboot {
                    steps.push(step(Action::Start, "autoboot".into(), None));
                }
            }
            (Ensure::Present, Some(a)) => steps.extend(plan_existing(d, a)),
        }
    }

    for a in actual {
        let rec = a.record;
        if declared.contains(rec.name.as_str()) || !a.running {
            continue;
        }
        if broken.contains(&rec.spec.origin.file) {
            continue;
        }
        steps.push(Step {
            name: rec.name.clone(),
            action: Action::Stop,
            reason: "no manifest declares it any more; data kept".into(),
            spec: None,
            live: false,
        });
    }
    steps.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then(order(a.action).cmp(&order(b.action)))
    });
    steps
}

fn order(a: Action) -> u8 {
    match a {
        Action::Refuse | Action::Error | Action::Delete | Action::Create => 0,
        Action::Update | Action::Restart | Action::Stop => 1,
        Action::Start => 2,
    }
}

fn origin(d: &InstanceSpec) -> String {
    if d.origin.file.as_os_str().is_empty() {
        "the API".into()
    } else {
        format!(
            "{}:{}:{}",
            d.origin.file.display(),
            d.origin.line,
            d.origin.col
        )
    }
}

fn plan_existing(d: &InstanceSpec, a: &Actual<'_>) -> Vec<Step> {
    let rec = a.record;
    let mut steps = Vec::new();
    let step = |action, reason: String, spec: Option<&InstanceSpec>| Step {
        name: d.name.clone(),
        action,
        reason,
        spec: spec.cloned(),
        live: false,
    };
    if let Some(pinned) = d.uuid {
        if pinned.to_string() != rec.uuid {
            return vec![step(
                Action::Refuse,
                format!(
                    "{} pins uuid {pinned} but the instance exists as {}; delete it first",
                    origin(d),
                    rec.uuid
                ),
                None,
            )];
        }
    }
    if d.kind.as_str() != rec.spec.kind.as_str() {
        return vec![step(
            Action::Refuse,
            format!(
                "{} declares a {} but the instance is a {}; delete it first",
                origin(d),
                d.kind,
                rec.spec.kind
            ),
            None,
        )];
    }
    let changed = changed_properties(&rec.spec, d);
    let mut restarted = false;
    if !changed.is_empty() {
        let restart_needed: Vec<&str> = changed
            .iter()
            .copied()
            .filter(|p| needs_restart(&d.kind, p))
            .collect();
        if a.running && !restart_needed.is_empty() {
            restarted = true;
            steps.push(step(
                Action::Restart,
                format!(
                    "changed: {}; needs restart: {}",
                    changed.join(", "),
                    restart_needed.join(", ")
                ),
                Some(d),
            ));
        } else {
            steps.push(Step {
                live: a.running && changed.iter().any(|p| reaches_the_monitor_live(&d.kind, p)),
                ..step(
                    Action::Update,
                    format!("changed: {}", changed.join(", ")),
                    Some(d),
                )
            });
        }
    }
    let want = if changed.contains(&"autoboot") && !a.running && !rec.want_running {
        // Turning autoboot on is a request to have it running, as at boot.
        d.autoboot
    } else {
        rec.want_running
    };
    if want && !a.running && !restarted {
        let why = if rec.reason.is_empty() {
            "wanted running but no monitor runs it".to_string()
        } else {
            format!("wanted running; last exit: {}", rec.reason)
        };
        steps.push(step(Action::Start, why, None));
    }
    steps
}

/// Manifest property names that differ between two specs (origin ignored).
pub fn changed_properties(old: &InstanceSpec, new: &InstanceSpec) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut cmp = |name, differs: bool| {
        if differs {
            out.push(name);
        }
    };
    cmp("uuid", old.uuid != new.uuid);
    cmp("autoboot", old.autoboot != new.autoboot);
    cmp("image", old.image != new.image);
    cmp("memory", old.memory != new.memory);
    cmp("nic", old.nics != new.nics);
    cmp("resolver", old.resolvers != new.resolvers);
    cmp("metadata", old.metadata != new.metadata);
    cmp("user-script", old.user_script != new.user_script);
    cmp("user-data", old.user_data != new.user_data);
    cmp("ssh-key", old.ssh_keys != new.ssh_keys);
    match (&old.kind, &new.kind) {
        (Kind::Zone(o), Kind::Zone(n)) => {
            cmp("cpu-cap", o.cpu_cap != n.cpu_cap);
            cmp("pids", o.pids != n.pids);
            cmp("quota", o.quota != n.quota);
            cmp("hostname", o.hostname != n.hostname);
            cmp("init", o.init != n.init);
            cmp("env", o.env != n.env);
        }
        (Kind::Hvm(o), Kind::Hvm(n)) => {
            cmp("cpu-cap", o.cpu_cap != n.cpu_cap);
            cmp("vcpus", o.vcpus != n.vcpus);
            cmp("disk", o.disks != n.disks);
            cmp("cmdline", o.cmdline != n.cmdline);
        }
        _ => cmp("type", true),
    }
    out
}

/// Whether a changed property of an instance of `kind` only takes effect when the
/// instance restarts. The properties init alone acts on (autoboot, a pinned uuid equal
/// to the current one) apply live, and so do those the running monitor applies on a
/// `Reload` ([`reaches_the_monitor_live`]). The monitor reads everything else once,
/// at start.
pub fn needs_restart(kind: &Kind, property: &str) -> bool {
    !matches!(property, "autoboot" | "uuid") && !reaches_the_monitor_live(kind, property)
}

/// Whether a changed property is one the running instance's monitor applies on a
/// `Reload`: what its metadata service serves, for a zone its cgroup limits (memory,
/// cpu-cap, pids), its quota and its nics (veths plugged and unplugged in the running
/// zone), and for an HVM the cpu-cap of its VMM's cgroup. An HVM's memory, vCPUs and
/// nics are the guest's hardware: they change at its next boot.
pub fn reaches_the_monitor_live(kind: &Kind, property: &str) -> bool {
    let served = matches!(
        property,
        "metadata" | "user-script" | "user-data" | "ssh-key"
    );
    let live = match kind {
        Kind::Zone(_) => matches!(property, "memory" | "cpu-cap" | "pids" | "quota" | "nic"),
        Kind::Hvm(_) => property == "cpu-cap",
    };
    served || live
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::{record, zone_spec};

    fn actions(steps: &[Step]) -> Vec<(String, &'static str)> {
        steps
            .iter()
            .map(|s| (s.name.clone(), s.action.as_str()))
            .collect()
    }

    fn rec_for(spec: &InstanceSpec, want_running: bool) -> InstanceRecord {
        let mut r = record(&spec.name, &format!("uuid-{}", spec.name), 0);
        r.spec = spec.clone();
        r.want_running = want_running;
        r
    }

    #[test]
    fn new_instances_are_created_and_autobooted() {
        let mut b = zone_spec("b");
        b.autoboot = false;
        let steps = plan(&[zone_spec("a"), b], &[], &[]);
        assert_eq!(
            actions(&steps),
            vec![
                ("a".into(), "create"),
                ("a".into(), "start"),
                ("b".into(), "create")
            ]
        );
        assert!(
            steps[0].reason.contains("declared in"),
            "{}",
            steps[0].reason
        );
    }

    #[test]
    fn converged_state_plans_nothing() {
        let a = zone_spec("a");
        let mut b = zone_spec("b");
        b.autoboot = false;
        let (ra, rb) = (rec_for(&a, true), rec_for(&b, false));
        let actual = [
            Actual {
                record: &ra,
                running: true,
            },
            Actual {
                record: &rb,
                running: false,
            },
        ];
        assert!(plan(&[a, b], &actual, &[]).is_empty());
    }

    #[test]
    fn removed_manifest_stops_but_never_deletes() {
        let ra = rec_for(&zone_spec("a"), true);
        let rb = rec_for(&zone_spec("b"), false);
        let actual = [
            Actual {
                record: &ra,
                running: true,
            },
            Actual {
                record: &rb,
                running: false,
            },
        ];
        let steps = plan(&[], &actual, &[]);
        assert_eq!(actions(&steps), vec![("a".into(), "stop")]);
        assert!(steps[0].reason.contains("data kept"));
    }

    #[test]
    fn instances_of_a_broken_file_are_left_alone() {
        let mut s = zone_spec("a");
        s.origin.file = "/p/manifests/a.kdl".into();
        let ra = rec_for(&s, true);
        let actual = [Actual {
            record: &ra,
            running: true,
        }];
        assert!(plan(&[], &actual, &["/p/manifests/a.kdl".into()]).is_empty());
    }

    #[test]
    fn ensure_absent_deletes_existing_and_ignores_unknown() {
        let mut a = zone_spec("a");
        a.ensure = Ensure::Absent;
        let mut gone = zone_spec("gone");
        gone.ensure = Ensure::Absent;
        let ra = rec_for(&zone_spec("a"), true);
        let actual = [Actual {
            record: &ra,
            running: true,
        }];
        assert_eq!(
            actions(&plan(&[a, gone], &actual, &[])),
            vec![("a".into(), "delete")]
        );
    }

    #[test]
    fn changes_restart_running_and_update_stopped_instances() {
        let old = zone_spec("a");
        let mut new = old.clone();
        set_hostname(&mut new, "b");
        let ra = rec_for(&old, true);
        let running = [Actual {
            record: &ra,
            running: true,
        }];
        let steps = plan(std::slice::from_ref(&new), &running, &[]);
        assert_eq!(actions(&steps), vec![("a".into(), "restart")]);
        assert!(steps[0].reason.contains("hostname"), "{}", steps[0].reason);

        let rb = rec_for(&old, false);
        let stopped = [Actual {
            record: &rb,
            running: false,
        }];
        assert_eq!(
            actions(&plan(&[new], &stopped, &[])),
            vec![("a".into(), "update")]
        );
    }

    #[test]
    fn autoboot_change_applies_live() {
        let old = zone_spec("a");
        let mut new = old.clone();
        new.autoboot = false;
        let ra = rec_for(&old, true);
        let actual = [Actual {
            record: &ra,
            running: true,
        }];
        assert_eq!(
            actions(&plan(&[new], &actual, &[])),
            vec![("a".into(), "update")]
        );
    }

    #[test]
    fn metadata_service_changes_update_a_running_instance_without_restart() {
        let old = zone_spec("a");
        let ra = rec_for(&old, true);
        let actual = [Actual {
            record: &ra,
            running: true,
        }];
        type Edit = fn(&mut InstanceSpec);
        let edits: [(&str, Edit); 4] = [
            ("metadata", |s| {
                s.metadata.insert("role".into(), "db".into());
            }),
            ("user-script", |s| {
                s.user_script = Some("#!/bin/sh\n".into())
            }),
            ("user-data", |s| s.user_data = Some("x".into())),
            ("ssh-key", |s| s.ssh_keys.push("ssh-ed25519 AAAA k".into())),
        ];
        for (property, edit) in edits {
            let mut new = old.clone();
            edit(&mut new);
            let steps = plan(&[new], &actual, &[]);
            assert_eq!(actions(&steps), vec![("a".into(), "update")], "{property}");
            assert_eq!(steps[0].reason, format!("changed: {property}"));
        }
        // Together with a property the monitor reads at start, it restarts.
        let mut new = old.clone();
        new.user_data = Some("x".into());
        set_hostname(&mut new, "b");
        let steps = plan(&[new], &actual, &[]);
        assert_eq!(actions(&steps), vec![("a".into(), "restart")]);
        assert!(
            steps[0].reason.ends_with("needs restart: hostname"),
            "{}",
            steps[0].reason
        );
    }

    fn set_hostname(s: &mut InstanceSpec, name: &str) {
        if let Kind::Zone(z) = &mut s.kind {
            z.hostname = name.into();
        }
    }

    fn hvm(s: &InstanceSpec) -> InstanceSpec {
        InstanceSpec {
            kind: Kind::Hvm(spec::HvmSpec {
                vcpus: 1,
                cpu_cap: 0,
                disks: vec![],
                cmdline: None,
            }),
            ..s.clone()
        }
    }

    #[test]
    fn zone_limits_and_nics_update_a_running_zone_live() {
        let old = zone_spec("a");
        let ra = rec_for(&old, true);
        let actual = [Actual {
            record: &ra,
            running: true,
        }];
        type Edit = fn(&mut InstanceSpec);
        let edits: [(&str, Edit); 5] = [
            ("memory", |s| s.memory *= 2),
            ("cpu-cap", |s| {
                if let Kind::Zone(z) = &mut s.kind {
                    z.cpu_cap = 25;
                }
            }),
            ("pids", |s| {
                if let Kind::Zone(z) = &mut s.kind {
                    z.pids = 64;
                }
            }),
            ("quota", |s| {
                if let Kind::Zone(z) = &mut s.kind {
                    z.quota = Some(1 << 30);
                }
            }),
            ("nic", |s| {
                s.nics.push(spec::Nic {
                    name: "net1".into(),
                    tag: "admin".into(),
                    ip: spec::IpConfig::None,
                    gateway: None,
                    mtu: None,
                    mac: None,
                    vlan: 0,
                    allow: Default::default(),
                })
            }),
        ];
        for (property, edit) in edits {
            let mut new = old.clone();
            edit(&mut new);
            let steps = plan(&[new], &actual, &[]);
            assert_eq!(actions(&steps), vec![("a".into(), "update")], "{property}");
            assert_eq!(steps[0].label(), "update (live)", "{property}");
            assert_eq!(steps[0].reason, format!("changed: {property}"));
        }
        // Stopped, the same edit is a plain update: nothing runs to take it live.
        let rb = rec_for(&old, false);
        let stopped = [Actual {
            record: &rb,
            running: false,
        }];
        let mut new = old.clone();
        new.memory *= 2;
        let steps = plan(&[new], &stopped, &[]);
        assert_eq!(steps[0].label(), "update");
    }

    #[test]
    fn hvm_memory_vcpus_and_nics_need_a_restart() {
        let old = hvm(&zone_spec("v"));
        let rv = rec_for(&old, true);
        let actual = [Actual {
            record: &rv,
            running: true,
        }];
        let mut new = old.clone();
        new.memory *= 2;
        new.nics.clear();
        new.nics.push(spec::Nic {
            name: "net0".into(),
            tag: "admin".into(),
            ip: spec::IpConfig::Dhcp,
            gateway: None,
            mtu: None,
            mac: None,
            vlan: 0,
            allow: Default::default(),
        });
        if let Kind::Hvm(h) = &mut new.kind {
            h.vcpus = 2;
        }
        let steps = plan(&[new], &actual, &[]);
        assert_eq!(actions(&steps), vec![("v".into(), "restart")]);
        assert!(
            steps[0]
                .reason
                .ends_with("needs restart: memory, nic, vcpus"),
            "{}",
            steps[0].reason
        );
        assert!(needs_restart(&old.kind, "memory") && !needs_restart(&old.kind, "metadata"));
        // Its cpu-cap is the VMM's cgroup: live.
        let mut new = old.clone();
        if let Kind::Hvm(h) = &mut new.kind {
            h.cpu_cap = 30;
        }
        let steps = plan(&[new], &actual, &[]);
        assert_eq!(steps[0].label(), "update (live)");
        assert_eq!(steps[0].reason, "changed: cpu-cap");
    }

    #[test]
    fn dead_monitor_of_a_wanted_instance_is_started_with_its_last_reason() {
        let a = zone_spec("a");
        let mut ra = rec_for(&a, true);
        ra.reason = "monitor killed by SIGKILL".into();
        let actual = [Actual {
            record: &ra,
            running: false,
        }];
        let steps = plan(&[a], &actual, &[]);
        assert_eq!(actions(&steps), vec![("a".into(), "start")]);
        assert!(steps[0].reason.contains("SIGKILL"));
    }

    #[test]
    fn pinned_uuid_or_kind_mismatch_is_refused() {
        let mut a = zone_spec("a");
        a.uuid = Some(uuid::Uuid::nil());
        let ra = rec_for(&zone_spec("a"), false);
        let actual = [Actual {
            record: &ra,
            running: false,
        }];
        let steps = plan(&[a], &actual, &[]);
        assert_eq!(actions(&steps), vec![("a".into(), "refuse")]);
        assert!(steps[0].reason.contains("delete it first"));
    }
}
