//! Shared by the interop tests: a metadata server on a unix socket or a pty, as an
//! instance's monitor will run it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mdata::{InstanceInfo, Limits, MetadataStore, Nic, NicAddress, SessionConfig};

pub const UUID: &str = "6a1c2f4e-3b7d-4e0a-9c61-5f2d8e9a0b13";

pub fn info() -> InstanceInfo {
    InstanceInfo {
        uuid: UUID.into(),
        alias: Some("web01".into()),
        hostname: Some("web01".into()),
        datacenter_name: Some("skerry".into()),
        nics: vec![Nic {
            interface: "net0".into(),
            mac: "02:08:20:6a:1c:2f".into(),
            ips: vec![NicAddress::Static {
                addr: "10.88.0.10".parse().unwrap(),
                prefix: 24,
            }],
            gateways: vec!["10.88.0.1".parse().unwrap()],
            primary: true,
            nic_tag: "admin".into(),
            mtu: Some(1500),
        }],
        resolvers: vec!["10.88.0.1".into()],
        ..Default::default()
    }
}

pub fn manifest() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("role".into(), "web".into());
    m.insert(
        "root_authorized_keys".into(),
        "ssh-ed25519 AAAAC3Nz test@skerry".into(),
    );
    m
}

pub fn store_at(path: &Path) -> Arc<Mutex<MetadataStore>> {
    Arc::new(Mutex::new(
        MetadataStore::open(path, info(), manifest(), Limits::default()).unwrap(),
    ))
}

/// Serves `store` on a fresh unix socket in `dir`, one thread per connection.
pub fn serve_socket(dir: &Path, store: Arc<Mutex<MetadataStore>>) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("metadata{n}.sock"));
    serve_socket_at(&path, store);
    path
}

/// Serves `store` on a unix socket at `path`, one thread per connection.
pub fn serve_socket_at(path: &Path, store: Arc<Mutex<MetadataStore>>) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let store = store.clone();
            std::thread::spawn(move || {
                let _ = mdata::serve(conn, &store, SessionConfig::default());
            });
        }
    });
}

/// Serves `store` on the master side of a new pty; returns the slave's path and the
/// slave end, which the caller keeps open (as the zone monitor does) so the line
/// stays up between clients.
pub fn serve_pty(store: Arc<Mutex<MetadataStore>>) -> (PathBuf, File) {
    let pty = mdata::transport::metadata_pty().unwrap();
    let master = pty.master;
    std::thread::spawn(move || {
        let _ = mdata::serve(master, &store, SessionConfig::default());
    });
    (pty.slave_path, pty.slave)
}
