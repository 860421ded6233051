//! The D-Bus client of init's `org.skerry.Node1` API (see `spec::api`).
//!
//! [`Node`] wraps the generated proxy and turns bus errors into [`ClientError`]s that
//! tell the operator what to do: init not running, not root, no such instance (with the
//! closest name), or the server's own message.

use crate::suggest;
use spec::api::{self, InstanceSummary, PlanStep};
use std::os::fd::OwnedFd;
use zbus::Connection;

/// The `org.skerry.Node1` interface, as `spec::api` documents it.
#[zbus::proxy(
    interface = "org.skerry.Node1",
    default_service = "org.skerry.Node1",
    default_path = "/org/skerry/Node1"
)]
pub trait Node1 {
    /// Every instance.
    fn list(&self) -> zbus::Result<Vec<InstanceSummary>>;
    /// JSON [`spec::api::InstanceDetail`] of one instance.
    fn get(&self, id: &str) -> zbus::Result<String>;
    /// Creates instances from a KDL manifest or a SmartOS payload; returns their names.
    fn create(&self, payload: &str, format: &str) -> zbus::Result<Vec<String>>;
    /// Updates properties; returns (restart needed, message).
    fn update(&self, id: &str, payload: &str) -> zbus::Result<(bool, String)>;
    /// Deletes an instance and its data.
    fn delete(&self, id: &str) -> zbus::Result<()>;
    /// Starts an instance.
    fn start(&self, id: &str) -> zbus::Result<()>;
    /// Stops an instance.
    fn stop(&self, id: &str, force: bool, timeout_secs: u32) -> zbus::Result<()>;
    /// Reboots an instance.
    fn reboot(&self, id: &str, force: bool) -> zbus::Result<()>;
    /// Validates a payload; returns the problems, empty when valid.
    fn validate(&self, payload: &str, format: &str) -> zbus::Result<Vec<String>>;
    /// Reconciles now; returns the plan that was applied.
    fn reconcile(&self) -> zbus::Result<Vec<PlanStep>>;
    /// The instance console (pty master or serial) as a file descriptor.
    fn console(&self, id: &str) -> zbus::Result<zbus::zvariant::OwnedFd>;
    /// JSON of monitor/VMM details.
    fn info(&self, id: &str) -> zbus::Result<String>;
    /// Boot phases and their duration in microseconds.
    fn timeline(&self) -> zbus::Result<Vec<(String, u64)>>;
    /// JSON array of [`spec::api::InstanceUsage`]; `id` empty = every instance.
    fn usage(&self, id: &str) -> zbus::Result<String>;
    /// Emitted on every instance state change.
    #[zbus(signal)]
    fn instance_changed(
        &self,
        name: &str,
        uuid: &str,
        kind: &str,
        state: &str,
        reason: &str,
    ) -> zbus::Result<()>;
}

/// Why a request to init failed, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The system bus itself cannot be reached.
    /// (On a node init starts the bus, so no bus means no init either.)
    #[error(
        "init is not running: cannot connect to the system bus: {0} \
         (DBUS_SYSTEM_BUS_ADDRESS selects another bus)"
    )]
    NoBus(#[source] Box<zbus::Error>),
    /// Nobody owns `org.skerry.Node1`.
    #[error("init is not running: no {} on the system bus", api::BUS_NAME)]
    NoInit,
    /// No instance by that name or UUID.
    #[error("no instance '{id}'{}", hint(.suggestion))]
    NotFound {
        /// The name or UUID asked for.
        id: String,
        /// The closest existing name.
        suggestion: Option<String>,
    },
    /// Refused: the caller is not root.
    #[error("permission denied: {0} (run vmadm as root)")]
    AccessDenied(String),
    /// The payload or request is invalid; the message lists every problem.
    #[error("{0}")]
    Invalid(String),
    /// init tried and failed; its message says why.
    #[error("{0}")]
    Failed(String),
    /// init answered something this vmadm cannot read (version skew).
    #[error("unexpected answer from init: {0}")]
    Protocol(String),
    /// Any other bus error.
    #[error("D-Bus: {0}")]
    Bus(Box<zbus::Error>),
}

impl ClientError {
    /// Wraps any other bus error.
    pub fn bus(err: zbus::Error) -> Self {
        ClientError::Bus(Box::new(err))
    }
}

fn hint(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean '{s}'?"))
        .unwrap_or_default()
}

/// Result of a request to init.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A connection to init's node object.
pub struct Node {
    proxy: Node1Proxy<'static>,
}

impl Node {
    /// Connects to the system bus (honouring `DBUS_SYSTEM_BUS_ADDRESS`).
    pub async fn connect() -> Result<Self> {
        let address = std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok();
        let conn = match plain_unix_path(address.as_deref()) {
            Some(path) => connect_unix(&path).await,
            None => Connection::system().await,
        }
        .map_err(|e| ClientError::NoBus(Box::new(e)))?;
        let proxy = Node1Proxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(ClientError::bus)?;
        Ok(Node { proxy })
    }

