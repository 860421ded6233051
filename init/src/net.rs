//! Node networking: nic-tag bridges, and the node's own interface configuration at
//! boot (static from `ip=`, or a lease udhcpc obtained). The netlink work is
//! [`host::net`]'s, over one connection init keeps for its whole life.

use host::net::{NetError, Netlink, Route};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

/// An address for the node's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceAddr {
    /// Interface name.
    pub iface: String,
    /// Address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
}

/// init's netlink connection, opened on first use and kept: init provisions bridges
/// for every instance it starts, and never forks without exec.
fn netlink() -> Result<&'static Netlink, NetError> {
    static NETLINK: OnceLock<Netlink> = OnceLock::new();
    if let Some(nl) = NETLINK.get() {
        return Ok(nl);
    }
    let nl = Netlink::new()?;
    // Two first callers at once: one connection wins, the other is dropped.
    Ok(NETLINK.get_or_init(|| nl))
}

/// Makes bridge `name` exist and be up; enslaves `link` (the uplink) when given.
/// Idempotent.
pub fn ensure_bridge(name: &str, link: Option<&str>) -> Result<(), NetError> {
    host::link::ensure_bridge(name)?;
    if let Some(link) = link {
        host::link::plug_into_bridge(link, name)?;
    }
    Ok(())
}

/// Deletes link `name` if it exists (tests and cleanup).
pub fn delete_link(name: &str) -> Result<(), NetError> {
    netlink()?.blocking().delete(name).map(drop)
}

/// Whether link `name` exists.
pub fn link_exists(name: &str) -> Result<bool, NetError> {
    netlink()?.blocking().exists(name)
}

/// Brings `lo` up.
pub fn loopback_up() -> Result<(), NetError> {
    link_up("lo")
}

/// Brings an interface up (needed before DHCP can run on it).
pub fn link_up(iface: &str) -> Result<(), NetError> {
    netlink()?.blocking().set_up(iface)
}

/// Configures an address (and default route) on an interface and brings it up.
pub fn configure(a: &IfaceAddr) -> Result<(), NetError> {
    let nl = netlink()?.blocking();
    nl.set_up(&a.iface)?;
    nl.add_address(&a.iface, IpAddr::V4(a.addr), a.prefix)?;
    if let Some(gw) = a.gateway {
        nl.add_route(&Route::default_via(IpAddr::V4(gw), &a.iface))?;
    }
    Ok(())
}

/// Names of the node's ethernet-like interfaces (not lo, bridges, veths, taps), from
/// /sys/class/net.
pub fn physical_interfaces() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The MAC address of an interface, `aa:bb:cc:dd:ee:ff`.
pub fn mac_of(iface: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (CAP_NET_ADMIN): creates and removes a uniquely named bridge.
    #[test]
    fn bridges_are_created_idempotently_with_their_uplink() {
        assert!(nix::unistd::getuid().is_root(), "net tests need root");
        let tag = format!("{:x}", std::process::id() & 0xffff);
        let br = format!("skt{tag}");
        // A veth end stands in for the node's uplink (not every host has the dummy module).
        let uplink = format!("skd{tag}");
        struct Cleanup(Vec<String>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for l in &self.0 {
                    let _ = delete_link(l);
                }
            }
        }
        let _c = Cleanup(vec![uplink.clone(), br.clone()]);
        netlink()
            .unwrap()
            .blocking()
            .add_veth(&uplink, &format!("{uplink}p"))
            .unwrap();
        ensure_bridge(&br, Some(&uplink)).unwrap();
        ensure_bridge(&br, Some(&uplink)).unwrap();
        assert!(link_exists(&br).unwrap());
        let master = std::fs::read_link(format!("/sys/class/net/{uplink}/master")).unwrap();
        assert!(
            master.ends_with(&br),
            "{uplink} not enslaved: {}",
            master.display()
        );
        let e = ensure_bridge(&br, Some("sknonexistent0")).unwrap_err();
        assert!(e.to_string().contains("sknonexistent0"), "{e}");
        delete_link(&br).unwrap();
        assert!(!link_exists(&br).unwrap());
    }
}
