//! The real [`Runtime`]: `zone monitor` and `vmm monitor` processes, per the contract
//! of the `monitor` crate, whose [`Client`] is the only way init talks to them.

pub mod disks;
pub mod watch;

use crate::node_config::NodeConfig;
use crate::pool::{InstanceRecord, Pool};
use crate::runtime::{ResolvedImage, Runtime, RuntimeError};
use monitor::{self as contract, Claim, Client, ClientError, InstanceConfig, MonitorStatus};
use spec::Kind;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Spawns and talks to the `zone` and `vmm` binaries.
pub struct MonitorRuntime {
    pool: Pool,
    run_dir: PathBuf,
    zone_bin: PathBuf,
    vmm_bin: PathBuf,
    node: NodeConfig,
}

impl MonitorRuntime {
    /// A runtime for `pool`, keeping sockets and pidfiles in `run_dir`.
    pub fn new(
        pool: Pool,
        run_dir: PathBuf,
        zone_bin: PathBuf,
        vmm_bin: PathBuf,
        node: NodeConfig,
    ) -> Self {
        MonitorRuntime {
            pool,
            run_dir,
            zone_bin,
            vmm_bin,
            node,
        }
    }

    /// The client of instance `uuid`'s monitor.
    fn client(&self, uuid: &str) -> Client {
        Client::for_instance(&self.run_dir, uuid)
    }
}

/// A monitor's failure to answer, as the runtime reports it for `rec`.
fn monitor_error(rec: &InstanceRecord) -> impl FnOnce(ClientError) -> RuntimeError + '_ {
    move |e| RuntimeError::Monitor {
        instance: rec.name.clone(),
        message: e.to_string(),
    }
}

impl MonitorRuntime {
    /// The spec its monitor runs `rec` with: the one admission counted
    /// (`schedule::effective_spec`, the node's default zone quota included).
    fn effective_spec(&self, rec: &InstanceRecord) -> spec::InstanceSpec {
        crate::schedule::effective_spec(&rec.spec, self.node.zone_quota)
    }
}

