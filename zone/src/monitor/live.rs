//! What a `Reload` changes in the running zone without a restart: the cgroup limits
//! (memory, cpu-cap, pids), the writable-layer quota and the nics. init decides what
//! is live (its planner); the monitor applies the difference between what the zone
//! runs with and the rewritten `config.json`, and refuses a value the running zone
//! cannot take (a memory cap under what it uses now) before touching anything.

use super::{launch_spec, Monitor};
use crate::cgroups::Limits;
use crate::error::{Context, Result, ZoneError};
use crate::launch::Zone;
use crate::net::NicPlan;
use monitor::InstanceConfig;
use spec::format::format_size;

/// How the running nics become the wanted ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct NicChanges {
    /// Names (inside the zone) of the nics to unplug.
    pub remove: Vec<String>,
    /// Nics to plug in, with host names that no kept nic uses.
    pub add: Vec<NicPlan>,
}

impl NicChanges {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// Compares the running nics with the wanted ones by name: a nic whose settings or
/// bridge changed is unplugged and plugged again. An added nic gets the first host
/// name `host_ifname(uuid, i)` no kept nic holds (a removal shifts the indices the
/// wanted list was numbered with, while the kept veths keep their names).
pub(super) fn nic_changes(uuid: &str, running: &[NicPlan], wanted: &[NicPlan]) -> NicChanges {
    let kept = |p: &NicPlan| {
        wanted
            .iter()
            .any(|w| w.nic == p.nic && w.bridge == p.bridge)
    };
    let keep: Vec<&NicPlan> = running.iter().filter(|p| kept(p)).collect();
    let mut taken: Vec<String> = keep.iter().map(|p| p.host_if.clone()).collect();
    let mut out = NicChanges {
        remove: running
            .iter()
            .filter(|p| !kept(p))
            .map(|p| p.nic.name.clone())
            .collect(),
        add: Vec::new(),
    };
    for w in wanted {
        if keep.iter().any(|k| k.nic.name == w.nic.name) {
            continue;
        }
        let index = (0..)
            .find(|&i| !taken.contains(&monitor::host_ifname(uuid, i)))
            .expect("an unused index");
        let host_if = monitor::host_ifname(uuid, index);
        taken.push(host_if.clone());
        // The derived MAC follows the port's index too, so it never repeats a kept
        // nic's (antispoof holds each port to its own).
        out.add.push(NicPlan {
            host_if,
            mac: spec::MacAddr::of_nic(w.nic.mac, uuid, index).octets(),
            ..w.clone()
        });
    }
    out
}

impl Monitor {
    /// Applies the live part of `new` (init's rewritten config) to the zone; returns a
    /// note per change. Nothing is touched when a value cannot apply.
    pub(super) fn apply_live(&mut self, new: &InstanceConfig) -> Result<Vec<String>> {
        let wanted = launch_spec(new)?;
        let mut notes = Vec::new();
        let limits = wanted.limits;
        let running_nics = match &self.zone {
            Some(z) => z.nics().to_vec(),
            None => self.spec.nics.clone(),
        };
        let nics = nic_changes(&self.config.uuid, &running_nics, &wanted.nics);
        if limits != self.spec.limits {
            self.check_limits(&limits)?;
        }
        if let Some(zone) = &mut self.zone {
            for name in &nics.remove {
                zone.remove_nic(name)?;
                notes.push(format!("nic {name} removed"));
            }
            for plan in &nics.add {
                zone.add_nic(plan.clone())?;
                let mut note = format!("nic {} added on {}", plan.nic.name, plan.bridge);
                if plan.nic.ip == spec::IpConfig::Dhcp {
                    note += &match start_dhcp_client(&self.config, zone, &plan.nic.name) {
                        Ok(()) => "; its DHCP client started".to_string(),
                        Err(e) => format!("; no DHCP client: {e}"),
                    };
                }
                notes.push(note);
            }
            let firewall = new.spec.firewall.as_ref();
            let changed = zone.set_firewall(firewall)?;
            if !changed.is_empty() {
                notes.push(format!(
                    "firewall {} on {}",
                    if firewall.is_some() {
                        "applied"
                    } else {
                        "removed"
                    },
                    changed.join(", ")
                ));
            }
        }
        // What the next start in this monitor (a reboot) plugs in: without this boot's
        // DHCP leases, which its nics ask for again.
        self.spec.nics = match &self.zone {
            Some(z) => z.nics().iter().map(NicPlan::unleased).collect(),
            None => wanted.nics.clone(),
        };
        if limits != self.spec.limits {
            if let Some(zone) = &self.zone {
                zone.cgroup.set_limits(&limits)?;
            }
            self.spec.limits = limits;
            self.record_limits();
            notes.push(format!("limits applied: {}", describe(&limits)));
        }
        let quota = |c: &InstanceConfig| match &c.spec.kind {
            spec::Kind::Zone(z) => z.quota,
            spec::Kind::Hvm(_) => None,
        };
        if quota(new) != quota(&self.config) {
            self.config.spec.kind = new.spec.kind.clone();
            if let (Some(_), Some(q)) = (&self.quota, self.layer_quota()) {
                self.apply_quota(&q)?;
                notes.push(format!(
                    "quota: {}",
                    self.status
                        .details
                        .get("quota")
                        .map_or("no limit", String::as_str)
                ));
            }
        }
        Ok(notes)
    }

