//! `<pool>/config/node.kdl`: node settings (hostname, nic tags, resolvers, image
//! sources). Every property is optional; a missing file means all defaults.
//!
//! ```kdl
//! hostname "node1"
//! nic-tag "admin" link="eth0"          // bridge sk-admin, with eth0 enslaved
//! nic-tag "storage" bridge="br-stor"   // an explicit bridge name
//! resolver "10.88.0.1"
//! source "http://images.example:8080"
//! metrics listen="0.0.0.0:9187"         // the Prometheus endpoint (off without it)
//! ssh-key "ssh-ed25519 AAAAC3Nza... op@desk"  // may log in as root over SSH; repeatable
//! apply imports=2 disks=2 starts=16    // how much of a reconcile runs at once
//! import-memory "512M"                 // the memory cap of each imgadm import child
//! ```

use crate::concurrency::{Concurrency, MAX_LIMIT};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why node.kdl cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    /// The file exists but cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// node.kdl.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is past the limits checked before parsing; names FILE:LINE:COL.
    #[error("{}:{source}", path.display())]
    TooComplex {
        /// node.kdl.
        path: PathBuf,
        /// Where and which limit.
        source: spec::manifest::limits::LimitError,
    },
    /// The file is not valid node.kdl; names the file.
    #[error("{}: {source}", path.display())]
    Invalid {
        /// node.kdl.
        path: PathBuf,
        /// What is wrong.
        source: NodeConfigProblem,
    },
}

/// What is wrong with node.kdl text.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigProblem {
    /// Past the limits that keep the KDL parser from overflowing the stack.
    #[error("{0}")]
    TooComplex(#[from] spec::manifest::limits::LimitError),
    /// Not KDL.
    #[error("{0}")]
    Syntax(#[from] kdl::KdlError),
    /// A setting without its string argument.
    #[error("`{0}` needs a string argument")]
    NoArgument(String),
    /// A bridge name Linux would refuse.
    #[error("nic-tag {tag}: bridge name {bridge:?} is longer than 15 bytes")]
    BridgeNameTooLong {
        /// The nic tag.
        tag: String,
        /// The bridge name.
        bridge: String,
    },
    /// `metrics` without a usable `listen="ADDR:PORT"`.
    #[error("metrics: listen={0:?} is not ADDR:PORT (e.g. listen=\"0.0.0.0:9187\")")]
    BadListen(String),
    /// An `ssh-key` that is not one public key line.
    #[error("ssh-key {key:?}: {source}")]
    SshKey {
        /// The start of the value (a key can be long).
        key: String,
        /// What is wrong with it.
        source: SshKeyError,
    },
    /// A size that does not parse.
    #[error("{setting}: {value:?} is not a size (like 8G)")]
    BadSize {
        /// The setting.
        setting: String,
        /// What it said.
        value: String,
    },
    /// A limit of `apply` that is not a whole number in range.
    #[error("apply {key}: expected a whole number from 1 to {MAX_LIMIT}")]
    BadLimit {
        /// `imports`, `disks` or `starts`.
        key: String,
    },
    /// A setting we do not know.
    #[error("unknown setting `{0}` (known: hostname, nic-tag, resolver, source, metrics, ssh-key, zone-quota, apply, import-memory)")]
    Unknown(String),
}

/// Why a value is not an SSH public key line (`TYPE BASE64 [COMMENT]`, as in
/// `authorized_keys` but without options).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshKeyError {
    /// Longer than [`MAX_SSH_KEY`].
    #[error("longer than {MAX_SSH_KEY} bytes")]
    TooLong,
    /// Not a key by the manifests' rule (`spec::customer::check_ssh_key`): one line,
    /// a known type (so no authorized_keys options), base64 of a key of that type.
    #[error("{0}")]
    Invalid(String),
    /// A `%` not followed by two hex digits (kernel command line only).
    #[error("a % not followed by two hex digits, or not UTF-8 once decoded")]
    BadEscape,
}

/// The longest key line accepted (an RSA 16384-bit key is about 2.8 KiB).
pub const MAX_SSH_KEY: usize = 8192;

/// Checks that `key` is one SSH public key line, as a manifest's `ssh-key` is checked.
pub fn check_ssh_key(key: &str) -> Result<(), SshKeyError> {
    if key.len() > MAX_SSH_KEY {
        return Err(SshKeyError::TooLong);
    }
    match spec::customer::check_ssh_key(key) {
        Some(why) => Err(SshKeyError::Invalid(why)),
        None => Ok(()),
    }
}

/// What one nic tag maps to on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicTag {
    /// The bridge instances with this tag are plugged into.
    pub bridge: String,
    /// A host link to enslave to the bridge (the node's uplink), if any.
    pub link: Option<String>,
}