    /// The generated proxy, for signal streams.
    pub fn proxy(&self) -> &Node1Proxy<'static> {
        &self.proxy
    }

    /// Fails with [`ClientError::NoInit`] unless init owns its bus name.
    pub async fn ensure_running(&self) -> Result<()> {
        let dbus = zbus::fdo::DBusProxy::new(self.proxy.inner().connection())
            .await
            .map_err(ClientError::bus)?;
        let name = zbus::names::BusName::try_from(api::BUS_NAME)
            .map_err(|e| ClientError::bus(e.into()))?;
        match dbus.name_has_owner(name).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ClientError::NoInit),
            Err(e) => Err(ClientError::bus(e.into())),
        }
    }

    /// Every instance.
    pub async fn list(&self) -> Result<Vec<InstanceSummary>> {
        self.proxy.list().await.map_err(classify)
    }

    /// One instance's detail, as JSON.
    pub async fn get(&self, id: &str) -> Result<api::InstanceDetail> {
        let text = self.about(id, self.proxy.get(id).await)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(format!("Get: {e}")))
    }

    /// Creates instances; returns their names.
    pub async fn create(&self, payload: &str, format: &str) -> Result<Vec<String>> {
        self.proxy.create(payload, format).await.map_err(classify)
    }

    /// Updates an instance; returns (restart needed, message).
    pub async fn update(&self, id: &str, payload: &str) -> Result<(bool, String)> {
        let r = self.proxy.update(id, payload).await;
        self.about(id, r)
    }

    /// Deletes an instance and its data.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let r = self.proxy.delete(id).await;
        self.about(id, r)
    }

    /// Starts an instance.
    pub async fn start(&self, id: &str) -> Result<()> {
        let r = self.proxy.start(id).await;
        self.about(id, r)
    }

    /// Stops an instance (`force`: kill without waiting).
    pub async fn stop(&self, id: &str, force: bool, timeout_secs: u32) -> Result<()> {
        let r = self.proxy.stop(id, force, timeout_secs).await;
        self.about(id, r)
    }

    /// Reboots an instance.
    pub async fn reboot(&self, id: &str, force: bool) -> Result<()> {
        let r = self.proxy.reboot(id, force).await;
        self.about(id, r)
    }

    /// Reconciles now; returns the plan.
    pub async fn reconcile(&self) -> Result<Vec<PlanStep>> {
        self.proxy.reconcile().await.map_err(classify)
    }

    /// The instance console, as an owned descriptor.
    pub async fn console(&self, id: &str) -> Result<OwnedFd> {
        let r = self.proxy.console(id).await;
        self.about(id, r).map(OwnedFd::from)
    }

    /// Monitor/VMM details, as JSON.
    pub async fn info(&self, id: &str) -> Result<serde_json::Value> {
        let r = self.proxy.info(id).await;
        let text = self.about(id, r)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(format!("Info: {e}")))
    }

    /// What instance `id` (empty: every instance) uses now.
    pub async fn usage(&self, id: &str) -> Result<Vec<api::InstanceUsage>> {
        let r = self.proxy.usage(id).await;
        let text = if id.is_empty() {
            r.map_err(classify)?
        } else {
            self.about(id, r)?
        };
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(format!("Usage: {e}")))
    }

    /// The node's boot phases and their durations in microseconds.
    pub async fn timeline(&self) -> Result<Vec<(String, u64)>> {
        self.proxy.timeline().await.map_err(classify)
    }

    /// Maps the error of a call about instance `id`; a NotFound gets the closest name.
    fn about<T>(&self, id: &str, result: zbus::Result<T>) -> Result<T> {
        result.map_err(|e| match classify(e) {
            ClientError::NotFound { .. } => ClientError::NotFound {
                id: id.to_string(),
                suggestion: None,
            },
            other => other,
        })
    }

    /// Fills in the "did you mean" of a NotFound error by asking for the names.
    pub async fn with_suggestion(&self, err: ClientError) -> ClientError {
        match err {
            ClientError::NotFound {
                id,
                suggestion: None,
            } => {
                let list = self.list().await.unwrap_or_default();
                let suggestion = suggestion_for(&id, &list);
                ClientError::NotFound { id, suggestion }
            }
            other => other,
        }
    }
}

/// The closest thing to `id` among the instances: the instance whose UUID starts with
/// it (an abbreviated UUID), else a name a typo away.
pub fn suggestion_for(id: &str, instances: &[InstanceSummary]) -> Option<String> {
    const MIN_UUID_PREFIX: usize = 4;
    if id.len() >= MIN_UUID_PREFIX {
        let mut by_uuid = instances.iter().filter(|i| i.uuid.starts_with(id));
        if let (Some(only), None) = (by_uuid.next(), by_uuid.next()) {
            return Some(only.uuid.clone());
        }
    }
    suggest::closest(id, instances.iter().map(|i| i.name.as_str())).map(str::to_string)
}

