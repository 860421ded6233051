//! The kernel command line, as far as init cares.

use crate::net::IfaceAddr;
use std::net::Ipv4Addr;

/// Where the pool is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolSource {
    /// A filesystem label (`LABEL=zones`).
    Label(String),
    /// A device path (`/dev/vdb`).
    Device(String),
}

/// How the node's network comes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpMode {
    /// No `ip=`: DHCP on the first interface that has a cable, if any.
    Auto,
    /// `ip=off` / `ip=none`.
    Off,
    /// `ip=dhcp` (on a named device, or all).
    Dhcp(Option<String>),
    /// `ip=<client>:<server>:<gw>:<netmask>:<host>:<dev>:...`.
    Static {
        /// Address and gateway (interface empty when the kernel syntax omits it).
        addr: IfaceAddr,
        /// Hostname field.
        hostname: Option<String>,
        /// DNS servers.
        dns: Vec<Ipv4Addr>,
    },
}

/// What init reads from /proc/cmdline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// `skerry.pool=` (default `LABEL=zones`).
    pub pool: PoolSource,
    /// `skerry.pool.format=ext4`: format the pool device when it is blank.
    pub pool_format: Option<String>,
    /// `skerry.manifests=URL`.
    pub manifests_url: Option<String>,
    /// `skerry.sources=URL[,URL]`.
    pub sources: Vec<String>,
    /// `ip=`.
    pub ip: IpMode,
    /// `skerry.modules=a,b`: modules to load beyond the default set.
    pub modules: Vec<String>,
    /// `skerry.module-loaders=N` (1 to 16): how many modules load at once; the
    /// default is one per CPU (at least 2). 1 loads them one after the other, for a
    /// VM whose vCPUs its host deschedules (build-image/README.md measures both).
    pub module_loaders: Option<usize>,
    /// `skerry.shell`: open a shell on the console even when boot succeeded.
    pub shell: bool,
    /// `skerry.ssh-key=` (repeatable): keys allowed to log in as root over SSH, for a
    /// node whose pool has no `config/node.kdl` yet. See [`ssh_key_value`].
    pub ssh_keys: Vec<String>,
    /// Words left out rather than failing the whole command line (a bad
    /// `skerry.ssh-key=`: a typo in a key must not cost the node its `ip=` and pool).
    pub ignored: Vec<CmdlineError>,
}

/// A `skerry.*` or `ip=` word init cannot act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// `skerry.pool=` is neither a path nor `LABEL=`.
    #[error("skerry.pool={0}: expected a device path or LABEL=name")]
    Pool(String),
    /// `skerry.pool.format=` other than ext4.
    #[error("skerry.pool.format={0}: only ext4 is supported")]
    PoolFormat(String),
    /// `skerry.module-loaders=` that is not a number from 1 to 16.
    #[error("skerry.module-loaders={0}: expected a number from 1 to 16")]
    ModuleLoaders(String),
    /// A malformed `ip=`; says which field.
    #[error("ip={value}: {problem}")]
    Ip {
        /// The whole value.
        value: String,
        /// Which field is wrong.
        problem: &'static str,
    },
    /// A `skerry.ssh-key=` that is not one public key line.
    #[error("skerry.ssh-key={value}: {source}")]
    SshKey {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        source: crate::node_config::SshKeyError,
    },
}

impl Cmdline {
    /// Parses the command line; unknown words are the kernel's business.
    pub fn parse(text: &str) -> Result<Cmdline, CmdlineError> {
        let mut c = Cmdline {
            pool: PoolSource::Label("zones".into()),
            pool_format: None,
            manifests_url: None,
            sources: Vec::new(),
            ip: IpMode::Auto,
            modules: Vec::new(),
            module_loaders: None,
            shell: false,
            ssh_keys: Vec::new(),
            ignored: Vec::new(),
        };
        for word in words(text) {
            let word = word.as_str();
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match key {
                "skerry.pool" => {
                    c.pool = match value.strip_prefix("LABEL=") {
                        Some(l) => PoolSource::Label(l.to_string()),
                        None if value.starts_with('/') => PoolSource::Device(value.to_string()),
                        None => return Err(CmdlineError::Pool(value.to_string())),
                    }
                }
                "skerry.pool.format" => match value {
                    "ext4" => c.pool_format = Some(value.to_string()),
                    _ => return Err(CmdlineError::PoolFormat(value.to_string())),
                },
                "skerry.manifests" => c.manifests_url = Some(value.to_string()),
                "skerry.sources" => c.sources.extend(
                    value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                ),
                "skerry.modules" => c.modules.extend(
                    value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                ),
                "skerry.module-loaders" => match value.parse::<usize>() {
                    Ok(n @ 1..=16) => c.module_loaders = Some(n),
                    _ => c
                        .ignored
                        .push(CmdlineError::ModuleLoaders(value.to_string())),
                },
                "skerry.shell" => c.shell = true,
                "skerry.ssh-key" => match ssh_key_value(value) {
                    Ok(key) => c.ssh_keys.push(key),
                    Err(e) => c.ignored.push(e),
                },
                "ip" => c.ip = parse_ip(value)?,
                _ => {}
            }
        }
        Ok(c)
    }
}

