//! Typed instance specs: what a manifest asks for, defaults applied.

use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use uuid::Uuid;

/// One instance as the manifests declare it. The `name` is its identity on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// `[a-z0-9][a-z0-9-]{0,62}`, unique across all manifests of a node.
    pub name: String,
    /// Pinned UUID (`uuid "..."`); otherwise one is assigned at creation and kept in state.
    pub uuid: Option<Uuid>,
    /// `ensure "absent"` asks reconcile to delete the instance and its data.
    pub ensure: Ensure,
    /// Start at boot (default true).
    pub autoboot: bool,
    /// Image reference (required).
    pub image: ImageRef,
    /// Memory limit (zone) or guest RAM (hvm), bytes. Default 256M.
    pub memory: u64,
    /// Network interfaces, in declaration order.
    pub nics: Vec<Nic>,
    /// DNS resolvers written to the instance's resolv.conf.
    pub resolvers: Vec<IpAddr>,
    /// Free key/value strings visible inside the instance.
    pub metadata: BTreeMap<String, String>,
    /// `user-script`: SmartOS's first-boot script, run once per instance by the guest's
    /// agent; served as the `user-script` metadata key.
    #[serde(default)]
    pub user_script: Option<String>,
    /// `user-data`: free data for the guest (cloud-init's user data); served as the
    /// `user-data` metadata key.
    #[serde(default)]
    pub user_data: Option<String>,
    /// `ssh-key`s (`TYPE BASE64 [COMMENT]`), in declaration order; served one per line
    /// as the `root_authorized_keys` metadata key.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// `firewall { ... }`: inbound default deny with these allow rules; `None` = off.
    #[serde(default)]
    pub firewall: Option<Firewall>,
    /// What kind of instance, with its kind-specific properties.
    pub kind: Kind,
    /// Where this spec was declared.
    pub origin: Origin,
}

impl InstanceSpec {
    /// A zone named `name` running `image` with every other property at its default:
    /// what a manifest saying only `zone NAME { image ...; }` declares.
    pub fn zone(name: &str, image: ImageRef) -> InstanceSpec {
        InstanceSpec {
            name: name.to_string(),
            uuid: None,
            ensure: Ensure::Present,
            autoboot: true,
            image,
            memory: defaults::MEMORY,
            nics: vec![],
            resolvers: vec![],
            metadata: BTreeMap::new(),
            user_script: None,
            user_data: None,
            ssh_keys: Vec::new(),
            firewall: None,
            kind: Kind::Zone(ZoneSpec {
                cpu_cap: defaults::CPU_CAP,
                pids: defaults::PIDS,
                quota: None,
                hostname: name.to_string(),
                init: vec![defaults::INIT.to_string()],
                env: vec![],
                workdir: None,
                user: None,
            }),
            origin: Origin::default(),
        }
    }
}

/// The kind-specific part of an [`InstanceSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Kind {
    /// An OS container.
    Zone(ZoneSpec),
    /// A hardware VM driven by its own VMM process.
    Hvm(HvmSpec),
}

impl Kind {
    /// `zone` or `hvm`: the manifest node name, and the word in the API, logs and
    /// plans.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Zone(_) => "zone",
            Kind::Hvm(_) => "hvm",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Zone-only properties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneSpec {
    /// Percent of one CPU; 0 = no cap (default).
    pub cpu_cap: u32,
    /// Maximum number of tasks (default 2000).
    pub pids: u64,
    /// Writable-layer limit in bytes, where the pool filesystem supports it.
    pub quota: Option<u64>,
    /// Default: the instance name.
    pub hostname: String,
    /// Zone PID 1 and its arguments; default `["/sbin/init"]`.
    pub init: Vec<String>,
    /// Environment for the zone's init, in declaration order.
    pub env: Vec<(String, String)>,
    /// Directory the zone's init starts in (created when missing); `None`: `/`. Only
    /// an OCI image's `WorkingDir` sets it, together with its command: no manifest
    /// property does, and a manifest's `init` replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Who the zone's init runs as (`name`, `uid`, `uid:gid`, `name:group`, looked up
    /// in the image's /etc/passwd and /etc/group); `None`: root. Only an OCI image's
    /// `User` sets it, together with its command; a manifest's `init` replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// HVM-only properties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HvmSpec {
    /// Virtual CPUs (default 1).
    pub vcpus: u32,
    /// Percent of one CPU the guest's VMM process may use; 0 = no cap (default).
    /// Records written before HVMs had a cap read as uncapped.
    #[serde(default)]
    pub cpu_cap: u32,
    /// Disks in declaration order; at most one has `boot = true`.
    pub disks: Vec<Disk>,
    /// Appended to the guest kernel command line.
    pub cmdline: Option<String>,
}

/// A virtual disk of an HVM instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Disk name (`root`, `data`, ...), unique within the instance.
    pub name: String,
    /// The boot disk is cloned from the image; others are blank.
    pub boot: bool,
    /// Size in bytes; for the boot disk, the image is grown to it.
    pub size: Option<u64>,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Interface name inside the instance (`net0`).
    pub name: String,
    /// NIC tag: names the node bridge the interface is plugged into.
    pub tag: String,
    /// Address configuration.
    pub ip: IpConfig,
    /// Default gateway; inside the nic's subnet.
    pub gateway: Option<IpAddr>,
    /// Link MTU, if set.
    pub mtu: Option<u32>,
    /// MAC address, if pinned (`aa:bb:cc:dd:ee:ff`).
    pub mac: Option<MacAddr>,
    /// VLAN on the nic tag's network (`vlan=N`, SmartOS `vlan_id`); 0 = untagged.
    #[serde(default)]
    pub vlan: u16,
    /// Relaxations of the antispoof rules on this nic; none by default.
    #[serde(default)]
    pub allow: NicAllow,
}

