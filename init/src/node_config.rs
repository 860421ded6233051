//! `<pool>/config/node.kdl`: node settings (hostname, nic tags, resolvers, image
//! sources). Every property is optional; a missing file means all defaults.
//!
//! ```kdl
//! hostname "node1"
//! nic-tag "admin" link="eth0"          // bridge sk-admin, with eth0 enslaved
//! nic-tag "storage" bridge="br-stor"   // an explicit bridge name
//! resolver "10.88.0.1"
//! source "http://images.example:8080"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

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
}

impl NodeConfig {
    /// Reads `path`; a missing file is the default config.
    pub fn load(path: &Path) -> Result<NodeConfig, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                // FILE:LINE:COL, like every manifest error.
                spec::manifest::limits::check(&text).map_err(|e| {
                    format!("{}:{}:{}: {}", path.display(), e.line, e.col, e.message)
                })?;
                NodeConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeConfig::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Parses node.kdl text.
    pub fn parse(text: &str) -> Result<NodeConfig, String> {
        // kdl's parser recurses without a limit: refuse what could overflow the stack.
        spec::manifest::limits::check(text).map_err(|e| e.to_string())?;
        let doc: kdl::KdlDocument = text.parse().map_err(|e: kdl::KdlError| e.to_string())?;
        let mut cfg = NodeConfig::default();
        for node in doc.nodes() {
            let name = node.name().value();
            let arg = || -> Result<String, String> {
                node.entries()
                    .iter()
                    .find(|e| e.name().is_none())
                    .and_then(|e| e.value().as_string())
                    .map(str::to_string)
                    .ok_or_else(|| format!("`{name}` needs a string argument"))
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
                "nic-tag" => {
                    let tag = arg()?;
                    let bridge =
                        prop("bridge").unwrap_or_else(|| spec::monitor::default_bridge_name(&tag));
                    if bridge.len() > 15 {
                        return Err(format!(
                            "nic-tag {tag}: bridge name {bridge:?} is longer than 15 bytes"
                        ));
                    }
                    cfg.nic_tags.insert(
                        tag,
                        NicTag {
                            bridge,
                            link: prop("link"),
                        },
                    );
                }
                other => {
                    return Err(format!(
                        "unknown setting `{other}` (known: hostname, nic-tag, resolver, source)"
                    ))
                }
            }
        }
        Ok(cfg)
    }

    /// The bridge (and uplink) for `tag`: as configured, or `sk-<tag>` alone.
    pub fn nic_tag(&self, tag: &str) -> NicTag {
        self.nic_tags.get(tag).cloned().unwrap_or_else(|| NicTag {
            bridge: spec::monitor::default_bridge_name(tag),
            link: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn unknown_settings_are_named() {
        let e = NodeConfig::parse("hostnme \"x\"").unwrap_err();
        assert!(e.contains("hostnme"), "{e}");
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
        assert!(e.contains("nested deeper"), "{e}");
    }
}
