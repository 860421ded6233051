//! Links, addresses and routes over rtnetlink, through one long-lived connection.
//!
//! # Threading
//!
//! A [`Netlink`] owns a netlink socket opened in one network namespace and the thread
//! that drives it: a current-thread tokio runtime named `netlink`, running nothing but
//! the connection and the jobs handed to it. So:
//!
//! - the `async` methods ([`Netlink::ensure_bridge`], [`Netlink::add_address`], ...)
//!   only exchange messages with that thread through channels: init awaits them on
//!   its own tokio runtime without ever blocking an executor thread;
//! - [`Netlink::blocking`] offers the same operations as plain functions for
//!   synchronous callers (the zone monitor, the vmm): the job runs on the netlink
//!   thread while the caller waits;
//! - dropping the last clone stops and joins the thread. A caller about to fork or to
//!   install a seccomp filter (the vmm) drops its `Netlink` first, so no stray thread
//!   outlives the work.
//!
//! The socket's namespace is fixed when it is opened ([`Netlink::in_netns`] opens it
//! from inside another namespace), so the caller's own namespace never changes.
//!
//! Every operation is idempotent where the kernel lets it be (an existing bridge,
//! address or route is fine, deleting a missing link is a no-op), because several
//! instances provision the same bridge concurrently and cleanup runs after crashes.

mod addr;
mod blocking;
mod link;

pub use addr::Route;
pub use blocking::Blocking;
pub use link::LinkSettings;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Why a netlink operation failed, naming the interface.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The kernel refused an operation on an interface.
    #[error("{iface}: {op}: {source}")]
    Kernel {
        /// The interface (or route) concerned.
        iface: String,
        /// What was being done (`creating bridge`, `plugging into bridge sk-admin`).
        op: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// The interface does not exist (in the connection's namespace).
    #[error("{iface}: no such interface")]
    NoSuchLink {
        /// The interface looked for.
        iface: String,
    },
    /// A route that cannot be expressed (mixed address families, prefix too long).
    #[error("route {route}: {reason}")]
    BadRoute {
        /// The route, `dest/prefix via gw dev iface`.
        route: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A bridge or link operation done through ioctls ([`crate::link`]).
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The netlink thread could not join the target network namespace.
    #[error("joining the network namespace for netlink: {0}")]
    Netns(#[source] nix::Error),
    /// The netlink thread could not be started or ended unexpectedly.
    #[error("the netlink thread {0}")]
    Thread(&'static str),
}

/// Is this netlink error the kernel answering `errno`?
pub(crate) fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// A netlink connection to one network namespace (see the module docs). Clones share
/// the connection.
#[derive(Clone)]
pub struct Netlink {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Netlink")
    }
}

struct Inner {
    handle: rtnetlink::Handle,
    runtime: tokio::runtime::Handle,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.stop.lock() {
            if let Some(tx) = stop.take() {
                let _ = tx.send(());
            }
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            // A job finishing on the netlink thread may drop the last clone: that
            // thread cannot join itself, and it ends right after anyway.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Netlink {
    /// A connection to the calling thread's network namespace.
    pub fn new() -> Result<Netlink, NetError> {
        Self::start(None)
    }

    /// A connection to the network namespace `netns` (an open `/proc/PID/ns/net` or
    /// `/run/netns/NAME`): the netlink thread joins it before opening its socket.
    pub fn in_netns(netns: OwnedFd) -> Result<Netlink, NetError> {
        Self::start(Some(netns))
    }

    fn start(netns: Option<OwnedFd>) -> Result<Netlink, NetError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("netlink".into())
            .spawn(move || {
                let started = (|| {
                    if let Some(ns) = &netns {
                        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(NetError::Netns)?;
                    }
                    tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .build()
                        .map_err(NetError::Socket)
                })();
                let rt = match started {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let (conn, handle, _) = match rtnetlink::new_connection() {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(NetError::Socket(e)));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok((handle, tokio::runtime::Handle::current())));
                    // Runs until the owner drops the last clone (or the socket dies).
                    futures_util::future::select(Box::pin(conn), stop_rx).await;
                });
            })
            .map_err(|_| NetError::Thread("could not be started"))?;
        let (handle, runtime) = ready_rx
            .recv()
            .map_err(|_| NetError::Thread("panicked while starting"))??;
        Ok(Netlink {
            inner: Arc::new(Inner {
                handle,
                runtime,
                stop: Mutex::new(Some(stop_tx)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The same operations as plain blocking functions, for synchronous callers. Do
    /// not call them from inside an async task: await the `async` methods there.
    pub fn blocking(&self) -> Blocking<'_> {
        Blocking::new(self)
    }

    fn handle(&self) -> &rtnetlink::Handle {
        &self.inner.handle
    }
}
