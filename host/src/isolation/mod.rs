//! Tenant isolation on the host side of instance ports: antispoof rules on what an
//! instance sends, its firewall on what it receives, in kernel nf_tables, programmed
//! with the `nft` tool (one `nft -f -` run is one kernel transaction; see
//! host/README.md for why the tool and not a netlink crate).
//!
//! The rules are fixed; a port is a set of elements keyed by its name, not its index,
//! so they are installed *before* the port exists (a tap the vmm opens later, a veth
//! about to be made) and the port is never up without them. Installing replaces a
//! port's elements in one transaction, so reinstalling (an instance restarted, its
//! monitor re-run) never opens a window; the rules live in the kernel, not in any
//! process, so an init restart leaves them as they are.

mod record;
mod rules;

pub use record::{netns_cookie, ROOT as RECORDS};
pub use rules::{
    elements, install_script, link_local, mark_of, remove_script, Conntrack, Element, Form,
    FW_TABLE, SHARDS, TABLE,
};

use spec::{Firewall, IpConfig, Nic, NicAllow};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// What one instance port may send and receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPolicy {
    /// The host-side interface name (veth end or tap).
    pub port: String,
    /// The nic's MAC: the only source MAC it may send.
    pub mac: [u8; 6],
    /// The nic's addresses: the only sources it may send from. A DHCP nic's are its
    /// leases, which its port's monitor learns by snooping ([`crate::snoop`]): none
    /// until its server has leased it one.
    pub addrs: Vec<IpAddr>,
    /// The nic gets its address by DHCP: its server's offers pass its firewall.
    pub dhcp: bool,
    /// The nic's relaxations of the antispoof rules.
    pub allow: NicAllow,
    /// The instance's firewall, when it has one.
    pub firewall: Option<Firewall>,
    /// The nic tag the port is on.
    pub tag: String,
    /// The port's VLAN of the tag (0: the untagged one).
    pub vlan: u16,
    /// The conntrack zone of the tag's VLAN: 0 until [`install`] gives it the number
    /// the node has for them.
    pub zone: u16,
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
            tag: nic.tag.clone(),
            vlan: nic.vlan,
            zone: 0,
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
    /// The port's name is not one skerry makes.
    #[error("port {port:?}: not an interface name (1-15 of A-Z a-z 0-9 _ - .)")]
    BadName {
        /// The name.
        port: String,
    },
    /// The record of the port's elements could not be read or written.
    #[error(
        "port {port}: the record of its rules (under {}): {source}",
        record::ROOT
    )]
    Record {
        /// The port.
        port: String,
        /// Why.
        #[source]
        source: std::io::Error,
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
/// Most of nft's output read: `nft list tables`, a line a table (a node has a few).
const MAX_OUTPUT: u64 = 64 * 1024;

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
    nft(port, script, false)
}

/// Has the kernel judge `script` as [`apply`] would, without committing any of it.
fn check(port: &str, script: &str) -> Result<(), IsolationError> {
    nft(port, script, true)
}

fn nft(port: &str, script: &str, check_only: bool) -> Result<(), IsolationError> {
    let args: &[&str] = match check_only {
        true => &["-c", "-f", "-"],
        false => &["-f", "-"],
    };
    run_nft(port, args, script, Print::Errors).map(drop)
}

/// Which of nft's outputs [`run_nft`] reads: one alone, to its end, so nft never
/// waits on a full pipe that nobody reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Print {
    /// Its error output, for the error (a script: nft prints nothing else).
    Errors,
    /// What it prints (a listing); a failure is then told by its exit status.
    Output,
}

