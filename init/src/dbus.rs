//! `org.skerry.Node1` on the system bus (contract: `spec::api`).
//!
//! Mutating methods ask the bus daemon who the caller is (GetConnectionUnixUser on
//! the message's sender) and refuse anyone but uid 0: the bus vouches for the uid, a
//! message cannot lie about it.

use crate::node::{Node, NodeError};
use spec::api::{InstanceSummary, PlanStep, BUS_NAME, OBJECT_PATH};
use std::sync::Arc;
use tokio::sync::Notify;
use zbus::message::Header;
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

/// Errors on the bus, named as `spec::api::errors` says.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.skerry.Node1.Error")]
pub enum ApiError {
    /// A bus-level failure.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No instance by that name or UUID.
    NotFound(String),
    /// The caller is not uid 0.
    AccessDenied(String),
    /// The payload or request is invalid.
    Invalid(String),
    /// The operation failed.
    Failed(String),
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotFound(_) => ApiError::NotFound(e.to_string()),
            NodeError::Invalid(m) => ApiError::Invalid(m),
            NodeError::Failed(m) => ApiError::Failed(m),
        }
    }
}

/// The object served at `/org/skerry/Node1`.
pub struct NodeApi {
    node: Arc<Node>,
    shutdown: Arc<Notify>,
}

impl NodeApi {
    /// The API over `node`; `Shutdown` notifies `shutdown`.
    pub fn new(node: Arc<Node>, shutdown: Arc<Notify>) -> Self {
        NodeApi { node, shutdown }
    }
}

/// Runs a blocking node operation off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Failed(format!("internal error: {e}")))?
        .map_err(ApiError::from)
}

async fn require_root(hdr: &Header<'_>, conn: &Connection, what: &str) -> Result<(), ApiError> {
    let sender = hdr
        .sender()
        .ok_or_else(|| ApiError::AccessDenied("message has no sender".into()))?;
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let uid = dbus
        .get_connection_unix_user(BusName::Unique(sender.to_owned()))
        .await
        .map_err(|e| ApiError::AccessDenied(format!("cannot tell who {sender} is: {e}")))?;
    if uid != 0 {
        return Err(ApiError::AccessDenied(format!(
            "{what} needs root; the caller is uid {uid}"
        )));
    }
    Ok(())
}

#[zbus::interface(name = "org.skerry.Node1")]
impl NodeApi {
    /// Every instance.
    async fn list(&self) -> Vec<InstanceSummary> {
        self.node.list()
    }

    /// One instance as JSON (`InstanceDetail`).
    async fn get(&self, id: String) -> Result<String, ApiError> {
        let d = self.node.get(&id)?;
        serde_json::to_string(&d).map_err(|e| ApiError::Failed(e.to_string()))
    }

    /// Creates instances from a KDL manifest or SmartOS JSON payload.
    async fn create(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        payload: String,
        format: String,
    ) -> Result<Vec<String>, ApiError> {
        require_root(&hdr, conn, "Create").await?;
        let node = Arc::clone(&self.node);
        blocking(move || node.create(&payload, &format)).await
    }

    /// Changes properties; says whether a restart is needed.
    async fn update(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        id: String,
        payload: String,
    ) -> Result<(bool, String), ApiError> {
        require_root(&hdr, conn, "Update").await?;
        let node = Arc::clone(&self.node);
        blocking(move || node.update(&id, &payload)).await
    }

    /// Deletes an instance and its data.
    async fn delete(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        id: String,
    ) -> Result<(), ApiError> {
        require_root(&hdr, conn, "Delete").await?;
        let node = Arc::clone(&self.node);
        blocking(move || node.delete(&id)).await
    }

    /// Starts an instance.
    async fn start(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        id: String,
    ) -> Result<(), ApiError> {
        require_root(&hdr, conn, "Start").await?;
        let node = Arc::clone(&self.node);
        blocking(move || node.start(&id)).await
    }

    /// Stops an instance.
    async fn stop(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        id: String,
        force: bool,
        timeout_secs: u32,
    ) -> Result<(), ApiError> {
        require_root(&hdr, conn, "Stop").await?;
        let node = Arc::clone(&self.node);
        blocking(move || node.stop(&id, force, timeout_secs)).await
    }

