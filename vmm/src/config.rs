//! What one guest is made of, as given on the command line or by an instance config.

use std::path::PathBuf;

/// A virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Refuse guest writes.
    pub read_only: bool,
}

/// A virtio-net interface backed by a tap device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Host tap interface name (created if missing).
    pub tap: String,
    /// Guest MAC address.
    pub mac: [u8; 6],
    /// Bridge to plug the tap into (created if missing).
    pub bridge: Option<String>,
}

/// Everything needed to boot one guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// bzImage or ELF vmlinux.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPU count.
    pub vcpus: u8,
    /// Disks, in virtio order (the first is /dev/vda).
    pub disks: Vec<DiskConfig>,
    /// Network interfaces.
    pub nets: Vec<NetConfig>,
}

/// The command line a guest gets when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// A bad size, disk or MAC argument.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Parses `256M`, `1G`, `65536K`, or plain bytes: the project's one size dialect
/// ([`spec::format::parse_size`]).
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    spec::format::parse_size(s).map_err(|e| ConfigError(e.to_string()))
}

/// Parses `PATH[,ro]`.
pub fn parse_disk(s: &str) -> Result<DiskConfig, ConfigError> {
    let (path, opts) = match s.rsplit_once(',') {
        Some((p, o)) if o == "ro" || o == "rw" => (p, o),
        _ => (s, "rw"),
    };
    if path.is_empty() {
        return Err(ConfigError(format!("disk {s:?}: empty path")));
    }
    Ok(DiskConfig {
        path: PathBuf::from(path),
        read_only: opts == "ro",
    })
}

/// Parses `aa:bb:cc:dd:ee:ff` ([`spec::MacAddr`]).
pub fn parse_mac(s: &str) -> Result<[u8; 6], ConfigError> {
    s.parse::<spec::MacAddr>()
        .map(<[u8; 6]>::from)
        .map_err(|e| ConfigError(e.to_string()))
}

/// A stable, locally administered MAC derived from `seed` (instance uuid + nic index,
/// or the tap name), so a guest keeps its MAC across restarts.
pub fn mac_from(seed: &str) -> [u8; 6] {
    // FNV-1a: tiny, stable across Rust versions (unlike DefaultHasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, 0x5c, b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12Q")
            .unwrap_err()
            .to_string()
            .contains("suffix"));
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn disks() {
        assert_eq!(
            parse_disk("/a,b.raw,ro").unwrap(),
            DiskConfig {
                path: "/a,b.raw".into(),
                read_only: true
            }
        );
        assert!(!parse_disk("/x.raw").unwrap().read_only);
        assert!(parse_disk(",ro").is_err());
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:5c:00:11:22:ff").unwrap(),
            [2, 0x5c, 0, 0x11, 0x22, 0xff]
        );
        assert!(parse_mac("02:5c:00:11:22").is_err());
        assert!(parse_mac("zz:5c:00:11:22:33").is_err());
    }

    #[test]
    fn macs_are_local_unicast_and_stable() {
        let a = mac_from("tap0");
        assert_eq!(a, mac_from("tap0"));
        assert_ne!(a, mac_from("tap1"));
        assert_eq!(a[0] & 0x03, 0x02);
    }
}
