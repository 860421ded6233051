//! Zone networking: per nic, a veth pair whose host end is plugged into the bridge of
//! the nic's tag (created if missing) and whose zone end is moved into the zone's
//! network namespace, renamed to the nic name and given its address and gateway
//! route. The netlink work is [`host::net`]'s.
//!
//! Before a host end exists, its antispoof rules (and the zone's firewall) are put in
//! place by name ([`host::isolation`]): the port is never up without them, and they
//! are enforced in the host's namespace, out of reach of the zone's own NET_ADMIN.
//!
//! An `ip="dhcp"` nic's port is held to the addresses its DHCP server leases it: a
//! [`Snooper`] on the host end, opened before the port is plugged in, sees the
//! server's DHCPACKs, and whoever supervises the zone (its monitor, `zone run`) puts
//! each lease into the port's rules ([`crate::launch::Zone::snoop`]).

use crate::error::{Result, ZoneError};
use host::isolation::PortPolicy;
use host::net::{LinkSettings, NetError, Netlink, Route};
use host::snoop::Snooper;
use spec::{IpConfig, Nic};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, OwnedFd};

/// A nic with its host-side names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlan {
    /// The nic as the spec declares it.
    pub nic: Nic,
    /// The bridge its tag maps to.
    pub bridge: String,
    /// Host end of the veth pair (see `monitor::host_ifname`).
    pub host_if: String,
    /// The zone end's MAC: the pinned one or one derived from the instance and nic
    /// index, set by us so the antispoof rules know it.
    pub mac: [u8; 6],
    /// The zone's firewall, applied to what this nic receives.
    pub firewall: Option<spec::Firewall>,
    /// A DHCP nic's leased addresses, as its snooper saw them (its port's sources).
    pub leased: Vec<Ipv4Addr>,
}

impl NicPlan {
    /// The plan of nic number `index` of the instance `uuid` (or a run's synthetic id).
    pub fn new(
        uuid: &str,
        index: usize,
        nic: &Nic,
        bridge: String,
        firewall: Option<spec::Firewall>,
    ) -> NicPlan {
        NicPlan {
            nic: nic.clone(),
            bridge,
            host_if: monitor::host_ifname(uuid, index),
            mac: spec::MacAddr::of_nic(nic.mac, uuid, index).octets(),
            firewall,
            leased: vec![],
        }
    }

    /// What the host end lets through: [`host::isolation`]'s rules for this nic.
    pub fn policy(&self) -> PortPolicy {
        let mut p = PortPolicy::for_nic(&self.host_if, self.mac, &self.nic, self.firewall.as_ref());
        p.addrs.extend(self.leased.iter().copied().map(IpAddr::V4));
        p
    }

    /// The plan without the DHCP leases a boot learned.
    pub fn unleased(&self) -> NicPlan {
        NicPlan {
            leased: vec![],
            ..self.clone()
        }
    }

    /// Name of the zone end while it still lives on the host (max 15 bytes).
    fn temp_peer(&self) -> String {
        let mut n = format!("{}z", self.host_if);
        n.truncate(15);
        n
    }
}

/// The zone error for a netlink failure while doing `what` (the nic or step).
fn net_err(what: impl Into<String>) -> impl FnOnce(NetError) -> ZoneError {
    let what = what.into();
    move |e| ZoneError::Net {
        what,
        reason: e.to_string(),
    }
}

/// A netlink connection in the runtime's own namespace, for one batch of work: the
/// runtime must be single-threaded again right after (it forks and joins the zone's
/// namespaces), and dropping the connection joins its thread.
fn host_netlink() -> Result<Netlink> {
    Netlink::new().map_err(net_err("host netlink"))
}

/// Netlink in the runtime's namespace and in one running zone's: what plumbing a nic
/// of that zone takes.
struct Plumber {
    zone_ns: OwnedFd,
    host: Netlink,
    inside: Netlink,
}

