//! The zone's metadata service: the SmartOS metadata protocol (the `mdata` crate's
//! [`Session`]) served by the zone's own monitor, from its poll loop, never by init, so
//! that one zone's traffic can slow or break only its own server and reach only its
//! own store.
//!
//! Two transports, as on SmartOS lx zones:
//!
//! - `/dev/ttyS1` in the zone: the slave of a raw pty ([`mdata::transport::metadata_pty`])
//!   made at every boot; the monitor keeps both ends open for the boot's life (with no
//!   slave open, reads of the master fail) and serves the master;
//! - `/native/.zonecontrol/metadata.sock`: a unix socket in [`monitor::zonecontrol_dir`]
//!   on the host, whose directory the zone sees read-only. The socket belongs to zone
//!   root (mode 0600), like the pty: other zone users cannot read the metadata.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] socket connections at once (more are closed as
//! they are accepted), each with the session bounds of mdata's `SessionConfig` (line
//! length, request rate, unwritten answers), and at most [`READ_CHUNK`] bytes read
//! ahead of what a session consumed. Customer metadata written by the zone persists in
//! `<pool>/<uuid>/metadata.json` (the store's atomic writes).

use crate::error::{Context, Result, ZoneError};
use crate::launch::MetadataEnds;
use crate::net::NicPlan;
use mdata::{InstanceInfo, Limits, MetadataStore, Session, SessionConfig};
use monitor::{self as contract, InstanceConfig};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Socket connections one zone may hold open at once; more are closed at accept, and
/// the clients (mdata-get and friends) retry.
pub const MAX_CONNECTIONS: usize = 8;
/// The most bytes read from one client ahead of what its session has consumed.
pub const READ_CHUNK: usize = 64 << 10;

/// The customer metadata the manifest gives `spec`'s guest: its `metadata` block and
/// the `user-script`, `user-data` and `ssh-key` properties under SmartOS's key names.
/// The `sdc:` facts of the zone: its spec, with the MAC of each nic as the zone is
/// plumbed with it (`nics`, the launch's own plans, so `sdc:nics` and the veths never
/// disagree, pinned or derived).
fn instance_info(config: &InstanceConfig, nics: &[NicPlan]) -> InstanceInfo {
    let macs: Vec<String> = nics
        .iter()
        .map(|p| spec::MacAddr(p.mac).to_string())
        .collect();
    InstanceInfo::from_spec(&config.spec, &config.uuid, &macs)
}

fn manifest_metadata(spec: &spec::InstanceSpec) -> BTreeMap<String, String> {
    spec.customer_metadata()
}

/// One client of the server: a socket connection, or the zone's serial line.
struct Peer {
    file: File,
    session: Session,
    /// Bytes read that the session has not consumed yet (it was rate-limited or its
    /// answers were at their bound).
    unread: Vec<u8>,
    /// The client will send no more.
    eof: bool,
    /// What the next poll waits for.
    interest: PollFlags,
}

impl Peer {
    fn new(fd: OwnedFd, config: SessionConfig, now: Instant) -> Result<Peer> {
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .ctx(|| "metadata peer: O_NONBLOCK".into())?;
        Ok(Peer {
            file: File::from(fd),
            session: Session::new(config, now),
            unread: Vec::new(),
            eof: false,
            interest: PollFlags::empty(),
        })
    }

    /// Decides what to wait for; returns when the session must be looked at again
    /// without any event (it was rate-limited, or it can take what it holds).
    fn prepare(&mut self, now: Instant) -> Option<Instant> {
        let wants = self.session.wants_input(now);
        self.interest = PollFlags::empty();
        if !self.eof && self.unread.is_empty() && wants {
            self.interest |= PollFlags::POLLIN;
        }
        if !self.session.output().is_empty() {
            self.interest |= PollFlags::POLLOUT;
        }
        if !self.unread.is_empty() && wants {
            return Some(now);
        }
        self.session.ready_at()
    }

    /// Serves what `revents` says is ready; false when the client is done (gone,
    /// broken, or it hung up with everything answered).
    fn pump(
        &mut self,
        revents: PollFlags,
        store: &Mutex<MetadataStore>,
        scratch: &mut [u8],
        now: Instant,
    ) -> bool {
        if revents.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL | PollFlags::POLLHUP) {
            // Gone: nobody would read the answers.
            return false;
        }
        if !self.unread.is_empty() {
            let used = self.session.feed(&self.unread, store, now);
            self.unread.drain(..used);
        }
        if self.unread.is_empty()
            && !self.eof
            && revents.contains(PollFlags::POLLIN)
            && self.session.wants_input(now)
        {
            match nix::unistd::read(&self.file, scratch) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    let used = self.session.feed(&scratch[..n], store, now);
                    self.unread.extend_from_slice(&scratch[used..n]);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
        if !self.flush() {
            return false;
        }
        !(self.eof && self.unread.is_empty() && self.session.output().is_empty())
    }

