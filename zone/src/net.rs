//! Zone networking over rtnetlink: per nic, a veth pair whose host end is plugged into
//! the bridge of the nic's tag (created if missing) and whose zone end is moved into
//! the zone's network namespace, renamed to the nic name and given its address and
//! gateway route.

use crate::error::{Result, ZoneError};
use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use spec::{IpConfig, Nic};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// A nic with its host-side names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlan {
    /// The nic as the spec declares it.
    pub nic: Nic,
    /// The bridge its tag maps to.
    pub bridge: String,
    /// Host end of the veth pair (see `monitor::host_ifname`).
    pub host_if: String,
}

impl NicPlan {
    /// Name of the zone end while it still lives on the host (max 15 bytes).
    fn temp_peer(&self) -> String {
        let mut n = format!("{}z", self.host_if);
        n.truncate(15);
        n
    }
}

fn net_err(what: impl Into<String>, e: impl std::fmt::Display) -> ZoneError {
    ZoneError::Net {
        what: what.into(),
        reason: e.to_string(),
    }
}

/// Runs `f` on a fresh single-threaded tokio runtime with its own rtnetlink socket, in
/// a dedicated thread that first joins the network namespace `netns` (if any), so the
/// calling thread's namespace never changes.
fn with_netlink<T: Send + 'static>(
    netns: Option<OwnedFd>,
    f: impl FnOnce(Handle) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>>>>
        + Send
        + 'static,
) -> Result<T> {
    std::thread::spawn(move || -> Result<T> {
        if let Some(ns) = netns {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| net_err("joining the zone's network namespace", e))?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| net_err("tokio runtime", e))?;
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| net_err("netlink socket", e))?;
            let task = tokio::spawn(conn);
            let out = f(handle).await;
            task.abort();
            out
        })
    })
    .join()
    .map_err(|_| net_err("netlink thread", "panicked"))?
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(net_err(format!("looking up {name}"), e)),
    }
}

/// Creates the bridge `name` if missing and sets it up; returns its index.
async fn ensure_bridge(handle: &Handle, name: &str) -> Result<u32> {
    if link_index(handle, name).await?.is_none() {
        match handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
        {
            Ok(()) => {}
            // Another zone created it at the same moment.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
            Err(e) => return Err(net_err(format!("creating bridge {name}"), e)),
        }
    }
    let index = link_index(handle, name)
        .await?
        .ok_or_else(|| net_err(format!("bridge {name}"), "vanished after creation"))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| net_err(format!("setting bridge {name} up"), e))?;
    Ok(index)
}

/// Plugs every nic of a zone whose init is `zone_pid`: host side first, then the zone
/// side inside its network namespace. On error, what was created is removed.
pub fn setup(zone_pid: i32, plans: &[NicPlan]) -> Result<()> {
    if plans.is_empty() {
        return Ok(());
    }
    let ns_path = format!("/proc/{zone_pid}/ns/net");
    let open_ns = || {
        std::fs::File::open(&ns_path)
            .map(OwnedFd::from)
            .map_err(|e| net_err(ns_path.clone(), e))
    };
    let host_ns = open_ns()?;
    let host_plans = plans.to_vec();
    let result = with_netlink(None, move |handle| {
        Box::pin(async move {
            for p in &host_plans {
                let bridge = ensure_bridge(&handle, &p.bridge).await?;
                let peer = p.temp_peer();
                handle
                    .link()
                    .add(LinkVeth::new(&p.host_if, &peer).build())
                    .execute()
                    .await
                    .map_err(|e| {
                        net_err(
                            format!("creating veth {} for nic {}", p.host_if, p.nic.name),
                            e,
                        )
                    })?;
                let peer_idx = link_index(&handle, &peer)
                    .await?
                    .ok_or_else(|| net_err(&peer, "veth peer missing"))?;
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(peer_idx)
                            .setns_by_fd(host_ns.as_raw_fd())
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| net_err(format!("moving {peer} into the zone"), e))?;
                let host_idx = link_index(&handle, &p.host_if)
                    .await?
                    .ok_or_else(|| net_err(&p.host_if, "veth missing"))?;
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(host_idx)
                            .controller(bridge)
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| {
                        net_err(
                            format!("plugging {} into bridge {}", p.host_if, p.bridge),
                            e,
                        )
                    })?;
            }
            Ok(())
        })
    })
    .and_then(|()| {
        let zone_plans = plans.to_vec();
        with_netlink(Some(open_ns()?), move |handle| {
            Box::pin(configure_inside(handle, zone_plans))
        })
    });
    if result.is_err() {
        teardown(plans);
    }
    result
}