impl Plumber {
    /// Opens the network namespace of the zone whose init is `zone_pid`.
    fn open(zone_pid: i32) -> Result<Plumber> {
        let ns_path = format!("/proc/{zone_pid}/ns/net");
        let open_ns = || {
            std::fs::File::open(&ns_path)
                .map(OwnedFd::from)
                .map_err(|e| ZoneError::Net {
                    what: ns_path.clone(),
                    reason: e.to_string(),
                })
        };
        let zone_ns = open_ns()?;
        let host = host_netlink()?;
        let inside = Netlink::in_netns(open_ns()?).map_err(net_err("zone netlink"))?;
        Ok(Plumber {
            zone_ns,
            host,
            inside,
        })
    }

    /// Inside the zone: lo up (once, at boot).
    fn loopback_up(&self) -> Result<()> {
        let nl = self.inside.blocking();
        if nl.exists("lo").map_err(net_err("lo"))? {
            nl.set_up("lo").map_err(net_err("lo"))?;
        }
        Ok(())
    }

    /// Plumbs one nic: the veth pair, its host end in the bridge, its zone end moved
    /// into the zone, renamed, addressed, up, with its gateway route. The one place a
    /// nic is plugged in, at boot and live.
    fn plumb(&self, p: &NicPlan) -> Result<Option<Snooper>> {
        let nic = format!("nic {}", p.nic.name);
        // Rules first: the port must never carry a frame unfiltered.
        reinstall_rules(p)?;
        let peer = p.temp_peer();
        let host = self.host.blocking();
        host.add_veth(&p.host_if, &peer).map_err(net_err(&nic))?;
        // Then the snooper: it must see the first lease, before the port carries any.
        let snooper = match host::snoop::needed(&p.nic) {
            true => Some(
                Snooper::open(&p.host_if, p.mac).map_err(|e| ZoneError::Net {
                    what: format!("{nic}: snooping its DHCP leases"),
                    reason: e.to_string(),
                })?,
            ),
            false => None,
        };
        host.move_to_netns(&peer, self.zone_ns.as_fd())
            .map_err(net_err(format!("moving {peer} into the zone")))?;
        host::link::plug_into_bridge(&p.host_if, &p.bridge).map_err(|e| net_err(&nic)(e.into()))?;
        // The zone end is still down: nothing has crossed the port yet.
        if p.nic.vlan != 0 {
            host::vlan::isolate_port(&p.bridge, &p.host_if, p.nic.vlan, |port| {
                !monitor::is_host_ifname(port)
            })
            .map_err(|e| ZoneError::Net {
                what: nic.clone(),
                reason: e.to_string(),
            })?;
        }
        configure_inside(&self.inside, p)?;
        Ok(snooper)
    }
}

/// The snoopers of a zone's DHCP nics, each with the nic's name.
pub type Snoopers = Vec<(String, Snooper)>;

/// Plugs every nic of a zone whose init is `zone_pid` ([`Plumber::plumb`] each), and
/// returns its DHCP nics' snoopers. On error, what was created is removed.
pub fn setup(zone_pid: i32, plans: &[NicPlan]) -> Result<Snoopers> {
    if plans.is_empty() {
        return Ok(vec![]);
    }
    let result = (|| {
        let plumber = Plumber::open(zone_pid)?;
        plumber.loopback_up()?;
        let mut snoopers = vec![];
        for p in plans {
            if let Some(s) = plumber.plumb(p)? {
                snoopers.push((p.nic.name.clone(), s));
            }
        }
        Ok(snoopers)
    })();
    if result.is_err() {
        teardown(plans);
    }
    result
}

/// Plugs one more nic into the running zone whose init is `zone_pid` (a live
/// `add_nics`), returning its snooper if it is a DHCP nic; on error, what was created
/// of it is removed.
pub fn plumb_one(zone_pid: i32, plan: &NicPlan) -> Result<Option<Snooper>> {
    let result = Plumber::open(zone_pid).and_then(|p| p.plumb(plan));
    if result.is_err() {
        let _ = remove_stale(std::slice::from_ref(plan));
        remove_rules(plan);
    }
    result
}

