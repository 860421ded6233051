//! What crosses the boundary: init's config for a monitor, and the socket's requests
//! and answers.

use crate::State;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything a monitor needs to run one instance; written by init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceConfig {
    /// Instance UUID (directory name in the pool).
    pub uuid: String,
    /// The pool root (`/zones`).
    pub pool: PathBuf,
    /// Where sockets and pidfiles live ([`crate::DEFAULT_RUN_DIR`] on a node).
    pub run_dir: PathBuf,
    /// The spec, defaults applied.
    pub spec: spec::InstanceSpec,
    /// Zone: the image's unpacked rootfs (overlay lower). HVM: the image's raw disk file.
    pub image_path: PathBuf,
    /// Zone: first host uid/gid of the zone's 65536-id range (zone root maps here).
    pub id_range_start: u32,
    /// Node bridge for each nic tag used by this instance (tag -> bridge name).
    pub bridges: BTreeMap<String, String>,
    /// The image's defaults for a zone (an OCI image's command and environment), kept
    /// here so that init, rewriting this file for a live update, applies them again:
    /// `spec` already has them applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_defaults: Option<ZoneDefaults>,
}

/// What an OCI image's config says a zone runs when its manifest does not say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneDefaults {
    /// Entrypoint followed by Cmd.
    pub init: Vec<String>,
    /// `Env`, split at the first `=`.
    pub env: Vec<(String, String)>,
    /// `WorkingDir`, when it says one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `User`, when it says one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ZoneDefaults {
    /// Gives zone `spec` the image's command when its manifest has no `init`, with
    /// the image's working directory and user (they belong to that command: a
    /// manifest's `init` replaces all three, and runs as root in `/`), and the image's
    /// environment under the manifest's (a manifest's key wins).
    pub fn apply(&self, spec: &mut spec::InstanceSpec) {
        let spec::Kind::Zone(z) = &mut spec.kind else {
            return;
        };
        if z.init.is_empty() {
            z.init = self.init.clone();
            z.workdir = self.workdir.clone();
            z.user = self.user.clone();
        }
        let mut merged: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(k, _)| !z.env.iter().any(|(mk, _)| mk == k))
            .cloned()
            .collect();
        merged.append(&mut z.env);
        z.env = merged;
    }
}

/// A request on the monitor socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum MonitorRequest {
    /// Report [`MonitorStatus`].
    Status,
    /// Stop the instance: graceful (the zone init's power-off request: runlevel 0 on
    /// /run/initctl, SIGUSR2, SIGRTMIN+4 or SIGTERM; the HVM guest's ACPI power
    /// button), then forced after
    /// `timeout_secs`; `force` skips the graceful part. The monitor exits afterwards.
    Stop {
        /// Kill at once.
        force: bool,
        /// Grace period.
        timeout_secs: u32,
    },
    /// Stop then start again, in the same monitor.
    Reboot {
        /// Kill at once instead of a graceful stop.
        force: bool,
    },
    /// Hand over the console (pty master / serial) as an fd.
    Console,
    /// init rewrote `config.json` with an edited spec: reread it and apply what applies
    /// without a restart (the customer metadata the monitor's metadata server serves;
    /// a zone's cgroup limits, quota and nics; an HVM's VMM cpu-cap), or refuse with
    /// nothing changed. A monitor without `Instance::reload` refuses. Everything else
    /// waits for the next start, as init's plan says. The request
    /// carries nothing, so its line stays small whatever the metadata holds.
    Reload,
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, or a note.
    #[serde(default)]
    pub message: String,
    /// For `Status`.
    #[serde(default)]
    pub status: Option<MonitorStatus>,
}

impl MonitorResponse {
    /// The request was carried out; `message` says how.
    pub fn ok(message: impl Into<String>) -> MonitorResponse {
        MonitorResponse {
            ok: true,
            message: message.into(),
            status: None,
        }
    }

    /// The request was refused or failed; `message` says why.
    pub fn refused(message: impl Into<String>) -> MonitorResponse {
        MonitorResponse {
            ok: false,
            message: message.into(),
            status: None,
        }
    }
}

/// What a monitor reports about its instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStatus {
    /// Monitor pid.
    pub pid: u32,
    /// Where the instance is in its life.
    pub state: State,
    /// Pid of the zone's init / the VMM's guest process, when running.
    pub instance_pid: Option<u32>,
    /// Unix time (seconds) the instance last started.
    pub started_at: Option<u64>,
    /// Last exit or failure reason.
    #[serde(default)]
    pub reason: String,
    /// Free-form details for `vmadm info` (limits, devices, cgroup path, ...).
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

impl MonitorStatus {
    /// The status of monitor `pid` before its instance first boots.
    pub fn provisioning(pid: u32) -> MonitorStatus {
        MonitorStatus {
            pid,
            state: State::Provisioning,
            instance_pid: None,
            started_at: None,
            reason: String::new(),
            details: BTreeMap::new(),
        }
    }

    /// Moves to `state` for `reason`.
    pub fn set(&mut self, state: State, reason: impl Into<String>) {
        self.state = state;
        self.reason = reason.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_lowercase_json() {
        let req = MonitorRequest::Stop {
            force: true,
            timeout_secs: 5,
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"op":"stop","force":true,"timeout_secs":5}"#
        );
        assert_eq!(
            serde_json::to_string(&MonitorRequest::Reload).unwrap(),
            r#"{"op":"reload"}"#
        );
        let st: MonitorStatus =
            serde_json::from_str(r#"{"pid":7,"state":"running","instance_pid":8,"started_at":1}"#)
                .unwrap();
        assert_eq!((st.state, st.instance_pid), (State::Running, Some(8)));
        let mut st = MonitorStatus::provisioning(7);
        st.set(State::Failed, "zone init exited at once");
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["reason"], "zone init exited at once");
    }
}