    /// Writes what the client will take of the answers; false when it is gone.
    fn flush(&mut self) -> bool {
        while !self.session.output().is_empty() {
            match nix::unistd::write(&self.file, self.session.output()) {
                Ok(0) => return false,
                Ok(n) => self.session.consume_output(n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => return false,
            }
        }
        true
    }
}

/// The zone's `/dev/ttyS1` for one boot.
struct Tty {
    peer: Peer,
    /// The guest's end, kept open for the boot's life.
    _slave: File,
}

/// One zone's metadata server.
pub(super) struct MetadataService {
    uuid: String,
    store: Mutex<MetadataStore>,
    config: SessionConfig,
    listener: UnixListener,
    dir: PathBuf,
    /// Zone root's host id: owner of the socket and of each boot's pty slave.
    owner: u32,
    clients: Vec<Peer>,
    tty: Option<Tty>,
    /// Connections closed at accept since the cap was last reached (logged once).
    turned_away: u64,
    scratch: Vec<u8>,
}

impl MetadataService {
    /// Opens the zone's store (`<pool>/<uuid>/metadata.json`) and listens on its
    /// socket. `nics` are the zone's as plumbed; `hostname` is the zone's (the spec's,
    /// defaulted); `owner`, zone root's host id.
    pub(super) fn start(
        config: &InstanceConfig,
        nics: &[NicPlan],
        hostname: &str,
        owner: u32,
    ) -> Result<MetadataService> {
        let mut info = instance_info(config, nics);
        info.hostname = Some(hostname.to_string());
        let path = contract::metadata_path(&config.pool, &config.uuid);
        let store = MetadataStore::open(
            &path,
            info,
            manifest_metadata(&config.spec),
            Limits::default(),
        )
        .map_err(|source| ZoneError::Metadata {
            zone: config.uuid.clone(),
            source,
        })?;
        let dir = contract::zonecontrol_dir(&config.run_dir, &config.uuid);
        let listener = listen(&dir, owner)?;
        Ok(MetadataService {
            uuid: config.uuid.clone(),
            config: SessionConfig::for_limits(store.limits()),
            store: Mutex::new(store),
            listener,
            dir,
            owner,
            clients: Vec::new(),
            tty: None,
            turned_away: 0,
            scratch: vec![0; READ_CHUNK],
        })
    }

    /// A fresh `/dev/ttyS1` for the next boot (the last one's is dropped); returns the
    /// ends to put into the zone.
    pub(super) fn open_tty(&mut self) -> Result<MetadataEnds> {
        self.tty = None;
        let pty = mdata::transport::metadata_pty().ctx(|| "metadata pty".into())?;
        let path = pty.slave_path.clone();
        std::os::unix::fs::chown(&path, Some(self.owner), Some(self.owner))
            .ctx(|| format!("chown {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .ctx(|| format!("chmod {}", path.display()))?;
        for f in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                f,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .ctx(|| "metadata pty: FD_CLOEXEC".into())?;
        }
        let peer = Peer::new(OwnedFd::from(pty.master), self.config, Instant::now())?;
        self.tty = Some(Tty {
            peer,
            _slave: pty.slave,
        });
        Ok(MetadataEnds {
            tty: path,
            control_dir: self.dir.clone(),
        })
    }

    /// The boot is over: its `/dev/ttyS1` goes, and with it what was left unanswered.
    pub(super) fn close_tty(&mut self) {
        self.tty = None;
    }

    /// Decides what the next poll waits for; returns when to look again without an
    /// event (a rate-limited session), if ever.
    pub(super) fn prepare(&mut self, now: Instant) -> Option<Instant> {
        let tty = self.tty.as_mut().map(|t| &mut t.peer);
        tty.into_iter()
            .chain(self.clients.iter_mut())
            .filter_map(|p| p.prepare(now))
            .min()
    }

    /// The fds to poll, in the order [`MetadataService::handle`] takes their events:
    /// the listening socket, the tty (if any), the connections.
    pub(super) fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        let tty = self.tty.as_ref().map(|t| &t.peer);
        for p in tty.into_iter().chain(self.clients.iter()) {
            fds.push(PollFd::new(p.file.as_fd(), p.interest));
        }
        fds
    }

