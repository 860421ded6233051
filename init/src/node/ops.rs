//! The operations the API offers, on top of the reconciler and supervisor.

use super::Node;
use crate::pool::InstanceRecord;
use crate::runtime::RuntimeError;
use crate::update;
use spec::api::{InstanceDetail, InstanceSummary};
use spec::InstanceSpec;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why an operation was refused; maps onto `spec::api::errors`.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No such instance.
    #[error("no instance {0:?}")]
    NotFound(String),
    /// The request or payload is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The operation failed.
    #[error("{0}")]
    Failed(String),
}

impl From<RuntimeError> for NodeError {
    fn from(e: RuntimeError) -> Self {
        NodeError::Failed(e.to_string())
    }
}

impl Node {
    fn require(&self, id: &str) -> Result<String, NodeError> {
        self.find(id)
            .ok_or_else(|| NodeError::NotFound(id.to_string()))
    }

    /// Every instance, by name.
    pub fn list(&self) -> Vec<InstanceSummary> {
        let mut rows: Vec<InstanceSummary> = self.table().values().map(summary).collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }

    /// One instance with its applied spec.
    pub fn get(&self, id: &str) -> Result<InstanceDetail, NodeError> {
        let uuid = self.require(id)?;
        let e = self
            .entry(&uuid)
            .ok_or_else(|| NodeError::NotFound(id.into()))?;
        let spec = &e.rec.spec;
        let path = monitor::metadata_path(self.pool.root(), &uuid);
        let customer_metadata =
            match mdata::store::MetadataStore::peek_spec(&path, spec, Default::default()) {
                Ok(m) => m,
                Err(err) => {
                    // The guest's writes are unreadable (the monitor says so when it
                    // serves them); show what the operator asked for.
                    log::warn!("{}: {err}", e.rec.name);
                    spec.customer_metadata()
                }
            };
        Ok(InstanceDetail {
            summary: summary(&e),
            spec: Some(spec.clone()),
            customer_metadata,
        })
    }

    /// Monitor details for `vmadm info`, as JSON.
    pub fn info(&self, id: &str) -> Result<String, NodeError> {
        let uuid = self.require(id)?;
        let e = self
            .entry(&uuid)
            .ok_or_else(|| NodeError::NotFound(id.into()))?;
        let monitor = if e.pid != 0 {
            match self.runtime.status(&e.rec) {
                Ok(st) => serde_json::to_value(st).unwrap_or_default(),
                Err(err) => serde_json::json!({ "error": err.to_string() }),
            }
        } else {
            serde_json::Value::Null
        };
        let v = serde_json::json!({
            "name": e.rec.name,
            "uuid": e.rec.uuid,
            "type": e.rec.spec.kind.as_str(),
            "state": e.rec.state,
            "reason": e.rec.reason,
            "pid": e.pid,
            "uptime_secs": e.started.map(|s| s.elapsed().as_secs()),
            "want_running": e.rec.want_running,
            "needs_restart": e.rec.needs_restart,
            "restarts_in_a_row": e.failures,
            "id_range_start": e.rec.id_range_start,
            "image_uuid": e.rec.image_uuid,
            "created_at": e.rec.created_at,
            "pool_dir": self.pool.instance_dir(&uuid),
            "monitor": monitor,
        });
        Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
    }

    /// Checks a payload; returns its error lines (empty = valid).
    pub fn validate(&self, payload: &str, format: &str) -> Vec<String> {
        match self.manifests.parse(payload, format) {
            Ok(_) => Vec::new(),
            Err(errs) => errs,
        }
    }

    /// Creates instances from a payload: each is written to
    /// `<pool>/manifests/<name>.kdl` (the one source of truth), then reconciled.
    pub fn create(self: &Arc<Self>, payload: &str, format: &str) -> Result<Vec<String>, NodeError> {
        let specs = self
            .manifests
            .parse(payload, format)
            .map_err(|errs| NodeError::Invalid(errs.join("\n")))?;
        if specs.is_empty() {
            return Err(NodeError::Invalid(
                "the payload declares no instance".into(),
            ));
        }
        let declared = self.manifests.load_dir(&self.pool.manifests_dir()).specs;
        for s in &specs {
            if self.find(&s.name).is_some() || declared.iter().any(|d| d.name == s.name) {
                return Err(NodeError::Invalid(format!(
                    "an instance named {} already exists",
                    s.name
                )));
            }
            let path = self.manifest_path(&s.name);
            if path.exists() {
                return Err(NodeError::Invalid(format!(
                    "{} already exists; pick another name",
                    path.display()
                )));
            }
        }
        for s in &specs {
            self.write_manifest(&self.manifest_path(&s.name), s)?;
        }
        let out = self.reconcile();
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let failed: Vec<String> = out
            .steps
            .iter()
            .filter(|p| names.contains(&p.name) && p.reason.contains("FAILED"))
            .map(|p| format!("{} {}: {}", p.action, p.name, p.reason))
            .collect();
        if !failed.is_empty() {
            // One refused by admission (it would not fit in the pool) was not made:
            // its manifest goes too, so no later reconcile tries it again.
            for name in names.iter().filter(|n| self.find(n).is_none()) {
                let path = self.manifest_path(name);
                if let Err(e) = std::fs::remove_file(&path) {
                    log::error!("{}: {e}", path.display());
                }
            }
            return Err(NodeError::Failed(failed.join("\n")));
        }
        Ok(names)
    }

