//! Addresses and routes.

use super::{is_errno, NetError, Netlink};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::RouteMessageBuilder;
use std::net::IpAddr;

/// A route through an interface: `destination/prefix [via gateway] dev iface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network (`0.0.0.0` with prefix 0 for the default route).
    pub destination: IpAddr,
    /// Destination prefix length.
    pub prefix: u8,
    /// Next hop; `None` for a directly connected network.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub iface: String,
}

impl Route {
    /// The default route of `gateway`'s family via `gateway` on `iface`.
    pub fn default_via(gateway: IpAddr, iface: &str) -> Route {
        let destination: IpAddr = if gateway.is_ipv4() {
            [0u8; 4].into()
        } else {
            [0u16; 8].into()
        };
        Route {
            destination,
            prefix: 0,
            gateway: Some(gateway),
            iface: iface.to_owned(),
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.destination, self.prefix)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.iface)
    }
}

impl Netlink {
    /// Adds `addr/prefix` to interface `iface` (already there is fine).
    pub async fn add_address(&self, iface: &str, addr: IpAddr, prefix: u8) -> Result<(), NetError> {
        let index = self.require(iface).await?;
        match self
            .handle()
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            Err(source) => Err(NetError::Kernel {
                iface: iface.to_owned(),
                op: format!("adding address {addr}/{prefix}"),
                source,
            }),
        }
    }

    /// Adds `route` (already there is fine).
    pub async fn add_route(&self, route: &Route) -> Result<(), NetError> {
        let index = self.require(&route.iface).await?;
        let bad = |reason: String| NetError::BadRoute {
            route: route.to_string(),
            reason,
        };
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.destination, route.prefix)
            .map_err(|e| bad(format!("{e:?}")))?;
        builder = match route.gateway {
            Some(gw) => builder.gateway(gw).map_err(|e| bad(format!("{e:?}")))?,
            // No next hop: the network is on the link itself, as `ip route` assumes.
            None => builder.scope(RouteScope::Link),
        };
        let msg = builder.output_interface(index).build();
        match self.handle().route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            Err(source) => Err(NetError::Kernel {
                iface: route.iface.clone(),
                op: format!("adding route {route}"),
                source,
            }),
        }
    }
}
