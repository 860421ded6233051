//! The instance monitor's side of an HVM guest's metadata channel: the guest's COM2
//! (`/dev/ttyS1`, as on SmartOS) is one end of a socketpair handed to the jailed VMM
//! ([`VmConfig::com2_fd`]); the monitor serves the SmartOS metadata protocol
//! ([`mdata::serve`]) on the other end, one thread per boot, against the instance's
//! store in `<pool>/<uuid>/metadata.json` (guest writes persist across boots).
//!
//! Serving here, in the monitor, and not in the VMM keeps the store's file out of the
//! jail, and one guest's traffic reaches only its own monitor.

use crate::config::VmConfig;
use mdata::{Limits, MetadataStore, SessionConfig, StoreError};
use monitor::{self as contract, InstanceConfig};
use spec::MacAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// Why the metadata channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The store (`metadata.json`) could not be read.
    #[error("instance {uuid}: {source}")]
    Store {
        /// The instance.
        uuid: String,
        /// The error, naming the file.
        #[source]
        source: StoreError,
    },
    /// The socketpair for a boot could not be made.
    #[error("instance {uuid}: metadata channel: {source}")]
    Channel {
        /// The instance.
        uuid: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// One instance's metadata: its store, and a server thread per boot.
pub struct MetadataService {
    uuid: String,
    store: Arc<Mutex<MetadataStore>>,
}

/// The MAC of an HVM nic: its pinned one, else the one derived from the instance
/// UUID and the nic's index (what the VMM gives the guest).
pub fn nic_mac(uuid: &str, idx: usize, pinned: Option<MacAddr>) -> String {
    MacAddr::of_nic(pinned, uuid, idx).to_string()
}

/// The MAC of each of `cfg`'s nics, as the guest sees them.
fn macs_of(cfg: &InstanceConfig) -> Vec<String> {
    cfg.spec
        .nics
        .iter()
        .enumerate()
        .map(|(i, n)| nic_mac(&cfg.uuid, i, n.mac))
        .collect()
}

impl MetadataService {
    /// Opens the store of the instance `cfg` describes (`<pool>/<uuid>/metadata.json`).
    pub fn open(cfg: &InstanceConfig) -> Result<Self, MetadataError> {
        let macs = macs_of(cfg);
        let store = MetadataStore::open_spec(
            &contract::metadata_path(&cfg.pool, &cfg.uuid),
            &cfg.spec,
            &cfg.uuid,
            &macs,
            Limits::default(),
        )
        .map_err(|source| MetadataError::Store {
            uuid: cfg.uuid.clone(),
            source,
        })?;
        Ok(Self::with_store(&cfg.uuid, store))
    }

    /// Applies the customer metadata and `sdc:` facts of an edited `cfg` live
    /// ([`MetadataStore::set_spec`]'s precedence applies).
    pub fn apply_spec(&self, cfg: &InstanceConfig) -> Result<(), MetadataError> {
        let macs = macs_of(cfg);
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_spec(&cfg.spec, &cfg.uuid, &macs)
            .map_err(|source| MetadataError::Store {
                uuid: cfg.uuid.clone(),
                source,
            })
    }

    /// A service over an already opened store.
    pub fn with_store(uuid: &str, store: MetadataStore) -> Self {
        MetadataService {
            uuid: uuid.to_owned(),
            store: Arc::new(Mutex::new(store)),
        }
    }

    /// The store, shared with the server threads (to apply an edited spec live with
    /// [`MetadataStore::set_spec`]).
    pub fn store(&self) -> &Arc<Mutex<MetadataStore>> {
        &self.store
    }

    /// A channel for one boot: starts a thread serving one end until the guest's VMM
    /// closes the other, and returns that other end, inheritable (not close-on-exec),
    /// for [`VmConfig::com2_fd`]. Close it once the child has been spawned, so the
    /// server sees the end of the boot.
    pub fn connect(&self) -> Result<OwnedFd, MetadataError> {
        let err = |source| MetadataError::Channel {
            uuid: self.uuid.clone(),
            source,
        };
        let (ours, guest) = UnixStream::pair().map_err(err)?;
        let guest = OwnedFd::from(guest);
        nix::fcntl::fcntl(
            &guest,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(|e| err(e.into()))?;
        let store = self.store.clone();
        let uuid = self.uuid.clone();
        let config = SessionConfig::for_limits(crate::devices::bus::lock(&store).limits());
        std::thread::Builder::new()
            .name("metadata".into())
            .spawn(move || {
                if let Err(e) = mdata::serve(ours, &store, config) {
                    log::warn!("instance {uuid}: metadata channel: {e}");
                }
            })
            .map_err(err)?;
        Ok(guest)
    }

    /// [`MetadataService::connect`] for one boot of `vm`: sets its `com2_fd` and
    /// returns the end to keep open until the child is spawned. Without a service, or
    /// when the channel cannot be made (logged), the guest boots without one.
    pub fn attach(service: Option<&Self>, vm: &mut VmConfig) -> Option<OwnedFd> {
        let fd = match service?.connect() {
            Ok(fd) => fd,
            Err(e) => {
                log::error!("{e}; the guest boots without its metadata channel");
                return None;
            }
        };
        vm.com2_fd = Some(fd.as_raw_fd());
        Some(fd)
    }

    /// [`MetadataService::open`], logged instead of failing: a broken store must not
    /// keep the guest from booting.
    pub fn open_logged(cfg: &InstanceConfig) -> Option<Self> {
        Self::open(cfg)
            .map_err(|e| log::error!("{e}; the guest gets no metadata service"))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_boot_channel_answers_the_protocol_and_persists_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        let spec = spec::parse_str(
            "v.kdl",
            "hvm v { image \"debian-hvm@12\"; user-data \"ud\"; nic net0 tag=\"admin\" ip=\"dhcp\"; }",
        )
        .unwrap()
        .remove(0);
        let store = MetadataStore::open_spec(
            &path,
            &spec,
            "u-1",
            &[nic_mac("u-1", 0, None)],
            Limits::default(),
        )
        .unwrap();
        let service = MetadataService::with_store("u-1", store);
        let fd = service.connect().unwrap();
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, 0, "the child must inherit it");
        let mut guest = UnixStream::from(fd);
        guest.write_all(b"GET user-data\n").unwrap();
        let mut buf = [0u8; 64];
        let n = guest.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"SUCCESS\nud\n.\n");
        // A v2 PUT of color=blue: the payload is base64("Y29sb3I= Ymx1ZQ==").
        let body = "abcd1234 PUT WTI5c2IzST0gWW14MVpRPT0=";
        let frame = format!(
            "V2 {} {:08x} {body}\n",
            body.len(),
            mdata::crc32::crc32(body.as_bytes())
        );
        guest.write_all(frame.as_bytes()).unwrap();
        let n = guest.read(&mut buf).unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(answer.contains("abcd1234 SUCCESS"), "{answer:?}");
        drop(guest);
        let reopened =
            MetadataStore::open_spec(&path, &spec, "u-1", &[], Limits::default()).unwrap();
        assert_eq!(reopened.get("color").as_deref(), Some("blue"));
    }

    #[test]
    fn an_edited_spec_applies_to_the_next_request_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |user_data: &str| {
            spec::parse_str(
                "v.kdl",
                &format!("hvm v {{ image \"debian-hvm@12\"; user-data \"{user_data}\"; }}"),
            )
            .unwrap()
            .remove(0)
        };
        let mut cfg = InstanceConfig {
            uuid: "u-2".into(),
            pool: dir.path().to_path_buf(),
            run_dir: dir.path().to_path_buf(),
            spec: spec("before"),
            image_path: dir.path().join("disk.raw"),
            id_range_start: 0,
            bridges: Default::default(),
            image_defaults: None,
        };
        std::fs::create_dir_all(dir.path().join("u-2")).unwrap();
        let service = MetadataService::open(&cfg).unwrap();
        let ask = |service: &MetadataService| {
            let mut guest = UnixStream::from(service.connect().unwrap());
            guest.write_all(b"GET user-data\n").unwrap();
            let mut buf = [0u8; 64];
            let n = guest.read(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        assert_eq!(ask(&service), "SUCCESS\nbefore\n.\n");
        cfg.spec = spec("after");
        service.apply_spec(&cfg).unwrap();
        assert_eq!(ask(&service), "SUCCESS\nafter\n.\n");
    }

    #[test]
    fn nic_macs_match_what_the_guest_is_given() {
        assert_eq!(
            nic_mac("u", 0, Some("AA:BB:CC:00:11:22".parse().unwrap())),
            "aa:bb:cc:00:11:22"
        );
        let m = crate::config::mac_from("u/1");
        assert_eq!(
            nic_mac("u", 1, None),
            format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            )
        );
    }
}