    fn manifest_path(&self, name: &str) -> PathBuf {
        self.pool.manifests_dir().join(format!("{name}.kdl"))
    }

    fn write_manifest(&self, path: &Path, s: &InstanceSpec) -> Result<(), NodeError> {
        let text = format!(
            "// Written by init for a request on its API; edit freely.\n{}",
            self.manifests.to_kdl(s)
        );
        spec::atomic::write_atomic(path, text.as_bytes())
            .map_err(|e| NodeError::Failed(format!("{}: {e}", path.display())))
    }

    /// The manifest file that declares `name` alone, for rewriting or removing it.
    fn own_manifest(&self, name: &str) -> Result<Option<(PathBuf, InstanceSpec)>, NodeError> {
        let loaded = self.manifests.load_dir(&self.pool.manifests_dir());
        let Some(spec) = loaded.specs.iter().find(|s| s.name == name) else {
            return Ok(None);
        };
        let file = spec.origin.file.clone();
        let siblings = loaded
            .specs
            .iter()
            .filter(|s| s.origin.file == file)
            .count();
        if siblings > 1 {
            return Err(NodeError::Invalid(format!(
                "{} is declared in {} beside other instances; edit that file instead",
                name,
                file.display()
            )));
        }
        Ok(Some((file, spec.clone())))
    }

    /// Changes properties (SmartOS `vmadm update` style JSON). What the running
    /// instance takes live is applied first; when it refuses (or the payload is bad)
    /// nothing changes: manifest, record and instance stay as they were. Then the
    /// manifest is rewritten and the record updated. Returns whether a restart is
    /// needed for the rest of the change, and a message saying what changed and how.
    pub fn update(self: &Arc<Self>, id: &str, payload: &str) -> Result<(bool, String), NodeError> {
        let _ops = self.lock_ops();
        let uuid = self.require(id)?;
        let e = self
            .entry(&uuid)
            .ok_or_else(|| NodeError::NotFound(id.into()))?;
        let (file, mut spec) = match self.own_manifest(&e.rec.name)? {
            Some((f, s)) => (f, s),
            None => (self.manifest_path(&e.rec.name), e.rec.spec.clone()),
        };
        let changed = update::apply(&mut spec, payload)
            .map_err(|errs| NodeError::Invalid(errs.join("\n")))?;
        if changed.is_empty() {
            return Ok((false, "nothing changed".into()));
        }
        let waiting: Vec<&str> = changed
            .iter()
            .copied()
            .filter(|p| e.pid != 0 && crate::plan::needs_restart(&spec.kind, p))
            .collect();
        let updated = InstanceRecord {
            spec: spec.clone(),
            ..e.rec.clone()
        };
        let live = self.apply_live(&updated, &changed).map_err(|err| {
            NodeError::Invalid(format!(
                "cannot apply the change live: {err}; nothing changed"
            ))
        })?;
        if let Err(err) = self.write_manifest(&file, &spec) {
            // Put the running instance back as the unchanged manifest has it.
            if live.is_some() {
                let _ = self.apply_live(&e.rec, &changed);
            }
            return Err(err);
        }
        self.update_record(&uuid, |en| {
            en.rec.spec = spec;
            en.rec.needs_restart |= !waiting.is_empty();
        });
        let mut msg = format!("updated {}", changed.join(", "));
        if live.is_some() {
            msg.push_str("; applied live");
        }
        if !waiting.is_empty() {
            msg.push_str(&format!(
                "; needs a restart to apply: {}",
                waiting.join(", ")
            ));
        }
        log::info!("{}: {msg}", e.rec.name);
        Ok((!waiting.is_empty(), msg))
    }