/// Replaces the rules of a plugged nic's port with those of `plan` (a live firewall
/// change): one nf_tables transaction, so the port is never without rules.
pub fn reinstall_rules(plan: &NicPlan) -> Result<()> {
    host::isolation::install(&plan.policy()).map_err(|e| ZoneError::Net {
        what: format!("nic {}: antispoof/firewall rules", plan.nic.name),
        reason: e.to_string(),
    })
}

/// Unplugs one nic from a running zone (a live `remove_nics`): deleting the host end
/// of its veth deletes the zone end with it, addresses and routes included.
pub fn unplumb_one(plan: &NicPlan) -> Result<()> {
    delete_links(vec![plan.host_if.clone()])?;
    remove_rules(plan);
    Ok(())
}

/// Removes a port's rules once the port is gone (a failure only leaves rules keyed by
/// a name no link has; a later port of that name replaces them).
fn remove_rules(plan: &NicPlan) {
    if let Err(e) = host::isolation::remove(&plan.host_if) {
        log::warn!("nic {}: removing its rules: {e}", plan.nic.name);
    }
}

/// Inside the zone's netns: the nic renamed, addressed, up, its gateway route.
fn configure_inside(netlink: &Netlink, p: &NicPlan) -> Result<()> {
    let nl = netlink.blocking();
    let name = &p.nic.name;
    let what = format!("nic {name}");
    let settings = LinkSettings {
        name: Some(name.clone()),
        mtu: p.nic.mtu,
        mac: Some(p.mac),
    };
    nl.configure_link(&p.temp_peer(), &settings)
        .map_err(net_err(&what))?;
    if let IpConfig::Static { addr, prefix } = p.nic.ip {
        nl.add_address(name, addr, prefix).map_err(net_err(&what))?;
    }
    nl.set_up(name).map_err(net_err(&what))?;
    if let Some(gw) = p.nic.gateway {
        nl.add_route(&Route::default_via(gw, name))
            .map_err(net_err(&what))?;
    }
    Ok(())
}

/// Removes the host ends of a zone's veths (the kernel drops the pair with its netns,
/// but asynchronously: deleting them here means none is left when we return), then
/// their rules.
pub fn teardown(plans: &[NicPlan]) {
    if plans.is_empty() {
        return;
    }
    let _ = delete_links(plans.iter().map(|p| p.host_if.clone()).collect());
    plans.iter().for_each(remove_rules);
}

/// Deletes what a runtime killed mid-flight may have left of these nics on the host:
/// the host end of each veth, and the zone end if it never left the host (its
/// temporary name). Returns the names deleted.
pub fn remove_stale(plans: &[NicPlan]) -> Result<Vec<String>> {
    if plans.is_empty() {
        return Ok(vec![]);
    }
    let names = plans
        .iter()
        .flat_map(|p| [p.host_if.clone(), p.temp_peer()])
        .collect();
    delete_links(names)
}

/// Deletes the named links that exist; returns those deleted (a veth's peer goes with
/// it, so a name may already be gone when its turn comes).
fn delete_links(names: Vec<String>) -> Result<Vec<String>> {
    let host = host_netlink()?;
    let mut deleted = vec![];
    for name in names {
        if host
            .blocking()
            .delete(&name)
            .map_err(net_err(format!("deleting {name}")))?
        {
            deleted.push(name);
        }
    }
    Ok(deleted)
}

/// Whether a host interface exists (for tests and status).
pub fn link_exists(name: &str) -> Result<bool> {
    host_netlink()?
        .blocking()
        .exists(name)
        .map_err(net_err(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_peer_fits_ifnamsiz() {
        let nic = Nic::new("net0", "admin", IpConfig::None);
        let uuid = "0123abcd-0000-0000-0000-000000000000";
        let p = NicPlan::new(uuid, 3, &nic, "sk-admin".into(), None);
        assert!(p.temp_peer().len() <= 15);
        assert_ne!(p.temp_peer(), p.host_if);
    }
}