    /// Serves the events of the fds [`MetadataService::poll_fds`] gave, in its order.
    pub(super) fn handle(&mut self, revents: &[PollFlags], now: Instant) {
        let mut events = revents.iter().copied();
        let listening = events.next().unwrap_or(PollFlags::empty());
        if let Some(tty) = &mut self.tty {
            let ev = events.next().unwrap_or(PollFlags::empty());
            if !tty.peer.pump(ev, &self.store, &mut self.scratch, now) {
                // Cannot happen while we hold the slave; never spin on a dead line.
                eprintln!("zone monitor {}: /dev/ttyS1 closed ({ev:?})", self.uuid);
                self.tty = None;
            }
        }
        let (store, scratch) = (&self.store, &mut self.scratch);
        self.clients.retain_mut(|p| {
            let ev = events.next().unwrap_or(PollFlags::empty());
            p.pump(ev, store, scratch, now)
        });
        if listening.contains(PollFlags::POLLIN) {
            self.accept(now);
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("zone monitor {}: metadata socket: {e}", self.uuid);
                    return;
                }
            };
            if self.clients.len() >= MAX_CONNECTIONS {
                // Closed at once: the client sees EOF and retries, instead of waiting
                // in the backlog. Said once per crowd, not per connection.
                if self.turned_away == 0 {
                    eprintln!(
                        "zone monitor {}: metadata socket: {MAX_CONNECTIONS} connections open, closing new ones",
                        self.uuid
                    );
                }
                self.turned_away += 1;
                continue;
            }
            self.turned_away = 0;
            match Peer::new(OwnedFd::from(stream), self.config, now) {
                Ok(p) => self.clients.push(p),
                Err(e) => eprintln!("zone monitor {}: {e}", self.uuid),
            }
        }
    }

    /// Applies the manifest's customer metadata of an edited `spec` (the store's
    /// precedence: a manifest change of a key wins over the guest's write of it).
    pub(super) fn apply_manifest(&mut self, spec: &spec::InstanceSpec) -> Result<String> {
        let metadata = manifest_metadata(spec);
        let count = metadata.len();
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store
            .set_manifest(metadata)
            .map_err(|source| ZoneError::Metadata {
                zone: self.uuid.clone(),
                source,
            })?;
        Ok(format!(
            "customer metadata applied: {count} manifest key(s), {} written by the zone",
            store.guest_written().len()
        ))
    }

    /// Removes the socket and its directory.
    pub(super) fn shutdown(&mut self) {
        self.tty = None;
        self.clients.clear();
        let _ = std::fs::remove_file(self.dir.join(contract::METADATA_SOCKET));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Makes `dir` (host root's, 0755: the zone may look in but not write) and listens on
/// the metadata socket in it, owned by zone root (`owner`), mode 0600.
fn listen(dir: &Path, owner: u32) -> Result<UnixListener> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    std::os::unix::fs::chown(dir, Some(0), Some(0)).ctx(|| format!("chown {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {}", dir.display()))?;
    let path = dir.join(contract::METADATA_SOCKET);
    // We hold the zone's lock: a socket there is a dead monitor's.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ZoneError::io(format!("removing {}", path.display()), e)),
    }
    let listener = UnixListener::bind(&path).ctx(|| format!("binding {}", path.display()))?;
    std::os::unix::fs::chown(&path, Some(owner), Some(owner))
        .ctx(|| format!("chown {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .ctx(|| format!("chmod {}", path.display()))?;
    listener
        .set_nonblocking(true)
        .ctx(|| format!("{}: O_NONBLOCK", path.display()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdc_nics_carry_the_macs_the_zone_is_plumbed_with() {
        let uuid = "0123abcd-0000-4000-8000-000000000001";
        let image = spec::ImageRef::Name {
            name: "busybox".into(),
            version: None,
        };
        let mut spec = spec::InstanceSpec::zone("web01", image);
        let nic = |name: &str, mac: Option<spec::MacAddr>| spec::Nic {
            name: name.into(),
            tag: "admin".into(),
            ip: spec::IpConfig::None,
            gateway: None,
            mtu: None,
            mac,
            vlan: 0,
            allow: Default::default(),
        };
        let pinned = spec::MacAddr([2, 0, 0, 0, 0, 0x77]);
        spec.nics = vec![nic("net0", None), nic("net1", Some(pinned))];
        let config = InstanceConfig {
            uuid: uuid.into(),
            pool: "/zones".into(),
            run_dir: "/run/skerry".into(),
            spec,
            image_path: "/images/x".into(),
            id_range_start: 200_000,
            bridges: BTreeMap::new(),
            image_defaults: None,
        };
        let plans = crate::monitor::config::launch_spec(&config).unwrap().nics;
        let info = instance_info(&config, &plans);
        let nics: serde_json::Value = serde_json::from_str(&info.get("nics").unwrap()).unwrap();
        // A derived MAC for net0 (the veth's), the pinned one for net1.
        let derived = spec::MacAddr::of_nic(None, uuid, 0).to_string();
        assert_eq!(nics[0]["mac"], serde_json::json!(derived));
        assert_eq!(nics[1]["mac"], serde_json::json!("02:00:00:00:00:77"));
    }
}
