//! Tenant isolation on the host side of instance ports: antispoof rules on what an
//! instance sends, its firewall on what it receives, in kernel nf_tables, programmed
//! with the `nft` tool (one `nft -f -` run is one kernel transaction; see
//! host/README.md for why the tool and not a netlink crate).
//!
//! Rules are keyed by the port's name, not its index, so they are installed *before*
//! the port exists (a tap the vmm opens later, a veth about to be made) and the port
//! is never up without them. Installing replaces a port's chains in one transaction,
//! so reinstalling (an instance restarted, its monitor re-run) never opens a window;
//! the rules live in the kernel, not in any process, so an init restart leaves them
//! as they are.

mod rules;

pub use rules::{install_script, link_local, mark_of, remove_script, TABLE};

use spec::{Firewall, IpConfig, Nic, NicAllow};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one instance port may send and receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPolicy {
    /// The host-side interface name (veth end or tap).
    pub port: String,
    /// The nic's MAC: the only source MAC it may send.
    pub mac: [u8; 6],
    /// The nic's configured addresses: the only sources it may send from.
    pub addrs: Vec<IpAddr>,
    /// The nic gets its address by DHCP (sources then are not pinned).
    pub dhcp: bool,
    /// The nic's relaxations of the antispoof rules.
    pub allow: NicAllow,
    /// The instance's firewall, when it has one.
    pub firewall: Option<Firewall>,
}

impl PortPolicy {
    /// The policy of `nic` plugged in as host port `port` with MAC `mac`, in an
    /// instance with `firewall`.
    pub fn for_nic(port: &str, mac: [u8; 6], nic: &Nic, firewall: Option<&Firewall>) -> Self {
        PortPolicy {
            port: port.to_owned(),
            mac,
            addrs: match nic.ip {
                IpConfig::Static { addr, .. } => vec![addr],
                IpConfig::Dhcp | IpConfig::None => vec![],
            },
            dhcp: nic.ip == IpConfig::Dhcp,
            allow: nic.allow,
            firewall: firewall.cloned(),
        }
    }
}

/// Why a port's rules could not be put in place or removed.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// No `nft` binary where the node image puts it.
    #[error("port {port}: nft (Debian's nftables) is not installed; looked in {looked}")]
    NoNft {
        /// The port.
        port: String,
        /// The places looked in.
        looked: String,
    },
    /// Running `nft` failed.
    #[error("port {port}: running {nft}: {source}")]
    Spawn {
        /// The port.
        port: String,
        /// The binary.
        nft: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel (or nft) refused the transaction; nothing of it was applied.
    #[error("port {port}: nf_tables refused the rules: {stderr}")]
    Refused {
        /// The port.
        port: String,
        /// nft's message, cut to a bounded size.
        stderr: String,
    },
    /// Bridged traffic cannot be connection-tracked (br_netfilter missing).
    #[error("port {port}: a firewall needs br_netfilter (writing {path}: {source})")]
    NoBrNetfilter {
        /// The port.
        port: String,
        /// The sysctl.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where the node image and Debian put `nft`.
const NFT_PATHS: &[&str] = &["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// Most of nft's error output kept in an error (it echoes the failing line).
const MAX_STDERR: u64 = 4096;

fn nft_binary(port: &str) -> Result<PathBuf, IsolationError> {
    NFT_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| IsolationError::NoNft {
            port: port.to_owned(),
            looked: NFT_PATHS.join(", "),
        })
}

/// Runs `script` as one nf_tables transaction in the caller's network namespace.
pub fn apply(port: &str, script: &str) -> Result<(), IsolationError> {
    let nft = nft_binary(port)?;
    let spawn = |source| IsolationError::Spawn {
        port: port.to_owned(),
        nft: nft.clone(),
        source,
    };
    let mut child = Command::new(&nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(script.as_bytes()));
    let mut stderr = String::new();
    if let Some(err) = child.stderr.take() {
        let _ = err.take(MAX_STDERR).read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(spawn)?;
    if let Some(Err(e)) = written {
        if status.success() {
            return Err(spawn(e));
        }
    }
    if !status.success() {
        return Err(IsolationError::Refused {
            port: port.to_owned(),
            stderr: stderr.trim().to_owned(),
        });
    }
    Ok(())
}

/// Bridged IPv4/IPv6 go through the inet hooks (and conntrack): the firewall's
/// stateful half depends on it.
fn bridge_netfilter_on(port: &str) -> Result<(), IsolationError> {
    for family in ["iptables", "ip6tables"] {
        let path = format!("/proc/sys/net/bridge/bridge-nf-call-{family}");
        std::fs::write(&path, "1").map_err(|source| IsolationError::NoBrNetfilter {
            port: port.to_owned(),
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Puts `p`'s rules in place (replacing any the port had), in one transaction.
pub fn install(p: &PortPolicy) -> Result<(), IsolationError> {
    if p.firewall.is_some() {
        bridge_netfilter_on(&p.port)?;
    }
    apply(&p.port, &install_script(p))
}

/// Removes every rule of `port`; a port without rules is no error.
pub fn remove(port: &str) -> Result<(), IsolationError> {
    apply(port, &remove_script(port))
}