    /// Reboots an instance.
    async fn reboot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        id: String,
        force: bool,
    ) -> Result<(), ApiError> {
        require_root(&hdr, conn, "Reboot").await?;
        let node = Arc::clone(&self.node);
        blocking(move || node.reboot(&id, force)).await
    }

    /// Checks a payload offline; returns its error lines. Parsing a caller's text
    /// runs on a blocking thread, never on one of the few async workers.
    async fn validate(&self, payload: String, format: String) -> Vec<String> {
        let node = Arc::clone(&self.node);
        tokio::task::spawn_blocking(move || node.validate(&payload, &format))
            .await
            .unwrap_or_else(|e| vec![format!("internal error: {e}")])
    }

    /// Reconciles now; returns the steps taken.
    async fn reconcile(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<PlanStep>, ApiError> {
        require_root(&hdr, conn, "Reconcile").await?;
        let node = Arc::clone(&self.node);
        blocking(move || {
            let out = node.reconcile();
            let mut steps = out.steps;
            steps.extend(out.problems.into_iter().map(|p| PlanStep {
                name: String::new(),
                action: spec::api::Action::Error,
                reason: p,
            }));
            Ok(steps)
        })
        .await
    }

    /// The instance console as a file descriptor.
    async fn console(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        id: String,
    ) -> Result<zvariant::OwnedFd, ApiError> {
        require_root(&hdr, conn, "Console").await?;
        let node = Arc::clone(&self.node);
        blocking(move || node.console(&id))
            .await
            .map(zvariant::OwnedFd::from)
    }

    /// Monitor details as JSON.
    async fn info(&self, id: String) -> Result<String, ApiError> {
        let node = Arc::clone(&self.node);
        blocking(move || node.info(&id)).await
    }

    /// What instance `id` (empty: every instance) uses now, as a JSON array.
    async fn usage(&self, id: String) -> Result<String, ApiError> {
        let node = Arc::clone(&self.node);
        let rows = blocking(move || node.usage(&id)).await?;
        serde_json::to_string(&rows).map_err(|e| ApiError::Failed(e.to_string()))
    }

    /// Boot phases and their durations in microseconds.
    async fn timeline(&self) -> Vec<(String, u64)> {
        self.node.timeline().phases()
    }

    /// Stops every instance and shuts the node down (host mode: init exits).
    async fn shutdown(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), ApiError> {
        require_root(&hdr, conn, "Shutdown").await?;
        self.shutdown.notify_one();
        Ok(())
    }

    /// Emitted on every state change.
    #[zbus(signal)]
    pub async fn instance_changed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        uuid: &str,
        kind: &str,
        state: &str,
        reason: &str,
    ) -> zbus::Result<()>;
}

/// Connects to the bus (`address`, or the system bus, which honours
/// `DBUS_SYSTEM_BUS_ADDRESS`), serves the API and owns [`BUS_NAME`]. Node events are
/// forwarded as `InstanceChanged` signals for as long as the connection lives.
pub async fn serve(
    node: Arc<Node>,
    shutdown: Arc<Notify>,
    address: Option<&str>,
) -> zbus::Result<Connection> {
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a)?,
        None => zbus::connection::Builder::system()?,
    };
    let mut events = node.subscribe();
    let conn = builder
        .serve_at(OBJECT_PATH, NodeApi::new(Arc::clone(&node), shutdown))?
        .name(BUS_NAME)?
        .build()
        .await?;
    let c = conn.clone();
    tokio::spawn(async move {
        let Ok(emitter) = SignalEmitter::new(&c, OBJECT_PATH) else {
            return;
        };
        loop {
            match events.recv().await {
                Ok(ch) => {
                    let r = NodeApi::instance_changed(
                        &emitter,
                        &ch.name,
                        &ch.uuid,
                        &ch.kind,
                        ch.state_name(),
                        &ch.reason,
                    )
                    .await;
                    if let Err(e) = r {
                        log::warn!("InstanceChanged: {e}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    log::warn!("InstanceChanged: {n} changes dropped (slow bus)");
                }
                Err(_) => break,
            }
        }
    });
    Ok(conn)
}
