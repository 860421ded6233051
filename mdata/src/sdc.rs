//! The read-only `sdc:` keys, computed from facts about the instance that its
//! monitor hands over ([`InstanceInfo`]).
//!
//! Shapes follow SmartOS: `sdc:nics` is the vmobj's `nics` array, `sdc:routes` the list
//! `[{"linklocal", "dst", "gateway"}]` its metadata agent builds, `sdc:resolvers` a JSON
//! array; scalar keys are plain strings. A key whose fact is absent answers NOTFOUND.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What the `sdc:` keys are computed from: plain data, filled by whoever runs the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// `sdc:uuid`, also the instance id cloud-init keys its per-instance state on.
    pub uuid: String,
    /// `sdc:alias` (skerry: the instance name).
    pub alias: Option<String>,
    /// `sdc:hostname`.
    pub hostname: Option<String>,
    /// `sdc:dns_domain`.
    pub dns_domain: Option<String>,
    /// `sdc:datacenter_name` (cloud-init's availability zone).
    pub datacenter_name: Option<String>,
    /// `sdc:server_uuid`: the node.
    pub server_uuid: Option<String>,
    /// `sdc:brand` (`joyent`, `lx`, `kvm`, `bhyve`...).
    pub brand: Option<String>,
    /// `sdc:image_uuid`.
    pub image_uuid: Option<String>,
    /// `sdc:max_physical_memory`, in MiB as SmartOS counts it.
    pub max_physical_memory: Option<u64>,
    /// `sdc:nics`, in order; index N is `nics[N]` for link-local routes.
    pub nics: Vec<Nic>,
    /// `sdc:resolvers`.
    pub resolvers: Vec<String>,
    /// `sdc:routes`.
    pub routes: Vec<Route>,
    /// `sdc:operator-script`, run by cloud-init before the user-script.
    pub operator_script: Option<String>,
    /// `sdc:vendor-data`, cloud-init's vendor data.
    pub vendor_data: Option<String>,
}

/// One address of a nic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NicAddress {
    /// Configured by DHCP in the guest.
    Dhcp,
    /// A static address with its prefix length.
    Static {
        /// The address.
        addr: IpAddr,
        /// The prefix length (`/24`).
        prefix: u8,
    },
}

/// One network interface as the guest should configure it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// The interface name SmartOS gives it (`net0`).
    pub interface: String,
    /// Its MAC address, `aa:bb:cc:dd:ee:ff`: how the guest finds the link.
    pub mac: String,
    /// Its addresses; the first IPv4 one is also served as `ip`/`netmask`.
    pub ips: Vec<NicAddress>,
    /// Its gateways.
    pub gateways: Vec<IpAddr>,
    /// Whether this nic carries the default route.
    pub primary: bool,
    /// The nic tag (the node network it is plugged into).
    pub nic_tag: String,
    /// Its MTU, when not the default.
    pub mtu: Option<u32>,
}

/// Where a route goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteVia {
    /// Through a router.
    Gateway(IpAddr),
    /// Directly out of the nic with this index (SmartOS `"nics[N]"`): link-local.
    Nic(usize),
}

/// One static route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination, `10.1.0.0/16` or a host address.
    pub dst: String,
    /// Its next hop.
    pub via: RouteVia,
}

/// `sdc:nics` entry, field for field as SmartOS serves it.
#[derive(Serialize)]
struct NicJson<'a> {
    interface: &'a str,
    mac: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    netmask: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    ips: Vec<String>,
    gateways: Vec<String>,
    primary: bool,
    nic_tag: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
}

/// `sdc:routes` entry.
#[derive(Serialize)]
struct RouteJson<'a> {
    linklocal: bool,
    dst: &'a str,
    gateway: String,
}

/// The dotted IPv4 netmask of a prefix length.
fn netmask_v4(prefix: u8) -> String {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    std::net::Ipv4Addr::from(bits).to_string()
}

