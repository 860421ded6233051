//! `vmadm events`: InstanceChanged signals as lines or JSON, until interrupted.

use super::{print, Result};
use crate::client::{ClientError, Node};
use futures_util::StreamExt;
use serde_json::json;
use std::time::SystemTime;

/// One InstanceChanged signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Instance name.
    pub name: String,
    /// Instance UUID.
    pub uuid: String,
    /// `zone` or `hvm`.
    pub kind: String,
    /// The new state.
    pub state: String,
    /// Why, possibly empty.
    pub reason: String,
}

/// Formats an event the way `-f` and `-j` ask.
pub fn format(event: &Event, at: SystemTime, full: bool, json: bool) -> String {
    if json {
        let value = json!({
            "type": "event",
            "date": humantime::format_rfc3339_millis(at).to_string(),
            "name": event.name,
            "uuid": event.uuid,
            "kind": event.kind,
            "state": event.state,
            "reason": event.reason,
        });
        return format!("{value}\n");
    }
    let reason = if event.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", event.reason)
    };
    if full {
        format!(
            "[{}] {} {} {}: {}{}\n",
            humantime::format_rfc3339_millis(at),
            event.uuid,
            event.name,
            event.kind,
            event.state,
            reason
        )
    } else {
        let short: String = event.uuid.chars().take(8).collect();
        format!(
            "[{}] {} ({}) {}: {}{}\n",
            humantime::format_rfc3339_seconds(at),
            event.name,
            short,
            event.kind,
            event.state,
            reason
        )
    }
}

/// The line printed once listening, with `-r`.
pub fn ready_line(at: SystemTime, json: bool) -> String {
    if json {
        let date = humantime::format_rfc3339_millis(at).to_string();
        format!("{}\n", json!({"type": "ready", "date": date}))
    } else {
        format!("[{}] ready\n", humantime::format_rfc3339_seconds(at))
    }
}

/// Streams until Ctrl-C / SIGTERM (exit 0) or until init leaves the bus (an error: the
/// stream would silently go quiet otherwise).
pub(super) async fn stream(
    node: &Node,
    full: bool,
    json: bool,
    ready: bool,
    only: Option<&str>,
) -> Result<()> {
    node.ensure_running().await?;
    let proxy = node.proxy();
    let mut changes = proxy
        .receive_instance_changed()
        .await
        .map_err(ClientError::bus)?;
    let mut owner = proxy
        .inner()
        .receive_owner_changed()
        .await
        .map_err(ClientError::bus)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(super::VmadmError::Output)?;
    if ready {
        print(&ready_line(SystemTime::now(), json))?;
    }
    loop {
        tokio::select! {
            signal = changes.next() => {
                let Some(signal) = signal else { return Err(ClientError::NoInit.into()) };
                let args = signal.args().map_err(ClientError::bus)?;
                let event = Event {
                    name: args.name.to_string(),
                    uuid: args.uuid.to_string(),
                    kind: args.kind.to_string(),
                    state: args.state.to_string(),
                    reason: args.reason.to_string(),
                };
                if only.is_none_or(|id| id == event.name || id == event.uuid) {
                    print(&format(&event, SystemTime::now(), full, json))?;
                }
            }
            change = owner.next() => {
                if matches!(change, None | Some(None)) {
                    return Err(ClientError::NoInit.into());
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn event(reason: &str) -> Event {
        Event {
            name: "web01".into(),
            uuid: "0123456789abcdef".into(),
            kind: "zone".into(),
            state: "running".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn formats() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(
            format(&event(""), at, false, false),
            "[2023-11-14T22:13:20Z] web01 (01234567) zone: running\n"
        );
        assert_eq!(
            format(&event("started"), at, true, false),
            "[2023-11-14T22:13:20.123Z] 0123456789abcdef web01 zone: running (started)\n"
        );
        let line = format(&event("x"), at, false, true);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["state"], "running");
        assert_eq!(v["date"], "2023-11-14T22:13:20.123Z");
        assert_eq!(ready_line(at, false), "[2023-11-14T22:13:20Z] ready\n");
    }
}