impl Runtime for MonitorRuntime {
    fn prepare(&self, rec: &InstanceRecord, image: &ResolvedImage) -> Result<(), RuntimeError> {
        let fail = |message: String| RuntimeError::Provision {
            instance: rec.name.clone(),
            message,
        };
        let dir = self.pool.instance_dir(&rec.uuid);
        fs::create_dir_all(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
        fs::create_dir_all(&self.run_dir)
            .map_err(|e| fail(format!("{}: {e}", self.run_dir.display())))?;
        match (&rec.spec.kind, image.zvol) {
            (Kind::Zone(_), true) => {
                return Err(fail(format!(
                    "image {} is a zvol (disk image); a zone needs a zone-dataset image",
                    image.uuid
                )))
            }
            (Kind::Hvm(_), false) => {
                return Err(fail(format!(
                    "image {} is a zone-dataset; an hvm instance needs a zvol image",
                    image.uuid
                )))
            }
            _ => {}
        }
        if let Kind::Hvm(hvm) = &rec.spec.kind {
            disks::provision(self.pool.root(), &rec.uuid, hvm, &image.path)
                .map_err(|e| fail(e.to_string()))?;
        }
        // The pool space of its quota was checked by admission (schedule::admit).
        let mut spec = self.effective_spec(rec);
        if let Some(d) = &image.zone_defaults {
            d.apply(&mut spec);
        }
        let bridges = self.bridges(rec)?;
        let config = InstanceConfig {
            uuid: rec.uuid.clone(),
            pool: self.pool.root().to_path_buf(),
            run_dir: self.run_dir.clone(),
            spec,
            image_path: image.path.clone(),
            id_range_start: rec.id_range_start,
            bridges,
            image_defaults: image.zone_defaults.clone(),
        };
        let path = contract::config_path(self.pool.root(), &rec.uuid);
        spec::atomic::write_json_atomic(&path, &config)
            .map_err(|e| fail(format!("{}: {e}", path.display())))
    }

    fn spawn(&self, rec: &InstanceRecord) -> Result<u32, RuntimeError> {
        let fail = |message: String| RuntimeError::Spawn {
            instance: rec.name.clone(),
            message,
        };
        let bin = match rec.spec.kind {
            Kind::Zone(_) => &self.zone_bin,
            Kind::Hvm(_) => &self.vmm_bin,
        };
        let config = contract::config_path(self.pool.root(), &rec.uuid);
        // The monitor must outlive us and never depend on our stdio: its output goes
        // to a log beside the instance.
        let log_path = contract::monitor_log_path(self.pool.root(), &rec.uuid);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| fail(format!("{}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| fail(format!("{}: {e}", log_path.display())))?;
        let mut cmd = Command::new(bin);
        cmd.arg("monitor")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: setsid() is async-signal-safe and touches only the child's own
        // session; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| fail(format!("{}: {e}", bin.display())))?;
        // The child is reaped by the supervisor's pidfd watcher, not by this handle.
        Ok(child.id())
    }

    fn find_running(&self, uuid: &str) -> Option<u32> {
        let pid = Claim::recorded_pid(&self.run_dir, uuid)?;
        if !watch::alive(pid) {
            return None;
        }
        let st = self.client(uuid).status().ok()?;
        // A stale pidfile whose pid was reused answers nothing, or answers with
        // another pid: only a monitor that confirms its own pid is adopted.
        (st.pid == pid).then_some(pid)
    }

    fn status(&self, rec: &InstanceRecord) -> Result<MonitorStatus, RuntimeError> {
        self.client(&rec.uuid).status().map_err(monitor_error(rec))
    }

    fn stop(
        &self,
        rec: &InstanceRecord,
        force: bool,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        self.client(&rec.uuid)
            .stop(force, timeout)
            .map(drop)
            .map_err(monitor_error(rec))
    }

    fn reboot(&self, rec: &InstanceRecord, force: bool) -> Result<(), RuntimeError> {
        self.client(&rec.uuid)
            .reboot(force)
            .map(drop)
            .map_err(monitor_error(rec))
    }

    fn console(&self, rec: &InstanceRecord) -> Result<OwnedFd, RuntimeError> {
        self.client(&rec.uuid)
            .console()
            .map_err(|e| RuntimeError::Monitor {
                instance: rec.name.clone(),
                message: format!("console: {e}"),
            })
    }

    /// Rewrites config.json with `rec.spec` and the bridges of any new nic tags (what
    /// else it holds, the image, changes only at a start, through `prepare`), then asks the
    /// monitor to reread it. A monitor restarted later reads the same file, so it never
    /// serves the manifest it had before the edit. When the monitor refuses, the file
    /// it had is put back: the refused change is not applied at a restart either.
    fn reload(&self, rec: &InstanceRecord) -> Result<String, RuntimeError> {
        let fail = |message: String| RuntimeError::Monitor {
            instance: rec.name.clone(),
            message,
        };
        let path = contract::config_path(self.pool.root(), &rec.uuid);
        let before = contract::read_config(&path).map_err(|e| fail(e.to_string()))?;
        // A nic added live may bring a tag the zone had no bridge for.
        let mut bridges = before.bridges.clone();
        bridges.extend(self.bridges(rec)?);
        let mut spec = self.effective_spec(rec);
        if let Some(d) = &before.image_defaults {
            d.apply(&mut spec);
        }
        let config = InstanceConfig {
            spec,
            bridges,
            ..before.clone()
        };
        spec::atomic::write_json_atomic(&path, &config)
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        self.client(&rec.uuid)
            .reload()
            .map_err(monitor_error(rec))
            .inspect_err(|_| {
                if let Err(e) = spec::atomic::write_json_atomic(&path, &before) {
                    log::error!("{}: putting back {}: {e}", rec.name, path.display());
                }
            })
    }
}

impl MonitorRuntime {
    /// The node bridge of each nic tag `rec` uses, each made if missing.
    fn bridges(&self, rec: &InstanceRecord) -> Result<BTreeMap<String, String>, RuntimeError> {
        let mut bridges = BTreeMap::new();
        for nic in &rec.spec.nics {
            let tag = self.node.nic_tag(&nic.tag);
            crate::net::ensure_bridge(&tag.bridge, tag.link.as_deref()).map_err(|e| {
                RuntimeError::Provision {
                    instance: rec.name.clone(),
                    message: format!("nic {} (tag {}): {e}", nic.name, nic.tag),
                }
            })?;
            bridges.insert(nic.tag.clone(), tag.bridge);
        }
        Ok(bridges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::record;
    use monitor::{answer, Instance, Server, StopRequest};

    /// A monitor that only reloads: it rereads config.json and reports its metadata.
    struct Reloading {
        config: PathBuf,
    }

    impl Instance for Reloading {
        type Error = String;
        fn boot(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn request_stop(&mut self, _: StopRequest) -> Result<String, String> {
            Err("no".into())
        }
        fn console(&mut self) -> Result<OwnedFd, String> {
            Err("no".into())
        }
        fn status(&mut self) -> MonitorStatus {
            MonitorStatus::provisioning(1)
        }
        fn reload(&mut self) -> Option<Result<String, String>> {
            let read = contract::read_config(&self.config).map_err(|e| e.to_string());
            Some(read.map(|c| format!("{:?}", c.spec.metadata)))
        }
    }

    #[test]
    fn reload_rewrites_the_config_and_the_monitor_reads_the_new_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(dir.path()).unwrap();
        let run_dir = dir.path().join("run");
        fs::create_dir_all(&run_dir).unwrap();
        let mut rec = record("web", "0000-reload", 0);
        let config_path = contract::config_path(pool.root(), &rec.uuid);
        fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        let config = InstanceConfig {
            uuid: rec.uuid.clone(),
            pool: pool.root().to_path_buf(),
            run_dir: run_dir.clone(),
            spec: rec.spec.clone(),
            image_path: "/images/busybox".into(),
            id_range_start: 7,
            bridges: BTreeMap::from([("admin".into(), "br0".into())]),
            // An OCI image's command and environment, given at the start.
            image_defaults: Some(monitor::ZoneDefaults {
                init: vec!["/entry".into()],
                env: vec![("FROM_IMAGE".into(), "1".into())],
                workdir: None,
                user: None,
            }),
        };
        spec::atomic::write_json_atomic(&config_path, &config).unwrap();
        let server = Server::bind(&contract::socket_path(&run_dir, &rec.uuid)).unwrap();
        let monitor = std::sync::Mutex::new(Reloading {
            config: config_path.clone(),
        });
        std::thread::spawn(move || {
            server.serve(move |req| answer(&mut *monitor.lock().unwrap(), req))
        });
        let runtime = MonitorRuntime::new(
            pool,
            run_dir,
            "zone".into(),
            "vmm".into(),
            NodeConfig::default(),
        );
        rec.spec.metadata.insert("role".into(), "db".into());
        let note = runtime.reload(&rec).unwrap();
        assert_eq!(note, r#"{"role": "db"}"#);
        let saved = contract::read_config(&config_path).unwrap();
        // The new spec, with the image's defaults applied again (a monitor restarted
        // later must not lose the image's environment).
        let mut expected = rec.spec.clone();
        config.image_defaults.as_ref().unwrap().apply(&mut expected);
        assert_ne!(expected, rec.spec);
        assert_eq!(saved.spec, expected);
        assert_eq!(saved.image_defaults, config.image_defaults);
        // Only the spec changed: the rest is the start's business.
        assert_eq!(
            (saved.image_path, saved.id_range_start),
            (config.image_path, 7)
        );
        assert_eq!(saved.bridges, config.bridges);
        // No monitor: an error naming the instance.
        let mut gone = rec.clone();
        gone.uuid = "0000-none".into();
        let err = runtime.reload(&gone).unwrap_err().to_string();
        assert!(err.contains("monitor of web"), "{err}");
    }
}