impl Nic {
    fn json(&self) -> NicJson<'_> {
        let ips = self
            .ips
            .iter()
            .map(|a| match a {
                NicAddress::Dhcp => "dhcp".to_string(),
                NicAddress::Static { addr, prefix } => format!("{addr}/{prefix}"),
            })
            .collect();
        // SmartOS's single-address fields describe the first IPv4 address (or "dhcp").
        let (ip, netmask) = match self.ips.iter().find(|a| {
            matches!(
                a,
                NicAddress::Dhcp
                    | NicAddress::Static {
                        addr: IpAddr::V4(_),
                        ..
                    }
            )
        }) {
            Some(NicAddress::Dhcp) => (Some("dhcp".to_string()), None),
            Some(NicAddress::Static { addr, prefix }) => {
                (Some(addr.to_string()), Some(netmask_v4(*prefix)))
            }
            None => (None, None),
        };
        let gateway = self
            .gateways
            .iter()
            .find(|g| g.is_ipv4())
            .map(|g| g.to_string());
        NicJson {
            interface: &self.interface,
            mac: &self.mac,
            ip,
            netmask,
            gateway,
            ips,
            gateways: self.gateways.iter().map(|g| g.to_string()).collect(),
            primary: self.primary,
            nic_tag: &self.nic_tag,
            mtu: self.mtu,
        }
    }
}

impl InstanceInfo {
    /// The value of `sdc:<name>` (`name` without the prefix), `None` when absent.
    pub fn get(&self, name: &str) -> Option<String> {
        let some = |v: &Option<String>| v.clone();
        match name {
            "uuid" if !self.uuid.is_empty() => Some(self.uuid.clone()),
            "alias" => some(&self.alias),
            "hostname" => some(&self.hostname),
            "dns_domain" => some(&self.dns_domain),
            "datacenter_name" => some(&self.datacenter_name),
            "server_uuid" => some(&self.server_uuid),
            "brand" => some(&self.brand),
            "image_uuid" => some(&self.image_uuid),
            "max_physical_memory" => self.max_physical_memory.map(|m| m.to_string()),
            "operator-script" => some(&self.operator_script),
            "vendor-data" => some(&self.vendor_data),
            "nics" => json(&self.nics.iter().map(Nic::json).collect::<Vec<_>>()),
            "resolvers" => json(&self.resolvers),
            "routes" => json(&self.routes_json()),
            _ => None,
        }
    }

    /// SmartOS's agent resolves `nics[N]` to that nic's address and drops the route
    /// when the nic has none (or uses DHCP).
    fn routes_json(&self) -> Vec<RouteJson<'_>> {
        self.routes
            .iter()
            .filter_map(|r| match &r.via {
                RouteVia::Gateway(gw) => Some(RouteJson {
                    linklocal: false,
                    dst: &r.dst,
                    gateway: gw.to_string(),
                }),
                RouteVia::Nic(i) => {
                    let addr = self.nics.get(*i)?.ips.iter().find_map(|a| match a {
                        NicAddress::Static { addr, .. } => Some(*addr),
                        NicAddress::Dhcp => None,
                    })?;
                    Some(RouteJson {
                        linklocal: true,
                        dst: &r.dst,
                        gateway: addr.to_string(),
                    })
                }
            })
            .collect()
    }
}

fn json<T: Serialize>(v: &T) -> Option<String> {
    serde_json::to_string(v).ok()
}