    /// Refuses limits the running zone cannot take: a memory cap under what it uses
    /// now would have the kernel reclaim or kill inside it.
    fn check_limits(&self, limits: &Limits) -> Result<()> {
        let (Some(zone), Some(cap)) = (&self.zone, limits.memory) else {
            return Ok(());
        };
        let used = zone.cgroup.memory_usage()?;
        if cap < used {
            return Err(ZoneError::Invalid(format!(
                "memory {} is below the {} zone {} uses now; free memory in the zone, or \
                 lower the cap while it is stopped",
                format_size(cap),
                format_size(used),
                self.config.spec.name
            )));
        }
        Ok(())
    }

    /// The limits in the status details `vmadm info` shows.
    pub(super) fn record_limits(&mut self) {
        let l = self.spec.limits;
        let d = &mut self.status.details;
        d.insert(
            "memory".into(),
            l.memory.map_or("none".into(), |m| m.to_string()),
        );
        d.insert("cpu_cap".into(), l.cpu_cap.to_string());
        d.insert(
            "pids".into(),
            l.pids.map_or("none".into(), |p| p.to_string()),
        );
        self.save();
    }
}

/// Starts the image's DHCP client for `nic`, added to the running `zone` of `config`,
/// as the zone's start does for the nics it has then.
fn start_dhcp_client(config: &InstanceConfig, zone: &Zone, nic: &str) -> Result<()> {
    let target = crate::zlogin::Target {
        name: config.spec.name.clone(),
        uuid: config.uuid.clone(),
        pid: zone.pid.as_raw(),
        pidfd: zone
            .pidfd
            .try_clone()
            .ctx(|| "duplicating the zone's pidfd".into())?,
        id_range_start: config.id_range_start,
    };
    crate::zlogin::start_dhcp_client(&target, nic).map_err(|e| ZoneError::Setup(e.to_string()))
}

fn describe(l: &Limits) -> String {
    format!(
        "memory {}, cpu-cap {}, pids {}",
        l.memory.map_or("none".into(), format_size),
        l.cpu_cap,
        l.pids.map_or("none".into(), |p| p.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0123abcd-0000-4000-8000-000000000001";

    fn plan(name: &str, tag: &str, index: usize) -> NicPlan {
        let nic = spec::Nic {
            name: name.into(),
            tag: tag.into(),
            ip: spec::IpConfig::None,
            gateway: None,
            mtu: None,
            mac: None,
            vlan: 0,
            allow: Default::default(),
        };
        NicPlan::new(UUID, index, &nic, format!("sk-{tag}"), None)
    }

    #[test]
    fn unchanged_nics_are_left_alone() {
        let running = [plan("net0", "admin", 0), plan("net1", "admin", 1)];
        assert!(nic_changes(UUID, &running, &running).is_empty());
    }

    #[test]
    fn a_removal_keeps_the_other_veths_and_an_addition_takes_a_free_name() {
        let running = [plan("net0", "admin", 0), plan("net1", "admin", 1)];
        // net0 removed: the wanted list renumbers net1 as index 0, but its veth stays.
        let c = nic_changes(UUID, &running, &[plan("net1", "admin", 0)]);
        assert_eq!(c.remove, vec!["net0".to_string()]);
        assert!(c.add.is_empty(), "{c:?}");
        // net2 added beside net0 and net1: index 2 is free.
        let wanted = [
            plan("net0", "admin", 0),
            plan("net1", "admin", 1),
            plan("net2", "storage", 2),
        ];
        let c = nic_changes(UUID, &running[1..], &wanted);
        assert_eq!(c.remove, Vec::<String>::new());
        let added: Vec<(&str, &str)> = c
            .add
            .iter()
            .map(|p| (p.nic.name.as_str(), p.host_if.as_str()))
            .collect();
        assert_eq!(
            added,
            vec![("net0", "sk0123abcdn0"), ("net2", "sk0123abcdn2")]
        );
    }

    #[test]
    fn an_added_nic_never_takes_a_kept_nics_mac() {
        // net0 went away earlier; net1 kept its veth (index 1) and its MAC.
        let running = [plan("net1", "admin", 1)];
        let wanted = [plan("net1", "admin", 0), plan("net2", "admin", 1)];
        let c = nic_changes(UUID, &running, &wanted);
        assert_eq!(c.add.len(), 1);
        assert_eq!(c.add[0].host_if, monitor::host_ifname(UUID, 0));
        assert_ne!(c.add[0].mac, running[0].mac);
        assert_eq!(c.add[0].mac, plan("x", "admin", 0).mac);
    }

    #[test]
    fn a_changed_nic_is_replugged() {
        let running = [plan("net0", "admin", 0)];
        let mut wanted = plan("net0", "admin", 0);
        wanted.nic.mtu = Some(1400);
        let c = nic_changes(UUID, &running, std::slice::from_ref(&wanted));
        assert_eq!(c.remove, vec!["net0".to_string()]);
        assert_eq!(c.add, vec![wanted]);
    }
}
