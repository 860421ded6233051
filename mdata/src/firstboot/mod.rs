//! The first-boot agent: reads the instance's metadata and configures the guest from
//! it, as SmartOS images' `mdata-fetch`/`mdata-execute` services and cloud-init do:
//! hostname (`sdc:hostname`), root's SSH keys (`root_authorized_keys`), every nic,
//! route and resolver (`sdc:nics`, `sdc:routes`, `sdc:resolvers`), and `user-script`,
//! run once per instance (keyed by `sdc:uuid`).
//!
//! [`fetch`] reads the metadata, [`plan`] turns it into [`Step`]s (pure, so tested on
//! its own), [`apply`](apply::apply) carries them out under a root directory.

pub mod apply;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::client::{Client, ClientError, Response};

/// Why the agent could not read or use the metadata.
#[derive(Debug, thiserror::Error)]
pub enum FirstbootError {
    /// The metadata server could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server refused a GET.
    #[error("metadata server refused GET {key}: {message}")]
    Refused {
        /// The key.
        key: String,
        /// Its answer.
        message: String,
    },
    /// `sdc:uuid` is missing: without it, "once per instance" means nothing.
    #[error("the metadata has no sdc:uuid")]
    NoUuid,
    /// A JSON key (`sdc:nics`...) does not parse.
    #[error("metadata key {key} is not the JSON SmartOS serves: {source}")]
    Json {
        /// The key.
        key: String,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Something the agent reads metadata from: the metadata server, or a map in tests.
pub trait MetadataSource {
    /// The value of `key`, `None` when the server says NOTFOUND.
    fn get(&mut self, key: &str) -> Result<Option<String>, FirstbootError>;
}

impl MetadataSource for Client {
    fn get(&mut self, key: &str) -> Result<Option<String>, FirstbootError> {
        match Client::get(self, key)? {
            Response::Success(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Response::NotFound => Ok(None),
            other => Err(FirstbootError::Refused {
                key: key.to_string(),
                message: format!("{other:?}"),
            }),
        }
    }
}

impl MetadataSource for BTreeMap<String, String> {
    fn get(&mut self, key: &str) -> Result<Option<String>, FirstbootError> {
        Ok(BTreeMap::get(self, key).cloned())
    }
}

/// One `sdc:nics` entry, the fields the agent uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NicConfig {
    /// SmartOS's name for it (`net0`): used when no link has its MAC.
    pub interface: String,
    /// Its MAC address: how the agent finds the link.
    #[serde(default)]
    pub mac: String,
    /// Addresses with prefix, or `dhcp`.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Gateways.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Whether it carries the default route.
    #[serde(default)]
    pub primary: bool,
    /// MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// One `sdc:routes` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RouteConfig {
    /// Destination.
    pub dst: String,
    /// Next hop, or (link-local) the address of the nic to route out of.
    pub gateway: String,
    /// Whether `gateway` names a local nic rather than a router.
    #[serde(default)]
    pub linklocal: bool,
}

/// Everything the agent reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `sdc:uuid`.
    pub uuid: String,
    /// `sdc:hostname`.
    pub hostname: Option<String>,
    /// `sdc:dns_domain`.
    pub dns_domain: Option<String>,
    /// `root_authorized_keys`.
    pub authorized_keys: Option<String>,
    /// `sdc:nics`.
    pub nics: Vec<NicConfig>,
    /// `sdc:routes`.
    pub routes: Vec<RouteConfig>,
    /// `sdc:resolvers`.
    pub resolvers: Vec<String>,
    /// `user-script`.
    pub user_script: Option<String>,
}

fn json<T: for<'de> Deserialize<'de> + Default>(
    src: &mut dyn MetadataSource,
    key: &str,
) -> Result<T, FirstbootError> {
    match src.get(key)? {
        Some(text) => serde_json::from_str(&text).map_err(|source| FirstbootError::Json {
            key: key.to_string(),
            source,
        }),
        None => Ok(T::default()),
    }
}

/// Reads every key the agent uses.
pub fn fetch(src: &mut dyn MetadataSource) -> Result<Facts, FirstbootError> {
    let trimmed = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    Ok(Facts {
        uuid: trimmed(src.get("sdc:uuid")?).ok_or(FirstbootError::NoUuid)?,
        hostname: trimmed(src.get("sdc:hostname")?),
        dns_domain: trimmed(src.get("sdc:dns_domain")?),
        authorized_keys: src.get("root_authorized_keys")?,
        nics: json(src, "sdc:nics")?,
        routes: json(src, "sdc:routes")?,
        resolvers: json(src, "sdc:resolvers")?,
        user_script: src.get("user-script")?.filter(|s| !s.trim().is_empty()),
    })
}

/// One thing to do. Paths are inside the root the agent configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write `/etc/hostname` and, on the live system, set the kernel's hostname.
    Hostname(String),
    /// Write a file (its directory created with `dir_mode` when missing).
    WriteFile {
        /// Where, relative to the root.
        path: PathBuf,
        /// What.
        contents: String,
        /// The file's mode.
        mode: u32,
        /// The mode of a directory created for it.
        dir_mode: u32,
    },
    /// Run the `ip` program with these arguments (a syntax busybox and iproute2 share).
    Ip(Vec<String>),
    /// Start a DHCP client on this link (busybox `udhcpc`, else `dhclient`).
    Dhcp(String),
    /// Run the user-script unless this instance already ran it.
    UserScript {
        /// The script.
        script: String,
        /// The instance, whose marker file says the script ran.
        uuid: String,
    },
    /// Something in the metadata the agent cannot act on, said aloud.
    Warn(String),
}