impl InstanceInfo {
    /// The facts of an instance declared by `spec`, known as `uuid`, whose nics without
    /// a pinned MAC got `macs[i]` (the monitor assigns those). The first nic with a
    /// gateway is primary (the first nic when none has one), as SmartOS marks the nic
    /// that carries the default route.
    pub fn from_spec(spec: &spec::InstanceSpec, uuid: &str, macs: &[String]) -> InstanceInfo {
        let primary = spec
            .nics
            .iter()
            .position(|n| n.gateway.is_some())
            .unwrap_or(0);
        let nics = spec
            .nics
            .iter()
            .enumerate()
            .map(|(i, n)| Nic {
                interface: n.name.clone(),
                mac: n
                    .mac
                    .map(|m| m.to_string())
                    .or_else(|| macs.get(i).cloned())
                    .unwrap_or_default(),
                ips: match &n.ip {
                    spec::model::IpConfig::None => Vec::new(),
                    spec::model::IpConfig::Dhcp => vec![NicAddress::Dhcp],
                    spec::model::IpConfig::Static { addr, prefix } => vec![NicAddress::Static {
                        addr: *addr,
                        prefix: *prefix,
                    }],
                },
                gateways: n.gateway.into_iter().collect(),
                primary: i == primary,
                nic_tag: n.tag.clone(),
                mtu: n.mtu,
            })
            .collect();
        let (hostname, brand) = match &spec.kind {
            spec::model::Kind::Zone(z) => (z.hostname.clone(), "lx"),
            spec::model::Kind::Hvm(_) => (spec.name.clone(), "kvm"),
        };
        InstanceInfo {
            uuid: uuid.to_string(),
            alias: Some(spec.name.clone()),
            hostname: Some(hostname),
            brand: Some(brand.to_string()),
            max_physical_memory: Some(spec.memory >> 20),
            nics,
            resolvers: spec.resolvers.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> InstanceInfo {
        InstanceInfo {
            uuid: "9e2f3c8a-0000-4000-8000-000000000001".into(),
            hostname: Some("web01".into()),
            nics: vec![Nic {
                interface: "net0".into(),
                mac: "02:08:20:aa:bb:cc".into(),
                ips: vec![NicAddress::Static {
                    addr: "10.88.0.10".parse().unwrap(),
                    prefix: 24,
                }],
                gateways: vec!["10.88.0.1".parse().unwrap()],
                primary: true,
                nic_tag: "admin".into(),
                mtu: Some(1500),
            }],
            resolvers: vec!["10.88.0.1".into()],
            routes: vec![
                Route {
                    dst: "10.1.0.0/16".into(),
                    via: RouteVia::Gateway("10.88.0.254".parse().unwrap()),
                },
                Route {
                    dst: "10.2.0.0/16".into(),
                    via: RouteVia::Nic(0),
                },
                Route {
                    dst: "10.3.0.0/16".into(),
                    via: RouteVia::Nic(7),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn serves_nics_in_smartos_shape() {
        let v: serde_json::Value = serde_json::from_str(&info().get("nics").unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{
                "interface": "net0", "mac": "02:08:20:aa:bb:cc", "ip": "10.88.0.10",
                "netmask": "255.255.255.0", "gateway": "10.88.0.1", "ips": ["10.88.0.10/24"],
                "gateways": ["10.88.0.1"], "primary": true, "nic_tag": "admin", "mtu": 1500
            }])
        );
    }

    #[test]
    fn resolves_link_local_routes_like_the_agent() {
        let v: serde_json::Value = serde_json::from_str(&info().get("routes").unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"linklocal": false, "dst": "10.1.0.0/16", "gateway": "10.88.0.254"},
                {"linklocal": true, "dst": "10.2.0.0/16", "gateway": "10.88.0.10"}
            ])
        );
    }

    #[test]
    fn absent_facts_are_absent_keys() {
        let i = info();
        assert_eq!(i.get("hostname").as_deref(), Some("web01"));
        assert_eq!(i.get("resolvers").as_deref(), Some("[\"10.88.0.1\"]"));
        assert_eq!(i.get("alias"), None);
        assert_eq!(i.get("no-such-key"), None);
        assert_eq!(netmask_v4(0), "0.0.0.0");
        assert_eq!(netmask_v4(32), "255.255.255.255");
    }

    #[test]
    fn facts_from_a_manifest() {
        let kdl = r#"
            zone web01 {
                image "busybox@1.36"
                memory "512M"
                hostname "www"
                nic net0 tag="admin" ip="10.88.0.10/24" gateway="10.88.0.1"
                nic net1 tag="storage" ip="dhcp" mac="02:00:00:00:00:99"
                resolver "10.88.0.1"
            }
        "#;
        let spec = spec::parse_str("web.kdl", kdl).unwrap().remove(0);
        let i =
            InstanceInfo::from_spec(&spec, "u-1", &["02:00:00:00:00:01".into(), "unused".into()]);
        assert_eq!(i.hostname.as_deref(), Some("www"));
        assert_eq!(i.alias.as_deref(), Some("web01"));
        assert_eq!(i.max_physical_memory, Some(512));
        assert_eq!(i.resolvers, vec!["10.88.0.1"]);
        assert_eq!(i.nics[0].mac, "02:00:00:00:00:01");
        assert!(i.nics[0].primary && !i.nics[1].primary);
        assert_eq!(i.nics[1].mac, "02:00:00:00:00:99");
        assert_eq!(i.nics[1].ips, vec![NicAddress::Dhcp]);
        assert_eq!(i.nics[1].nic_tag, "storage");
    }
}