/// Inside the zone's netns: lo up, each nic renamed, addressed, up, gateway route.
async fn configure_inside(handle: Handle, plans: Vec<NicPlan>) -> Result<()> {
    if let Some(lo) = link_index(&handle, "lo").await? {
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(|e| net_err("lo", e))?;
    }
    for p in &plans {
        let name = &p.nic.name;
        let idx = link_index(&handle, &p.temp_peer())
            .await?
            .ok_or_else(|| net_err(name, "zone end of the veth missing"))?;
        let mut msg = LinkUnspec::new_with_index(idx).name(name.clone());
        if let Some(mtu) = p.nic.mtu {
            msg = msg.mtu(mtu);
        }
        if let Some(mac) = &p.nic.mac {
            msg = msg.address(parse_mac(mac)?);
        }
        handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(|e| net_err(format!("naming nic {name}"), e))?;
        if let IpConfig::Static { addr, prefix } = p.nic.ip {
            handle
                .address()
                .add(idx, addr, prefix)
                .execute()
                .await
                .map_err(|e| net_err(format!("address {addr}/{prefix} on {name}"), e))?;
        }
        handle
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| net_err(format!("setting {name} up"), e))?;
        if let Some(gw) = p.nic.gateway {
            let any: IpAddr = if gw.is_ipv4() {
                [0u8; 4].into()
            } else {
                [0u16; 8].into()
            };
            let route = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(any, 0)
                .and_then(|r| r.gateway(gw))
                .map_err(|e| net_err(format!("gateway {gw} on {name}"), e))?
                .output_interface(idx)
                .build();
            handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(|e| net_err(format!("default route via {gw} on {name}"), e))?;
        }
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff` -> bytes.
pub fn parse_mac(mac: &str) -> Result<Vec<u8>> {
    let bytes: Option<Vec<u8>> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    match bytes {
        Some(b) if b.len() == 6 => Ok(b),
        _ => Err(ZoneError::Invalid(format!(
            "bad MAC address {mac:?}: expected aa:bb:cc:dd:ee:ff"
        ))),
    }
}

/// Removes the host ends of a zone's veths (the kernel drops the pair with its netns,
/// but asynchronously: deleting them here means none is left when we return).
pub fn teardown(plans: &[NicPlan]) {
    if plans.is_empty() {
        return;
    }
    let _ = delete_links(plans.iter().map(|p| p.host_if.clone()).collect());
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
    with_netlink(None, move |handle| {
        Box::pin(async move {
            let mut deleted = vec![];
            for name in names {
                if let Some(idx) = link_index(&handle, &name).await? {
                    match handle.link().del(idx).execute().await {
                        Ok(()) => deleted.push(name),
                        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                        }
                        Err(e) => return Err(net_err(format!("deleting {name}"), e)),
                    }
                }
            }
            Ok(deleted)
        })
    })
}

/// Whether a host interface exists (for tests and status).
pub fn link_exists(name: &str) -> Result<bool> {
    let name = name.to_string();
    with_netlink(None, move |handle| {
        Box::pin(async move { Ok(link_index(&handle, &name).await?.is_some()) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_or_name_the_bad_value() {
        assert_eq!(
            parse_mac("02:00:0a:58:00:0a").unwrap(),
            vec![2, 0, 10, 0x58, 0, 10]
        );
        let err = parse_mac("02:00").unwrap_err().to_string();
        assert!(err.contains("02:00"), "{err}");
    }

    #[test]
    fn temp_peer_fits_ifnamsiz() {
        let p = NicPlan {
            nic: Nic {
                name: "net0".into(),
                tag: "admin".into(),
                ip: IpConfig::None,
                gateway: None,
                mtu: None,
                mac: None,
            },
            bridge: "sk-admin".into(),
            host_if: monitor::host_ifname("0123abcd-0000-0000-0000-000000000000", 3),
        };
        assert!(p.temp_peer().len() <= 15);
        assert_ne!(p.temp_peer(), p.host_if);
    }
}