/// Where the agent keeps the user-script and its once-per-instance markers.
pub const STATE_DIR: &str = "var/lib/mdata-firstboot";

fn ip(args: &[&str]) -> Step {
    Step::Ip(args.iter().map(|s| s.to_string()).collect())
}

/// The steps that configure a guest with `links` (name, MAC) from `facts`.
pub fn plan(facts: &Facts, links: &[(String, String)]) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(h) = &facts.hostname {
        steps.push(Step::Hostname(h.clone()));
    }
    if let Some(keys) = &facts.authorized_keys {
        let mut contents = keys.clone();
        if !contents.ends_with('\n') {
            contents.push('\n');
        }
        steps.push(Step::WriteFile {
            path: "root/.ssh/authorized_keys".into(),
            contents,
            mode: 0o600,
            dir_mode: 0o700,
        });
    }
    // sdc:nics name nics as SmartOS does (net0...); the guest's links are found by MAC.
    let mut local = Vec::new(); // (address, link) for link-local routes
    let mut default_set = (false, false); // (v4, v6)
    for nic in &facts.nics {
        let by_mac = links
            .iter()
            .find(|(_, mac)| !nic.mac.is_empty() && mac.eq_ignore_ascii_case(&nic.mac));
        let by_name = links.iter().find(|(name, _)| *name == nic.interface);
        let Some((link, _)) = by_mac.or(by_name) else {
            steps.push(Step::Warn(format!(
                "no link with MAC {} for nic {}: left alone",
                nic.mac, nic.interface
            )));
            continue;
        };
        let link = link.as_str();
        if let Some(mtu) = nic.mtu {
            steps.push(ip(&["link", "set", "dev", link, "mtu", &mtu.to_string()]));
        }
        let statics: Vec<&String> = nic.ips.iter().filter(|a| *a != "dhcp").collect();
        if !statics.is_empty() {
            // Flush first so that a second boot does not fail on addresses it already has.
            steps.push(ip(&["addr", "flush", "dev", link]));
        }
        for addr in &statics {
            steps.push(ip(&["addr", "add", addr, "dev", link]));
            local.push((
                addr.split('/').next().unwrap_or(addr).to_string(),
                link.to_string(),
            ));
        }
        steps.push(ip(&["link", "set", "dev", link, "up"]));
        if nic.ips.iter().any(|a| a == "dhcp") {
            steps.push(Step::Dhcp(link.to_string()));
        }
        if nic.primary {
            for gw in &nic.gateways {
                let v6 = gw.contains(':');
                let done = if v6 {
                    &mut default_set.1
                } else {
                    &mut default_set.0
                };
                if !*done {
                    *done = true;
                    let family = if v6 { "-6" } else { "-4" };
                    steps.push(ip(&[
                        family, "route", "replace", "default", "via", gw, "dev", link,
                    ]));
                }
            }
        }
    }
    for r in &facts.routes {
        if r.linklocal {
            match local.iter().find(|(addr, _)| *addr == r.gateway) {
                Some((_, link)) => steps.push(ip(&["route", "replace", &r.dst, "dev", link])),
                None => steps.push(Step::Warn(format!(
                    "route to {}: no nic has address {}",
                    r.dst, r.gateway
                ))),
            }
        } else {
            steps.push(ip(&["route", "replace", &r.dst, "via", &r.gateway]));
        }
    }
    if !facts.resolvers.is_empty() {
        let mut conf = String::new();
        if let Some(d) = &facts.dns_domain {
            conf.push_str(&format!("search {d}\n"));
        }
        for r in &facts.resolvers {
            conf.push_str(&format!("nameserver {r}\n"));
        }
        steps.push(Step::WriteFile {
            path: "etc/resolv.conf".into(),
            contents: conf,
            mode: 0o644,
            dir_mode: 0o755,
        });
    }
    if let Some(script) = &facts.user_script {
        steps.push(Step::UserScript {
            script: script.clone(),
            uuid: facts.uuid.clone(),
        });
    }
    steps
}