impl Nic {
    /// A nic named `name` on `tag` with address configuration `ip`, and nothing else
    /// set: no gateway, MTU, pinned MAC, VLAN or antispoof relaxation.
    pub fn new(name: impl Into<String>, tag: impl Into<String>, ip: IpConfig) -> Nic {
        Nic {
            name: name.into(),
            tag: tag.into(),
            ip,
            gateway: None,
            mtu: None,
            mac: None,
            vlan: 0,
            allow: NicAllow::default(),
        }
    }
}

/// Largest VLAN id a nic may name (4095 is reserved by 802.1Q).
pub const MAX_VLAN: u16 = 4094;

/// Per-nic switches that turn off parts of the antispoof rules enforced on the host
/// side of every instance port (SmartOS's `allow_*` nic properties). All `false` by
/// default: an instance may only send as its own MAC and addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicAllow {
    /// `allow-ip-spoofing`: any IPv4/IPv6/ARP source address.
    #[serde(default)]
    pub ip_spoofing: bool,
    /// `allow-mac-spoofing`: any source MAC.
    #[serde(default)]
    pub mac_spoofing: bool,
    /// `allow-dhcp-spoofing`: DHCP server replies and IPv6 router advertisements.
    #[serde(default)]
    pub dhcp_spoofing: bool,
    /// `allow-restricted-traffic`: ethertypes other than IPv4, IPv6 and ARP.
    #[serde(default)]
    pub restricted_traffic: bool,
}

/// An instance firewall (`firewall { ... }`, SmartOS `firewall_enabled`): inbound
/// traffic is dropped unless a rule allows it; outbound is open; replies to allowed
/// or outbound connections pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    /// The `allow` rules, in declaration order.
    pub rules: Vec<FirewallRule>,
}

/// One `allow PROTO [port=N|"A-B"] [from="ADDR[/PREFIX]"]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    /// The protocol.
    pub proto: FirewallProto,
    /// Destination ports, inclusive (`tcp`/`udp` only); `None` = every port.
    pub ports: Option<(u16, u16)>,
    /// Source network; `None` = from anywhere.
    pub from: Option<(IpAddr, u8)>,
}

/// The protocols a firewall rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP and ICMPv6 (every type).
    Icmp,
}

impl FirewallProto {
    /// Every protocol, as manifests write them.
    pub const ALL: &'static [&'static str] = &["tcp", "udp", "icmp"];

    /// The manifest word.
    pub fn as_str(self) -> &'static str {
        match self {
            FirewallProto::Tcp => "tcp",
            FirewallProto::Udp => "udp",
            FirewallProto::Icmp => "icmp",
        }
    }

    /// The protocol a manifest word names.
    pub fn from_word(word: &str) -> Option<FirewallProto> {
        match word {
            "tcp" => Some(FirewallProto::Tcp),
            "udp" => Some(FirewallProto::Udp),
            "icmp" => Some(FirewallProto::Icmp),
            _ => None,
        }
    }
}

/// How a nic gets its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpConfig {
    /// No address configured.
    None,
    /// Run the instance's DHCP client.
    Dhcp,
    /// A static address in CIDR form.
    Static {
        /// The address.
        addr: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
}

/// Which image an instance runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageRef {
    /// By UUID.
    Uuid(Uuid),
    /// By name, with a version or the newest.
    Name {
        /// Image name.
        name: String,
        /// Exact version; `None` = newest.
        version: Option<String>,
    },
    /// An image in an OCI registry (`oci:REGISTRY/REPO:TAG` or `@sha256:DIGEST`).
    Oci(crate::oci::OciReference),
}

/// As a manifest writes it: `UUID`, `name@version`, `name` (the newest), or
/// `oci:REGISTRY/REPO:TAG`.
impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Uuid(u) => write!(f, "{u}"),
            ImageRef::Name {
                name,
                version: Some(v),
            } => write!(f, "{name}@{v}"),
            ImageRef::Name {
                name,
                version: None,
            } => f.write_str(name),
            ImageRef::Oci(r) => r.fmt(f),
        }
    }
}

/// Whether the instance should exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ensure {
    /// The instance exists (default).
    #[default]
    Present,
    /// Reconcile deletes the instance and its data.
    Absent,
}

/// Where a spec came from: a manifest file position, or an API call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Origin {
    /// The manifest file (empty when not from a file).
    pub file: PathBuf,
    /// 1-based line of the instance node.
    pub line: usize,
    /// 1-based column of the instance node.
    pub col: usize,
}

/// The defaults manifests/README.md documents, in one place.
pub mod defaults {
    /// 256 MiB.
    pub const MEMORY: u64 = 256 << 20;
    /// No CPU cap.
    pub const CPU_CAP: u32 = 0;
    /// Maximum tasks in a zone.
    pub const PIDS: u64 = 2000;
    /// The zone's init.
    pub const INIT: &str = "/sbin/init";
    /// vCPUs of an HVM instance.
    pub const VCPUS: u32 = 1;
    /// The smallest memory an instance may ask for (16 MiB).
    pub const MIN_MEMORY: u64 = 16 << 20;
}