/// Sorts a bus error into what it means for the operator.
pub fn classify(err: zbus::Error) -> ClientError {
    let (name, message) = match &err {
        zbus::Error::MethodError(name, detail, _) => (
            name.as_str().to_string(),
            detail.clone().unwrap_or_default(),
        ),
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                return ClientError::NoInit
            }
            zbus::fdo::Error::AccessDenied(m) => return ClientError::AccessDenied(m.clone()),
            _ => return ClientError::bus(err),
        },
        _ => return ClientError::bus(err),
    };
    match name.as_str() {
        api::errors::NOT_FOUND => ClientError::NotFound {
            id: message,
            suggestion: None,
        },
        api::errors::ACCESS_DENIED | "org.freedesktop.DBus.Error.AccessDenied" => {
            ClientError::AccessDenied(message)
        }
        api::errors::INVALID => ClientError::Invalid(message),
        api::errors::FAILED => ClientError::Failed(message),
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner" => ClientError::NoInit,
        _ => ClientError::bus(err),
    }
}

/// The socket path of a system bus address that is one plain `unix:path=` (a `guid=`
/// beside it is allowed), or zbus's default when none is set; `None` for anything
/// else (several addresses, escapes, abstract sockets, tcp), which zbus connects to.
fn plain_unix_path(address: Option<&str>) -> Option<std::path::PathBuf> {
    let Some(address) = address else {
        return Some("/var/run/dbus/system_bus_socket".into());
    };
    let keys = address.strip_prefix("unix:")?;
    if address.contains([';', '%']) {
        return None;
    }
    let mut path = None;
    for kv in keys.split(',') {
        match kv.split_once('=')? {
            ("path", p) if path.is_none() && !p.is_empty() => path = Some(p.into()),
            ("guid", _) => {}
            _ => return None,
        }
    }
    path
}

/// Connects to the bus socket at `path` on this thread. zbus would connect on a
/// blocking-pool thread it first starts: a thread and its context switches in every
/// vmadm run, which a loaded node makes `vmadm list` wait for (init/README.md).
async fn connect_unix(path: &std::path::Path) -> zbus::Result<Connection> {
    let failed = |e: std::io::Error| {
        let address = format!("unix:path={}", path.display());
        match address.parse() {
            Ok(a) => zbus::Error::Connection(std::sync::Arc::new(e), a),
            Err(_) => zbus::Error::InputOutput(std::sync::Arc::new(e)),
        }
    };
    // A unix stream connect does not block on a listening socket (the kernel queues
    // it), so nothing waits here that a thread would spare.
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(failed)?;
    stream.set_nonblocking(true).map_err(failed)?;
    let stream = tokio::net::UnixStream::from_std(stream).map_err(failed)?;
    zbus::connection::Builder::unix_stream(stream).build().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_unix_addresses_are_connected_here_the_rest_by_zbus() {
        let p = |a| plain_unix_path(a).map(|p| p.display().to_string());
        assert_eq!(p(None).as_deref(), Some("/var/run/dbus/system_bus_socket"));
        assert_eq!(p(Some("unix:path=/run/b")).as_deref(), Some("/run/b"));
        assert_eq!(
            p(Some("unix:path=/tmp/x/bus.sock,guid=0123abcd")).as_deref(),
            Some("/tmp/x/bus.sock")
        );
        for other in [
            "unix:abstract=/tmp/dbus-x",
            "unix:path=/a;unix:path=/b",
            "unix:path=/with%20space",
            "unix:path=",
            "unix:path=/a,path=/b",
            "unix:tmpdir=/tmp",
            "tcp:host=127.0.0.1,port=1",
            "",
        ] {
            assert_eq!(p(Some(other)), None, "{other}");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = ClientError::NotFound {
            id: "web1".into(),
            suggestion: Some("web01".into()),
        };
        assert_eq!(e.to_string(), "no instance 'web1'; did you mean 'web01'?");
        let row = |name: &str, uuid: &str| InstanceSummary {
            name: name.into(),
            uuid: uuid.into(),
            kind: "zone".into(),
            state: spec::State::Running,
            image: "busybox".into(),
            memory: 0,
            autoboot: true,
            pid: 0,
            reason: String::new(),
        };
        let rows = [row("web01", "5e3f0000-aaaa"), row("db01", "5e40ffff-bbbb")];
        assert_eq!(
            suggestion_for("5e3f", &rows).as_deref(),
            Some("5e3f0000-aaaa")
        );
        assert_eq!(suggestion_for("5e", &rows), None, "too short to be a UUID");
        assert_eq!(suggestion_for("web1", &rows).as_deref(), Some("web01"));
        assert_eq!(
            ClientError::NoInit.to_string(),
            "init is not running: no org.skerry.Node1 on the system bus"
        );
    }
}