/// Runs `nft ARGS` with `input` on its stdin; with [`Print::Output`] what it printed
/// (at most [`MAX_OUTPUT`]), or why it failed (with [`Print::Errors`], its error
/// output, at most [`MAX_STDERR`]).
fn run_nft(port: &str, args: &[&str], input: &str, print: Print) -> Result<String, IsolationError> {
    let nft = nft_binary(port)?;
    let spawn = |source| IsolationError::Spawn {
        port: port.to_owned(),
        nft: nft.clone(),
        source,
    };
    let mut child = Command::new(&nft)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(match print {
            Print::Output => Stdio::piped(),
            Print::Errors => Stdio::null(),
        })
        .stderr(match print {
            Print::Errors => Stdio::piped(),
            Print::Output => Stdio::null(),
        })
        .spawn()
        .map_err(spawn)?;
    // nft reads its whole input before it prints anything.
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(input.as_bytes()));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    // A pipe cut short is closed here: nft stops rather than waits.
    if let Some(out) = child.stdout.take() {
        let _ = out.take(MAX_OUTPUT).read_to_string(&mut stdout);
    }
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
        let why = match print {
            Print::Errors => stderr.trim().to_owned(),
            Print::Output => format!("nft {}: {status}", args.join(" ")),
        };
        return Err(IsolationError::Refused {
            port: port.to_owned(),
            stderr: why,
        });
    }
    Ok(stdout)
}

impl Conntrack {
    /// What this kernel offers, asked once per process: whether nf_tables takes a
    /// `ct` expression in a bridge-family chain (`nft --check`: the kernel judges the
    /// transaction and commits nothing; asking loads nf_conntrack_bridge when it is a
    /// module not yet loaded). When it cannot be asked (no nft), br_netfilter, whose
    /// own errors then name what is missing.
    pub fn of_kernel() -> Conntrack {
        static KERNEL: OnceLock<Conntrack> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            let probe = "add table bridge skerry_probe\n\
                add chain bridge skerry_probe forward { type filter hook forward priority 0; }\n\
                add rule bridge skerry_probe forward ct state established accept\n";
            match check("probe", probe) {
                Ok(()) => Conntrack::Bridge,
                Err(_) => Conntrack::BrNetfilter,
            }
        })
    }
}

/// Bridged IPv4/IPv6 go through the inet hooks (and conntrack): the firewall's
/// stateful half depends on it where the bridge family has no conntrack.
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

/// Whether `port` is an interface name skerry makes (it is put in scripts and used as
/// a file name).
fn check_name(port: &str) -> Result<(), IsolationError> {
    let ok = (1..=15).contains(&port.len())
        && !port.starts_with('.')
        && port
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    match ok {
        true => Ok(()),
        false => Err(IsolationError::BadName {
            port: port.chars().take(32).collect(),
        }),
    }
}

/// The orders in which to delete what the record says the kernel may hold for a
/// port, each with whether it is exact: one candidate is; of several, the kernel holds
/// one, and its elements must go before any other candidate's are added (they may
/// overlap), so each candidate is tried first in turn, followed by the others.
fn deletion_orders(candidates: &[Vec<Element>]) -> Vec<(Vec<Element>, bool)> {
    match candidates {
        [] => vec![(vec![], true)],
        [one] => vec![(one.clone(), true)],
        _ => (0..candidates.len())
            .map(|first| {
                let mut order: Vec<Element> = vec![];
                let rest = candidates.iter().enumerate().filter(|(i, _)| *i != first);
                for e in candidates[first].iter().chain(rest.flat_map(|(_, c)| c)) {
                    if !order.contains(e) {
                        order.push(e.clone());
                    }
                }
                (order, false)
            })
            .collect(),
    }
}

/// Where the caller's network namespace has the firewall's table, if anywhere: read
/// from `nft list tables` (the tables alone, bounded).
fn held_firewall(port: &str) -> Result<Option<Conntrack>, IsolationError> {
    run_nft(port, &["list", "tables"], "", Print::Output).map(|tables| firewall_in(&tables))
}

/// Where `nft list tables` (its output `tables`) has the firewall's table.
fn firewall_in(tables: &str) -> Option<Conntrack> {
    [Conntrack::Bridge, Conntrack::BrNetfilter]
        .into_iter()
        .find(|ct| {
            let line = format!("table {} {FW_TABLE}", ct.family());
            tables.lines().any(|l| l.trim() == line)
        })
}

