//! The seam between the reconciler/supervisor and the outside world: monitors and
//! images. The real implementations spawn `zone`/`vmm` processes and call imgadm;
//! tests substitute recording fakes.

use crate::pool::InstanceRecord;
use monitor::MonitorStatus;
use spec::ImageRef;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of the runtime side, already in words an operator can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// Preparing the instance on disk failed.
    #[error("provisioning {instance}: {message}")]
    Provision {
        /// Instance name.
        instance: String,
        /// What went wrong.
        message: String,
    },
    /// The monitor could not be started.
    #[error("starting the monitor of {instance}: {message}")]
    Spawn {
        /// Instance name.
        instance: String,
        /// What went wrong.
        message: String,
    },
    /// The monitor did not do what it was asked.
    #[error("monitor of {instance}: {message}")]
    Monitor {
        /// Instance name.
        instance: String,
        /// What went wrong.
        message: String,
    },
    /// The image could not be found or imported.
    #[error("image {image}: {message}")]
    Image {
        /// The reference as written.
        image: String,
        /// What went wrong.
        message: String,
    },
}

/// An image ready to run from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Image UUID.
    pub uuid: String,
    /// Zone image: the unpacked rootfs. HVM image: the raw disk file.
    pub path: PathBuf,
    /// Whether it is a raw disk (`zvol`) rather than a rootfs.
    pub zvol: bool,
    /// An OCI image's Entrypoint+Cmd and Env: the zone's `init` and `env` where its
    /// manifest gives none (a manifest's env entries win key by key).
    pub zone_defaults: Option<ZoneDefaults>,
}

pub use monitor::ZoneDefaults;

/// Finds images, importing missing ones from the configured sources.
pub trait Images: Send + Sync {
    /// The installed image for `r`, importing it first when it is missing.
    fn ensure(&self, r: &ImageRef) -> Result<ResolvedImage, RuntimeError>;
    /// The installed image for `r` without importing anything; `None` when it is
    /// missing. The default knows nothing and says `None`, so callers fall back on
    /// [`Images::ensure`].
    fn installed(&self, r: &ImageRef) -> Result<Option<ResolvedImage>, RuntimeError> {
        let _ = r;
        Ok(None)
    }
}

/// Starts, finds, and talks to per-instance monitor processes.
pub trait Runtime: Send + Sync {
    /// Makes everything the monitor needs exist: the instance directory, disks,
    /// bridges, and `config.json` for `rec.spec`.
    fn prepare(&self, rec: &InstanceRecord, image: &ResolvedImage) -> Result<(), RuntimeError>;
    /// Spawns the monitor in its own session; returns its pid.
    fn spawn(&self, rec: &InstanceRecord) -> Result<u32, RuntimeError>;
    /// The pid of a live monitor already running this instance (pidfile + a status
    /// answer on its socket), for re-adoption after an init restart.
    fn find_running(&self, uuid: &str) -> Option<u32>;
    /// The monitor's status.
    fn status(&self, rec: &InstanceRecord) -> Result<MonitorStatus, RuntimeError>;
    /// Asks the monitor to stop the instance and exit.
    fn stop(
        &self,
        rec: &InstanceRecord,
        force: bool,
        timeout: Duration,
    ) -> Result<(), RuntimeError>;
    /// Asks the monitor to reboot the instance in place.
    fn reboot(&self, rec: &InstanceRecord, force: bool) -> Result<(), RuntimeError>;
    /// The instance console (pty master or serial) as an fd.
    fn console(&self, rec: &InstanceRecord) -> Result<OwnedFd, RuntimeError>;
    /// Hands the running monitor `rec.spec` (in `config.json`, rewritten) for what
    /// applies without a restart: the customer metadata its guest reads. Returns the
    /// monitor's note on what it applied.
    fn reload(&self, rec: &InstanceRecord) -> Result<String, RuntimeError>;
}

#[cfg(test)]
mod zone_defaults_tests {
    use super::ZoneDefaults;

    #[test]
    fn the_manifest_wins_where_it_says_more() {
        let d = ZoneDefaults {
            init: vec!["/app".into(), "--serve".into()],
            env: vec![("A".into(), "image".into()), ("B".into(), "image".into())],
            workdir: Some("/srv".into()),
            user: Some("app:staff".into()),
        };
        let image = spec::ImageRef::Uuid(uuid::Uuid::nil());
        let mut bare = spec::InstanceSpec::zone("z", image.clone());
        if let spec::Kind::Zone(z) = &mut bare.kind {
            z.init.clear(); // what a manifest naming an OCI image without `init` reads as
        }
        d.apply(&mut bare);
        let spec::Kind::Zone(z) = &bare.kind else {
            unreachable!()
        };
        assert_eq!(z.init, ["/app", "--serve"]);
        assert_eq!(z.env, d.env);
        assert_eq!(z.workdir.as_deref(), Some("/srv"));
        assert_eq!(z.user.as_deref(), Some("app:staff"));
        let mut said = spec::InstanceSpec::zone("z", image);
        if let spec::Kind::Zone(z) = &mut said.kind {
            z.init = vec!["/sbin/init".into()];
            z.env = vec![("B".into(), "manifest".into())];
        }
        d.apply(&mut said);
        let spec::Kind::Zone(z) = &said.kind else {
            unreachable!()
        };
        assert_eq!(z.init, ["/sbin/init"]);
        // The image's directory and user go with its command: the manifest's init
        // runs as root in /.
        assert_eq!((z.workdir.as_deref(), z.user.as_deref()), (None, None));
        let env: Vec<(&str, &str)> = z
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, [("A", "image"), ("B", "manifest")]);
    }
}