/// The command line's words, split as the kernel splits them: at spaces outside
/// double quotes, the quotes removed (`a="b c"` is the one word `a=b c`).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    for ch in text.chars() {
        match ch {
            '"' => (quoted, any) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// A `skerry.ssh-key=` value: the public key line, either in the kernel's quotes
/// (`skerry.ssh-key="ssh-ed25519 AAAA... me@desk"`) or with its spaces written as
/// `%20` (`skerry.ssh-key=ssh-ed25519%20AAAA...%20me@desk`), for boot loaders that do
/// not pass quotes through. Any `%XX` is decoded; the line is then checked like a
/// node.kdl `ssh-key`.
pub fn ssh_key_value(value: &str) -> Result<String, CmdlineError> {
    let bad = |source| CmdlineError::SshKey {
        value: value.to_string(),
        source,
    };
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(crate::node_config::SshKeyError::BadEscape))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let key =
        String::from_utf8(out).map_err(|_| bad(crate::node_config::SshKeyError::BadEscape))?;
    crate::node_config::check_ssh_key(&key).map_err(bad)?;
    Ok(key)
}

/// The kernel's `ip=` syntax (Documentation/admin-guide/nfs/nfsroot.rst).
fn parse_ip(v: &str) -> Result<IpMode, CmdlineError> {
    match v {
        "off" | "none" => return Ok(IpMode::Off),
        "dhcp" | "on" | "any" | "both" | "bootp" | "rarp" => return Ok(IpMode::Dhcp(None)),
        _ => {}
    }
    let f: Vec<&str> = v.split(':').collect();
    let field = |i: usize| f.get(i).copied().filter(|s| !s.is_empty());
    let bad = |problem: &'static str| CmdlineError::Ip {
        value: v.to_string(),
        problem,
    };
    let autoconf = field(6);
    if field(0).is_none() || matches!(autoconf, Some("dhcp" | "on" | "any")) {
        return Ok(IpMode::Dhcp(field(5).map(str::to_string)));
    }
    let addr: Ipv4Addr = field(0)
        .unwrap_or_default()
        .parse()
        .map_err(|_| bad("client address is not an IPv4 address"))?;
    let gateway = field(2)
        .map(|g| g.parse().map_err(|_| bad("gateway is not an IPv4 address")))
        .transpose()?;
    let prefix = match field(3) {
        Some(m) => mask_prefix(m).ok_or_else(|| bad("netmask is not a valid mask"))?,
        None => 24,
    };
    let dns = [field(7), field(8)]
        .into_iter()
        .flatten()
        .map(|d| {
            d.parse()
                .map_err(|_| bad("dns server is not an IPv4 address"))
        })
        .collect::<Result<_, _>>()?;
    Ok(IpMode::Static {
        addr: IfaceAddr {
            iface: field(5).unwrap_or_default().to_string(),
            addr,
            prefix,
            gateway,
        },
        hostname: field(4).map(str::to_string),
        dns,
    })
}

/// `255.255.255.0` -> 24; a bare number is a prefix already.
pub fn mask_prefix(m: &str) -> Option<u8> {
    if let Ok(p) = m.parse::<u8>() {
        return (p <= 32).then_some(p);
    }
    spec::format::netmask_prefix(m)
}

