//! Node networking over rtnetlink: nic-tag bridges, and the node's own interface
//! configuration at boot (static from `ip=`, or a lease udhcpc obtained).

use futures_util::stream::TryStreamExt;
use rtnetlink::{new_connection, Handle, LinkBridge, LinkUnspec, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};

/// Errors from netlink, with the interface they concern.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct NetError {
    /// The interface or object.
    pub what: String,
    /// What went wrong.
    pub message: String,
}

fn err(what: &str, e: impl std::fmt::Display) -> NetError {
    NetError {
        what: what.to_string(),
        message: e.to_string(),
    }
}

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

/// Runs an async netlink job on a private single-thread runtime in its own thread, so
/// it works from blocking code whether or not a tokio runtime is around.
fn run<T: Send + 'static>(
    job: impl FnOnce(Handle) -> futures_util::future::BoxFuture<'static, Result<T, NetError>>
        + Send
        + 'static,
) -> Result<T, NetError> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err("netlink", e))?;
        rt.block_on(async move {
            let (conn, handle, _) = new_connection().map_err(|e| err("netlink", e))?;
            tokio::spawn(conn);
            job(handle).await
        })
    })
    .join()
    .map_err(|_| err("netlink", "worker thread panicked"))?
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        // The kernel answers ENODEV for a name that does not exist.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(err(name, e)),
    }
}

async fn set_up(handle: &Handle, index: u32, what: &str) -> Result<(), NetError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| err(what, e))
}

/// Makes bridge `name` exist and be up; enslaves `link` (the uplink) when given.
/// Idempotent.
pub fn ensure_bridge(name: &str, link: Option<&str>) -> Result<(), NetError> {
    let name = name.to_string();
    let link = link.map(str::to_string);
    run(move |h| {
        Box::pin(async move {
            let idx = match index_of(&h, &name).await? {
                Some(i) => i,
                None => {
                    match h.link().add(LinkBridge::new(&name).build()).execute().await {
                        Ok(()) => {}
                        // Another instance's provisioning may have just created it.
                        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {
                        }
                        Err(e) => return Err(err(&name, e)),
                    }
                    index_of(&h, &name)
                        .await?
                        .ok_or_else(|| err(&name, "bridge vanished right after creation"))?
                }
            };
            set_up(&h, idx, &name).await?;
            if let Some(link) = link {
                let li = index_of(&h, &link)
                    .await?
                    .ok_or_else(|| err(&link, "no such host link to enslave"))?;
                h.link()
                    .set(LinkUnspec::new_with_index(li).controller(idx).build())
                    .execute()
                    .await
                    .map_err(|e| err(&link, e))?;
                set_up(&h, li, &link).await?;
            }
            Ok(())
        })
    })
}

/// Deletes link `name` if it exists (tests and cleanup).
pub fn delete_link(name: &str) -> Result<(), NetError> {
    let name = name.to_string();
    run(move |h| {
        Box::pin(async move {
            if let Some(idx) = index_of(&h, &name).await? {
                h.link()
                    .del(idx)
                    .execute()
                    .await
                    .map_err(|e| err(&name, e))?;
            }
            Ok(())
        })
    })
}

/// Whether link `name` exists.
pub fn link_exists(name: &str) -> Result<bool, NetError> {
    let name = name.to_string();
    run(move |h| Box::pin(async move { Ok(index_of(&h, &name).await?.is_some()) }))
}

/// Brings `lo` up.
pub fn loopback_up() -> Result<(), NetError> {
    run(|h| {
        Box::pin(async move {
            let idx = index_of(&h, "lo")
                .await?
                .ok_or_else(|| err("lo", "no loopback interface"))?;
            set_up(&h, idx, "lo").await
        })
    })
}

/// Brings an interface up (needed before DHCP can run on it).
pub fn link_up(iface: &str) -> Result<(), NetError> {
    let iface = iface.to_string();
    run(move |h| {
        Box::pin(async move {
            let idx = index_of(&h, &iface)
                .await?
                .ok_or_else(|| err(&iface, "no such interface"))?;
            set_up(&h, idx, &iface).await
        })
    })
}

/// Configures an address (and default route) on an interface and brings it up.
pub fn configure(a: &IfaceAddr) -> Result<(), NetError> {
    let a = a.clone();
    run(move |h| {
        Box::pin(async move {
            let idx = index_of(&h, &a.iface)
                .await?
                .ok_or_else(|| err(&a.iface, "no such interface"))?;
            set_up(&h, idx, &a.iface).await?;
            match h
                .address()
                .add(idx, IpAddr::V4(a.addr), a.prefix)
                .execute()
                .await
            {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(err(&a.iface, e)),
            }
            if let Some(gw) = a.gateway {
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gw)
                    .output_interface(idx)
                    .build();
                match h.route().add(route).execute().await {
                    Ok(()) => {}
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                    Err(e) => return Err(err(&format!("default route via {gw}"), e)),
                }
            }
            Ok(())
        })
    })
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
        run({
            let uplink = uplink.clone();
            move |h| {
                Box::pin(async move {
                    h.link()
                        .add(rtnetlink::LinkVeth::new(&uplink, &format!("{uplink}p")).build())
                        .execute()
                        .await
                        .map_err(|e| err(&uplink, e))
                })
            }
        })
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
