//! Links: lookup, bridges, veth pairs, ports, up/down, rename/MTU/MAC, namespaces,
//! deletion.

use super::{is_errno, NetError, Netlink};
use futures_util::TryStreamExt;
use rtnetlink::{LinkUnspec, LinkVeth};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Attributes to change on a link in one message; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSettings {
    /// New interface name (at most 15 bytes).
    pub name: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Ethernet address.
    pub mac: Option<[u8; 6]>,
}

fn kernel(iface: &str, op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let iface = iface.to_owned();
    let op = op.into();
    move |source| NetError::Kernel { iface, op, source }
}

impl Netlink {
    /// The index of link `name`, `None` if there is no such link.
    pub async fn index(&self, name: &str) -> Result<Option<u32>, NetError> {
        let mut links = self
            .handle()
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(msg.header.index)),
            Ok(None) => Ok(None),
            // The kernel answers ENODEV for a name that does not exist.
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(kernel(name, "looking up")(e)),
        }
    }

    /// Whether link `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, NetError> {
        Ok(self.index(name).await?.is_some())
    }

    /// The index of link `name`, which must exist.
    pub async fn require(&self, name: &str) -> Result<u32, NetError> {
        self.index(name).await?.ok_or_else(|| NetError::NoSuchLink {
            iface: name.to_owned(),
        })
    }

    /// Sets link `name` up.
    pub async fn set_up(&self, name: &str) -> Result<(), NetError> {
        let index = self.require(name).await?;
        self.set_index_up(index, name).await
    }

    async fn set_index_up(&self, index: u32, name: &str) -> Result<(), NetError> {
        self.handle()
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(kernel(name, "setting up"))
    }

    /// Sets link `name` down.
    pub async fn set_down(&self, name: &str) -> Result<(), NetError> {
        let index = self.require(name).await?;
        self.handle()
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
            .map_err(kernel(name, "setting down"))
    }

    /// Creates the veth pair `name` <-> `peer`.
    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<(), NetError> {
        self.handle()
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(kernel(name, format!("creating veth pair with {peer}")))
    }

    /// Moves link `name` into the network namespace `netns`.
    pub async fn move_to_netns(&self, name: &str, netns: BorrowedFd<'_>) -> Result<(), NetError> {
        let index = self.require(name).await?;
        self.handle()
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(netns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(kernel(name, "moving into another network namespace"))
    }

    /// Renames link `name` and/or sets its MTU and MAC, in one message (the link
    /// should be down for a rename).
    pub async fn configure_link(
        &self,
        name: &str,
        settings: &LinkSettings,
    ) -> Result<(), NetError> {
        let index = self.require(name).await?;
        let mut msg = LinkUnspec::new_with_index(index);
        if let Some(new) = &settings.name {
            msg = msg.name(new.clone());
        }
        if let Some(mtu) = settings.mtu {
            msg = msg.mtu(mtu);
        }
        if let Some(mac) = settings.mac {
            msg = msg.address(mac.to_vec());
        }
        self.handle()
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(kernel(name, format!("configuring as {settings:?}")))
    }

    /// Deletes link `name`; returns whether it existed (a veth's peer goes with it,
    /// so it may already be gone).
    pub async fn delete(&self, name: &str) -> Result<bool, NetError> {
        let Some(index) = self.index(name).await? else {
            return Ok(false);
        };
        match self.handle().link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(kernel(name, "deleting")(e)),
        }
    }
}