/// Parsed node.kdl.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// Node hostname.
    pub hostname: Option<String>,
    /// Configured nic tags.
    pub nic_tags: BTreeMap<String, NicTag>,
    /// Node resolvers.
    pub resolvers: Vec<String>,
    /// Extra image source URLs.
    pub sources: Vec<String>,
    /// Where the Prometheus endpoint listens; none = no endpoint.
    pub metrics: Option<std::net::SocketAddr>,
    /// Public keys that may log in as root over SSH (`ssh-key`, repeatable).
    pub ssh_keys: Vec<String>,
    /// `zone-quota "SIZE"`: the writable-layer quota of a zone whose manifest sets
    /// none.
    pub zone_quota: Option<u64>,
    /// How many imports, disk preparations and starts a reconcile runs at once.
    pub concurrency: Concurrency,
    /// `import-memory "SIZE"`: the memory cap of each import child, when not the
    /// default (`import_child::ChildLimits`).
    pub import_memory: Option<u64>,
}

impl NodeConfig {
    /// Reads `path` (never more than the 1 MiB a KDL text may hold, plus a byte to
    /// tell it is more); a missing file is the default config.
    pub fn load(path: &Path) -> Result<NodeConfig, NodeConfigError> {
        match spec::manifest::read_text(path) {
            Ok(text) => {
                // FILE:LINE:COL, like every manifest error.
                spec::manifest::limits::check(&text).map_err(|source| {
                    NodeConfigError::TooComplex {
                        path: path.to_path_buf(),
                        source,
                    }
                })?;
                NodeConfig::parse(&text).map_err(|source| NodeConfigError::Invalid {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeConfig::default()),
            Err(source) => Err(NodeConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses node.kdl text.
    pub fn parse(text: &str) -> Result<NodeConfig, NodeConfigProblem> {
        // kdl's parser recurses without a limit: refuse what could overflow the stack.
        spec::manifest::limits::check(text)?;
        let doc: kdl::KdlDocument = text.parse()?;
        let mut cfg = NodeConfig::default();
        for node in doc.nodes() {
            let name = node.name().value();
            let arg = || -> Result<String, NodeConfigProblem> {
                node.entries()
                    .iter()
                    .find(|e| e.name().is_none())
                    .and_then(|e| e.value().as_string())
                    .map(str::to_string)
                    .ok_or_else(|| NodeConfigProblem::NoArgument(name.to_string()))
            };
            let prop = |key: &str| {
                node.entries()
                    .iter()
                    .find(|e| e.name().map(|n| n.value()) == Some(key))
                    .and_then(|e| e.value().as_string())
                    .map(str::to_string)
            };
            match name {
                "hostname" => cfg.hostname = Some(arg()?),
                "resolver" => cfg.resolvers.push(arg()?),
                "source" => cfg.sources.push(arg()?),
                "ssh-key" => {
                    let key = arg()?;
                    check_ssh_key(&key).map_err(|source| NodeConfigProblem::SshKey {
                        key: key.chars().take(40).collect(),
                        source,
                    })?;
                    cfg.ssh_keys.push(key);
                }
                "zone-quota" | "import-memory" => {
                    let value = arg()?;
                    let size = spec::format::parse_size(&value).map_err(|_| {
                        NodeConfigProblem::BadSize {
                            setting: name.to_string(),
                            value: value.clone(),
                        }
                    })?;
                    if name == "zone-quota" {
                        cfg.zone_quota = Some(size);
                    } else {
                        cfg.import_memory = Some(size);
                    }
                }
                "nic-tag" => {
                    let tag = arg()?;
                    let bridge =
                        prop("bridge").unwrap_or_else(|| monitor::default_bridge_name(&tag));
                    if bridge.len() > 15 {
                        return Err(NodeConfigProblem::BridgeNameTooLong { tag, bridge });
                    }
                    cfg.nic_tags.insert(
                        tag,
                        NicTag {
                            bridge,
                            link: prop("link"),
                        },
                    );
                }
                "metrics" => {
                    let listen = prop("listen").unwrap_or_default();
                    cfg.metrics = Some(
                        listen
                            .parse()
                            .map_err(|_| NodeConfigProblem::BadListen(listen))?,
                    );
                }
                "apply" => cfg.concurrency = apply_limits(node, cfg.concurrency)?,
                other => return Err(NodeConfigProblem::Unknown(other.to_string())),
            }
        }
        Ok(cfg)
    }

    /// The bridge (and uplink) for `tag`: as configured, or `sk-<tag>` alone.
    pub fn nic_tag(&self, tag: &str) -> NicTag {
        self.nic_tags.get(tag).cloned().unwrap_or_else(|| NicTag {
            bridge: monitor::default_bridge_name(tag),
            link: None,
        })
    }
}

/// `apply imports=N disks=N starts=N`: each given limit replaces its default.
fn apply_limits(node: &kdl::KdlNode, mut c: Concurrency) -> Result<Concurrency, NodeConfigProblem> {
    for e in node.entries() {
        let Some(key) = e.name().map(|n| n.value()) else {
            return Err(NodeConfigProblem::BadLimit {
                key: "(an argument)".into(),
            });
        };
        let bad = || NodeConfigProblem::BadLimit { key: key.into() };
        let n = e
            .value()
            .as_integer()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(bad)?;
        match key {
            "imports" => c.imports = n,
            "disks" => c.disks = n,
            "starts" => c.starts = n,
            _ => return Err(bad()),
        }
    }
    Ok(c)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// node.kdl is read only up to the limit: an endless file (here /dev/zero) is
    /// refused at 1 MiB with its line and column instead of filling PID 1's memory.
    #[test]
    fn an_endless_node_kdl_is_refused_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.kdl");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = NodeConfig::load(&path).unwrap_err();
        assert!(matches!(err, NodeConfigError::TooComplex { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("node.kdl:1:1048577: the text goes on past"),
            "{text}"
        );
    }

    #[test]
    fn parses_settings_and_defaults_bridges() {
        let cfg = NodeConfig::parse(
            "hostname \"n1\"\nnic-tag \"admin\" link=\"eth0\"\nnic-tag \"stor\" bridge=\"br9\"\nsource \"http://x\"\n",
        )
        .unwrap();
        assert_eq!(cfg.hostname.as_deref(), Some("n1"));
        assert_eq!(
            cfg.nic_tag("admin"),
            NicTag {
                bridge: "sk-admin".into(),
                link: Some("eth0".into())
            }
        );
        assert_eq!(cfg.nic_tag("stor").bridge, "br9");
        assert_eq!(cfg.nic_tag("other").bridge, "sk-other");
        assert_eq!(cfg.sources, vec!["http://x".to_string()]);
        assert_eq!(cfg.zone_quota, None);
        let cfg = NodeConfig::parse("zone-quota \"8G\"\n").unwrap();
        assert_eq!(cfg.zone_quota, Some(8 << 30));
        let e = NodeConfig::parse("zone-quota \"lots\"\n").unwrap_err();
        assert!(e.to_string().contains("not a size"), "{e}");
    }

    /// A real key (manifests/guest-setup.kdl's).
    pub(crate) const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPTlaXfXGmWO0/kUFKX0YQX/QTGxiNTFhEFN+D8Kgst1 op@desk";

    #[test]
    fn ssh_keys_are_repeatable_and_checked() {
        let cfg = NodeConfig::parse(&format!("ssh-key \"{KEY}\"\nssh-key \"{KEY} 2\"\n")).unwrap();
        assert_eq!(cfg.ssh_keys, vec![KEY.to_string(), format!("{KEY} 2")]);
        for (bad, why) in [
            ("ssh-ed25519", "TYPE BASE64"),
            ("command=\\\"sh\\\" ssh-ed25519 AAAA", "not an SSH key type"),
            (&format!("{KEY}\\n{KEY}"), "one line"),
            ("ssh-ed25519 AA$A", "not base64"),
        ] {
            let e = NodeConfig::parse(&format!("ssh-key \"{bad}\"")).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        let long = format!("{KEY} {}", "x".repeat(MAX_SSH_KEY));
        assert_eq!(check_ssh_key(&long), Err(SshKeyError::TooLong));
    }

    #[test]
    fn metrics_listen_is_an_address_and_port() {
        let cfg = NodeConfig::parse("metrics listen=\"127.0.0.1:9187\"").unwrap();
        assert_eq!(cfg.metrics, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(NodeConfig::parse("").unwrap().metrics, None);
        for bad in [
            "metrics",
            "metrics listen=\"9187\"",
            "metrics listen=\"host:x\"",
        ] {
            let e = NodeConfig::parse(bad).unwrap_err();
            assert!(e.to_string().contains("is not ADDR:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn apply_limits_replace_the_defaults_and_are_bounded() {
        let cfg = NodeConfig::parse("apply imports=1 starts=64\n").unwrap();
        assert_eq!(
            cfg.concurrency,
            Concurrency {
                imports: 1,
                starts: 64,
                ..Concurrency::default()
            }
        );
        assert_eq!(NodeConfig::parse("").unwrap().concurrency.disks, 2);
        for bad in [
            "apply starts=0",
            "apply disks=100000",
            "apply imports=\"2\"",
            "apply cpus=2",
        ] {
            let e = NodeConfig::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("apply "), "{bad}: {e}");
        }
    }

    #[test]
    fn import_memory_is_a_size() {
        let cfg = NodeConfig::parse("import-memory \"160M\"\n").unwrap();
        assert_eq!(cfg.import_memory, Some(160 << 20));
        assert_eq!(NodeConfig::parse("").unwrap().import_memory, None);
        let e = NodeConfig::parse("import-memory \"lots\"\n").unwrap_err();
        assert!(e.to_string().contains("import-memory"), "{e}");
    }

    #[test]
    fn unknown_settings_are_named() {
        let e = NodeConfig::parse("hostnme \"x\"").unwrap_err();
        assert!(e.to_string().contains("hostnme"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // On a stack far too small for kdl to recurse through 100000 blocks.
        let e = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| NodeConfig::parse(&"hostname {".repeat(100_000)).unwrap_err())
            .unwrap()
            .join()
            .unwrap();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }
}