/// Runs the script `script_for` makes for each of `orders` until one applies (a
/// wrong order fails as a whole: the kernel refuses an element overlapping one it
/// holds); the error of the first when none does. Each is tried in
/// [`Form::Elements`], then, if that is refused, in [`Form::Full`] (the tables are not
/// there yet, or not all of them), told where the namespace's firewall is.
fn apply_first(
    port: &str,
    orders: &[(Vec<Element>, bool)],
    script_for: impl Fn(&[Element], bool, Form) -> String,
) -> Result<(), IsolationError> {
    let mut first_err = None;
    for (old, exact) in orders {
        let applied = apply(port, &script_for(old, *exact, Form::Elements)).or_else(|_| {
            let held = held_firewall(port)?;
            apply(port, &script_for(old, *exact, Form::Full(held)))
        });
        match applied {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.expect("at least one order"))
}

/// Puts `p`'s rules in place (replacing any the port had), in one transaction.
pub fn install(p: &PortPolicy) -> Result<(), IsolationError> {
    install_with(p, Conntrack::of_kernel())
}

/// [`install`] with the firewall where `ct` says rather than where the kernel allows
/// best: for benchmarks comparing the two on one kernel (a kernel without
/// nf_conntrack_bridge refuses [`Conntrack::Bridge`]). A namespace keeps to one.
pub fn install_with(p: &PortPolicy, ct: Conntrack) -> Result<(), IsolationError> {
    check_name(&p.port)?;
    if p.firewall.is_some() && ct == Conntrack::BrNetfilter {
        bridge_netfilter_on(&p.port)?;
    }
    let port = &p.port;
    let rec = |source| IsolationError::Record {
        port: port.clone(),
        source,
    };
    let records = record::Records::lock().map_err(rec)?;
    let olds = records.read(port).map_err(rec)?;
    let zone = match ct {
        Conntrack::Bridge => records.zone(&p.tag, p.vlan).map_err(rec)?,
        // br_netfilter's conntrack is in the inet hooks, which see the bridge, not
        // the port (host/README.md, "Conntrack zones").
        Conntrack::BrNetfilter => 0,
    };
    let new = elements(&PortPolicy { zone, ..p.clone() }, ct);
    // The mark's claim goes into the record only once the kernel has taken it: until
    // then the claim may be another port's (a hash collision), not this port's to
    // delete.
    let unclaimed: Vec<Element> = new.iter().filter(|e| !e.is_mark_claim()).cloned().collect();
    let mut pending: Vec<&[Element]> = olds.iter().map(Vec::as_slice).collect();
    pending.push(&unclaimed);
    records.write(port, &pending).map_err(rec)?;
    let orders = deletion_orders(&olds);
    match apply_first(port, &orders, |old, exact, form| {
        install_script(&new, old, exact, form)
    }) {
        Ok(_) => records.write(port, &[&new]).map_err(rec),
        // Nothing of it applied: the kernel holds what it held.
        Err(e) if olds.is_empty() => {
            records.forget(port).map_err(rec)?;
            Err(e)
        }
        Err(e) => {
            let olds: Vec<&[Element]> = olds.iter().map(Vec::as_slice).collect();
            records.write(port, &olds).map_err(rec)?;
            Err(e)
        }
    }
}

/// Removes every rule of `port`; a port without rules is no error.
pub fn remove(port: &str) -> Result<(), IsolationError> {
    check_name(port)?;
    let rec = |source| IsolationError::Record {
        port: port.to_owned(),
        source,
    };
    let records = record::Records::lock().map_err(rec)?;
    let olds = records.read(port).map_err(rec)?;
    if olds.iter().all(Vec::is_empty) {
        return records.forget(port).map_err(rec);
    }
    apply_first(port, &deletion_orders(&olds), |old, _, form| {
        remove_script(old, form)
    })?;
    records.forget(port).map_err(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firewall_is_found_in_the_list_of_tables() {
        let bridge = "table bridge skerry\ntable bridge skerry_fw\n";
        assert_eq!(firewall_in(bridge), Some(Conntrack::Bridge));
        let inet = "table ip nat\ntable bridge skerry\ntable inet skerry_fw\n";
        assert_eq!(firewall_in(inet), Some(Conntrack::BrNetfilter));
        // Not another table whose name starts the same, nor none at all.
        assert_eq!(
            firewall_in("table bridge skerry\ntable inet skerry_fw2\n"),
            None
        );
        assert_eq!(firewall_in(""), None);
    }
}
