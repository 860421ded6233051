//! The lifecycle state of an instance, as init, its monitors and the API report it.
//!
//! One type end to end: init's pool record, a monitor's status, `List` rows and the
//! `InstanceChanged` signal all carry a [`State`]. It is a lowercase string only at the
//! edges: in JSON files and on D-Bus (signature `s`, behind the `dbus` feature). Why an
//! instance is in a state (a failure reason) travels beside it, never inside it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Unix time in whole seconds: the clock of a pool record's `created_at` and a
/// monitor status's `started_at` (0 if the system clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "dbus", derive(zvariant::Type))]
#[cfg_attr(feature = "dbus", zvariant(signature = "s"))]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Being created or (re)started: image import, rootfs/disk setup, boot.
    Provisioning,
    /// The monitor is up and the instance runs.
    Running,
    /// Asked to stop, waiting for it.
    Stopping,
    /// Not running; data kept.
    Stopped,
    /// Could not be created or started, or died; the reason says why.
    Failed,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 5] = [
        State::Provisioning,
        State::Running,
        State::Stopping,
        State::Stopped,
        State::Failed,
    ];

    /// The wire name: `provisioning`, `running`, `stopping`, `stopped`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Provisioning => "provisioning",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`State`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown instance state {0:?} (expected provisioning, running, stopping, stopped or failed)"
)]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<State, UnknownState> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_between_display_fromstr_and_json() {
        for st in State::ALL {
            assert_eq!(st.to_string().parse::<State>(), Ok(st));
            assert_eq!(
                serde_json::to_string(&st).unwrap(),
                format!("\"{}\"", st.as_str())
            );
            assert_eq!(
                serde_json::from_str::<State>(&format!("\"{st}\"")).unwrap(),
                st
            );
        }
        assert_eq!(State::Failed.to_string(), "failed");
        let e = "failing".parse::<State>().unwrap_err().to_string();
        assert!(e.contains("\"failing\"") && e.contains("stopped"), "{e}");
        assert!(serde_json::from_str::<State>("\"Running\"").is_err());
    }

    #[cfg(feature = "dbus")]
    #[test]
    fn on_dbus_a_state_is_its_name() {
        use zvariant::{serialized::Context, to_bytes, Type, LE};
        assert_eq!(State::SIGNATURE, "s");
        // List's rows keep the signature api.rs documents.
        assert_eq!(crate::api::InstanceSummary::SIGNATURE, "(ssssstbus)");
        let ctxt = Context::new_dbus(LE, 0);
        let encoded = to_bytes(ctxt, &State::Stopping).unwrap();
        let as_text: String = encoded.deserialize().unwrap().0;
        assert_eq!(as_text, "stopping");
        let encoded = to_bytes(ctxt, &"failed").unwrap();
        let back: State = encoded.deserialize().unwrap().0;
        assert_eq!(back, State::Failed);
    }
}
