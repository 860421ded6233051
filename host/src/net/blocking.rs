//! [`Netlink`]'s operations as blocking functions, for synchronous callers.

use super::{LinkSettings, NetError, Netlink, Route};
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;

/// Blocking twins of [`Netlink`]'s async methods (same names, same meaning): each
/// runs on the netlink thread while the calling thread waits.
#[derive(Debug, Clone, Copy)]
pub struct Blocking<'a> {
    netlink: &'a Netlink,
}

impl<'a> Blocking<'a> {
    pub(super) fn new(netlink: &'a Netlink) -> Self {
        Blocking { netlink }
    }

    /// Runs `job` on the netlink thread and waits for its result.
    fn run<T, Fut>(&self, job: impl FnOnce(Netlink) -> Fut) -> Result<T, NetError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, NetError>> + Send + 'static,
    {
        let job = job(self.netlink.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.netlink.inner.runtime.spawn(async move {
            let _ = tx.send(job.await);
        });
        rx.recv()
            .map_err(|_| NetError::Thread("ended before answering"))?
    }

    /// See [`Netlink::index`].
    pub fn index(&self, name: &str) -> Result<Option<u32>, NetError> {
        let name = name.to_owned();
        self.run(|nl| async move { nl.index(&name).await })
    }

    /// See [`Netlink::exists`].
    pub fn exists(&self, name: &str) -> Result<bool, NetError> {
        let name = name.to_owned();
        self.run(|nl| async move { nl.exists(&name).await })
    }

    /// See [`Netlink::set_up`].
    pub fn set_up(&self, name: &str) -> Result<(), NetError> {
        let name = name.to_owned();
        self.run(|nl| async move { nl.set_up(&name).await })
    }

    /// See [`Netlink::set_down`].
    pub fn set_down(&self, name: &str) -> Result<(), NetError> {
        let name = name.to_owned();
        self.run(|nl| async move { nl.set_down(&name).await })
    }

    /// See [`Netlink::add_veth`].
    pub fn add_veth(&self, name: &str, peer: &str) -> Result<(), NetError> {
        let (name, peer) = (name.to_owned(), peer.to_owned());
        self.run(|nl| async move { nl.add_veth(&name, &peer).await })
    }

    /// See [`Netlink::move_to_netns`].
    pub fn move_to_netns(&self, name: &str, netns: BorrowedFd<'_>) -> Result<(), NetError> {
        let name = name.to_owned();
        let netns = netns
            .try_clone_to_owned()
            .map_err(|e| NetError::Netns(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
        self.run(|nl| async move {
            use std::os::fd::AsFd;
            nl.move_to_netns(&name, netns.as_fd()).await
        })
    }

    /// See [`Netlink::configure_link`].
    pub fn configure_link(&self, name: &str, settings: &LinkSettings) -> Result<(), NetError> {
        let (name, settings) = (name.to_owned(), settings.clone());
        self.run(|nl| async move { nl.configure_link(&name, &settings).await })
    }

    /// See [`Netlink::delete`].
    pub fn delete(&self, name: &str) -> Result<bool, NetError> {
        let name = name.to_owned();
        self.run(|nl| async move { nl.delete(&name).await })
    }

    /// See [`Netlink::add_address`].
    pub fn add_address(&self, iface: &str, addr: IpAddr, prefix: u8) -> Result<(), NetError> {
        let iface = iface.to_owned();
        self.run(|nl| async move { nl.add_address(&iface, addr, prefix).await })
    }

    /// See [`Netlink::add_route`].
    pub fn add_route(&self, route: &Route) -> Result<(), NetError> {
        let route = route.clone();
        self.run(|nl| async move { nl.add_route(&route).await })
    }
}