    /// Deletes an instance, its data and its manifest.
    pub fn delete(self: &Arc<Self>, id: &str) -> Result<(), NodeError> {
        let _ops = self.lock_ops();
        let uuid = self.require(id)?;
        let name = self.entry(&uuid).map(|e| e.rec.name).unwrap_or_default();
        let own = self.own_manifest(&name)?;
        self.delete_instance(&uuid)?;
        if let Some((file, _)) = own {
            std::fs::remove_file(&file)
                .map_err(|e| NodeError::Failed(format!("{}: {e}", file.display())))?;
        }
        Ok(())
    }

    /// Starts an instance.
    pub fn start(self: &Arc<Self>, id: &str) -> Result<(), NodeError> {
        let _ops = self.lock_ops();
        let uuid = self.require(id)?;
        self.update_record(&uuid, |e| e.failures = 0);
        Ok(self.start_instance(&uuid)?)
    }

    /// Stops an instance (data kept).
    pub fn stop(
        self: &Arc<Self>,
        id: &str,
        force: bool,
        timeout_secs: u32,
    ) -> Result<(), NodeError> {
        let _ops = self.lock_ops();
        let uuid = self.require(id)?;
        let timeout = if timeout_secs == 0 {
            self.opts.stop_timeout
        } else {
            Duration::from_secs(timeout_secs.into())
        };
        Ok(self.stop_instance(&uuid, force, timeout)?)
    }

    /// Reboots a running instance in its monitor; starts a stopped one.
    pub fn reboot(self: &Arc<Self>, id: &str, force: bool) -> Result<(), NodeError> {
        let _ops = self.lock_ops();
        let uuid = self.require(id)?;
        let e = self
            .entry(&uuid)
            .ok_or_else(|| NodeError::NotFound(id.into()))?;
        if e.pid == 0 {
            return Ok(self.start_instance(&uuid)?);
        }
        if e.rec.needs_restart {
            // A pending config change only takes effect with a fresh monitor.
            self.stop_instance(&uuid, force, self.opts.stop_timeout)?;
            return Ok(self.start_instance(&uuid)?);
        }
        self.runtime.reboot(&e.rec, force)?;
        log::info!("{}: rebooted", e.rec.name);
        Ok(())
    }

    /// The instance console fd.
    pub fn console(&self, id: &str) -> Result<OwnedFd, NodeError> {
        let uuid = self.require(id)?;
        let e = self
            .entry(&uuid)
            .ok_or_else(|| NodeError::NotFound(id.into()))?;
        if e.pid == 0 {
            return Err(NodeError::Failed(format!(
                "{} is {}; start it to reach its console",
                e.rec.name, e.rec.state
            )));
        }
        Ok(self.runtime.console(&e.rec)?)
    }

    /// Stops every running instance (shutdown). Their wish to run is kept so a reboot
    /// brings back what ran (autoboot decides at boot anyway). Returns the names of
    /// those whose monitor is still alive afterwards (none, when all went well).
    pub fn stop_all(self: &Arc<Self>, timeout: Duration) -> Vec<String> {
        let _ops = self.lock_ops();
        let running: Vec<(String, bool)> = self
            .table()
            .values()
            .filter(|e| e.pid != 0)
            .map(|e| (e.rec.uuid.clone(), e.rec.want_running))
            .collect();
        let monitors: Vec<(String, u32)> = self
            .table()
            .values()
            .filter(|e| e.pid != 0)
            .map(|e| (e.rec.name.clone(), e.pid))
            .collect();
        // Stop them in parallel: a node with many instances must not take N grace
        // periods to shut down.
        std::thread::scope(|s| {
            for (uuid, _) in &running {
                let node = Arc::clone(self);
                s.spawn(move || {
                    if let Err(e) = node.stop_instance(uuid, false, timeout) {
                        log::error!("shutdown: {e}");
                    }
                });
            }
        });
        for (uuid, want) in running {
            self.update_record(&uuid, |e| e.rec.want_running = want);
        }
        monitors
            .into_iter()
            .filter(|(_, pid)| crate::monitor::watch::alive(*pid))
            .map(|(name, _)| name)
            .collect()
    }
}

fn summary(e: &super::Entry) -> InstanceSummary {
    InstanceSummary {
        name: e.rec.name.clone(),
        uuid: e.rec.uuid.clone(),
        kind: e.rec.spec.kind.as_str().to_string(),
        state: e.rec.state,
        image: spec::manifest::image_text(&e.rec.spec.image),
        memory: e.rec.spec.memory,
        autoboot: e.rec.spec.autoboot,
        pid: e.pid,
        reason: e.rec.reason.clone(),
    }
}