/// `${mac}` and `${hostname}` substituted, matchbox-style (MAC with dashes, as
/// matchbox expects, e.g. `52-54-00-12-34-56`).
pub fn substitute(url: &str, mac: Option<&str>, hostname: Option<&str>) -> String {
    url.replace("${mac}", &mac.unwrap_or("").replace(':', "-"))
        .replace("${hostname}", hostname.unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_skerry_words() {
        let c = Cmdline::parse("console=ttyS0 quiet").unwrap();
        assert_eq!(c.pool, PoolSource::Label("zones".into()));
        assert_eq!(c.ip, IpMode::Auto);
        let c = Cmdline::parse(
            "skerry.pool=/dev/vdb skerry.pool.format=ext4 skerry.sources=http://a,http://b skerry.manifests=http://m/${mac}.kdl ip=dhcp",
        )
        .unwrap();
        assert_eq!(c.pool, PoolSource::Device("/dev/vdb".into()));
        assert_eq!(c.pool_format.as_deref(), Some("ext4"));
        assert_eq!(c.sources, vec!["http://a", "http://b"]);
        assert_eq!(c.manifests_url.as_deref(), Some("http://m/${mac}.kdl"));
        assert_eq!(c.ip, IpMode::Dhcp(None));
        assert!(Cmdline::parse("skerry.pool=zones").is_err());
        assert!(Cmdline::parse("skerry.pool.format=xfs").is_err());
    }

    #[test]
    fn kernel_ip_syntax() {
        let c =
            Cmdline::parse("ip=10.0.2.15::10.0.2.2:255.255.255.0:node1:eth0:off:10.0.2.3").unwrap();
        assert_eq!(
            c.ip,
            IpMode::Static {
                addr: IfaceAddr {
                    iface: "eth0".into(),
                    addr: "10.0.2.15".parse().unwrap(),
                    prefix: 24,
                    gateway: Some("10.0.2.2".parse().unwrap()),
                },
                hostname: Some("node1".into()),
                dns: vec!["10.0.2.3".parse().unwrap()],
            }
        );
        assert_eq!(
            Cmdline::parse("ip=:::::eth1:dhcp").unwrap().ip,
            IpMode::Dhcp(Some("eth1".into()))
        );
        assert!(Cmdline::parse("ip=10.0.2.15::10.0.2.2:255.0.255.0").is_err());
        assert_eq!(mask_prefix("255.255.240.0"), Some(20));
    }

    #[test]
    fn ssh_keys_in_quotes_or_percent_encoded() {
        let key = crate::node_config::tests::KEY;
        let c = Cmdline::parse(&format!(
            "console=ttyS0 skerry.ssh-key=\"{key}\" skerry.shell skerry.ssh-key={} quiet",
            key.replace(' ', "%20")
        ))
        .unwrap();
        assert_eq!(c.ssh_keys, vec![key.to_string(), key.to_string()]);
        assert!(c.shell, "the words after a quoted value are still read");
        // Neither a bare word, a bad escape nor two lines is a key: each is left out,
        // with an error naming the value, and the rest of the command line still counts.
        let two_lines = format!("{key}\n{key}")
            .replace(' ', "%20")
            .replace('\n', "%0A");
        let c = Cmdline::parse(&format!(
            "skerry.ssh-key=ssh-ed25519 skerry.ssh-key=ssh-ed25519%2 skerry.ssh-key={two_lines} ip=off"
        ))
        .unwrap();
        assert!(c.ssh_keys.is_empty(), "{:?}", c.ssh_keys);
        assert_eq!(c.ip, IpMode::Off);
        assert_eq!(c.ignored.len(), 3, "{:?}", c.ignored);
        let e = c.ignored[0].to_string();
        assert!(e.contains("skerry.ssh-key=ssh-ed25519:"), "{e}");
    }

    #[test]
    fn module_loaders_from_1_to_16() {
        assert_eq!(Cmdline::parse("ip=off").unwrap().module_loaders, None);
        let c = Cmdline::parse("skerry.module-loaders=1 ip=off").unwrap();
        assert_eq!(c.module_loaders, Some(1));
        for bad in ["0", "17", "two", ""] {
            let c = Cmdline::parse(&format!("skerry.module-loaders={bad} ip=off")).unwrap();
            assert_eq!(c.module_loaders, None, "{bad}");
            assert_eq!(c.ip, IpMode::Off, "the rest still counts");
            let e = c.ignored[0].to_string();
            assert!(
                e.starts_with(&format!("skerry.module-loaders={bad}:")),
                "{e}"
            );
        }
    }

    #[test]
    fn url_substitution() {
        assert_eq!(
            substitute(
                "http://h/m?mac=${mac}&h=${hostname}",
                Some("52:54:00:12:34:56"),
                Some("n1")
            ),
            "http://h/m?mac=52-54-00-12-34-56&h=n1"
        );
    }
}
