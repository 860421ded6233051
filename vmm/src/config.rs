//! What one guest is made of, as given on the command line or, as a JSON file
//! (`vmm --config-file`), by the instance monitor that starts the jailed child.

use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// A virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Refuse guest writes.
    pub read_only: bool,
}

/// A virtio-net interface backed by a tap device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Host tap interface name (created if missing).
    pub tap: String,
    /// Guest MAC address.
    pub mac: [u8; 6],
    /// Bridge to plug the tap into (created if missing).
    pub bridge: Option<String>,
    /// VLAN of the tap on its bridge; 0 = untagged (the bridge's default).
    #[serde(default)]
    pub vlan: u16,
    /// An inherited descriptor of the tap, opened and plugged in (bridge, VLAN) by
    /// the instance's monitor, which snoops its DHCP leases from the moment it
    /// exists: the VMM takes it instead of opening `tap`, and leaves `bridge` alone.
    #[serde(default)]
    pub tap_fd: Option<i32>,
}

/// Everything needed to boot one guest. It crosses the process boundary as data: the
/// instance monitor writes it as JSON, the child `vmm --config-file` reads it back
/// (unknown fields are refused, so a typo never boots a different guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The instance UUID, the guest's SMBIOS system UUID (`product_uuid`); nil when
    /// not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<uuid::Uuid>,
    /// An inherited stream fd (one end of a socketpair, open without close-on-exec)
    /// that COM2 sends the guest's bytes to and takes its input from: the instance
    /// monitor serves the metadata protocol on the other end. An fd rather than a
    /// path because the jailed VMM sees no paths; the VMM owns it from here on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub com2_fd: Option<i32>,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JSON `VmConfig`.
    #[error("{path} is not a VM config")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The error, with its line and column.
        #[source]
        source: serde_json::Error,
    },
}

impl VmConfig {
    /// Reads a config written as JSON (by the instance monitor, or by hand).
    pub fn from_json_file(path: &Path) -> Result<VmConfig, ConfigFileError> {
        let text = std::fs::read(path).map_err(|source| ConfigFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| ConfigFileError::Parse {
            path: path.to_owned(),
            source,
        })
    }
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
    spec::MacAddr::derived(seed).octets()
}

/// Takes ownership of `fd`, a descriptor the monitor handed over through the config
/// (`com2_fd`, `tap_fd`), made non-blocking and close-on-exec. Refuses stdio and a
/// number that is not open.
pub fn take_inherited(fd: i32) -> Result<OwnedFd, String> {
    if fd <= 2 {
        return Err("is a standard stream, not a handed-over descriptor".into());
    }
    // SAFETY: F_GETFD only reads the descriptor table; any integer is a valid argument.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: the fd is open (checked above) and not stdio; the config is the only
    // place naming it (the monitor handed it over for this purpose), and it is taken
    // here once, so nothing else in this process owns or closes it.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    let flags = fcntl(&owned, FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
    fcntl(
        &owned,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| e.to_string())?;
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| e.to_string())?;
    Ok(owned)
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

    fn sample() -> VmConfig {
        VmConfig {
            kernel: "/pool/u/boot/vmlinuz-6.1".into(),
            initrd: Some("/pool/u/boot/initrd.img-6.1".into()),
            cmdline: "console=ttyS0 root=/dev/vda1".into(),
            memory: 512 << 20,
            vcpus: 2,
            disks: vec![
                DiskConfig {
                    path: "/pool/u/disks/root.raw".into(),
                    read_only: false,
                },
                DiskConfig {
                    path: "/pool/u/disks/seed.iso".into(),
                    read_only: true,
                },
            ],
            nets: vec![NetConfig {
                vlan: 0,
                tap: "sk0".into(),
                mac: [0x02, 0x5c, 0, 0x11, 0x22, 0xff],
                bridge: Some("skadmin".into()),
                tap_fd: None,
            }],
            uuid: Some(uuid::Uuid::from_u128(
                0x9e2f3c8a_1b2c_4d3e_8f40_0123456789ab,
            )),
            com2_fd: Some(7),
        }
    }

    #[test]
    fn config_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.json");
        std::fs::write(&path, serde_json::to_vec(&sample()).unwrap()).unwrap();
        assert_eq!(VmConfig::from_json_file(&path).unwrap(), sample());
    }

    #[test]
    fn config_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.json");
        let missing = VmConfig::from_json_file(&path).unwrap_err();
        assert!(matches!(missing, ConfigFileError::Read { .. }), "{missing}");
        assert!(missing.to_string().contains("vm.json"));
        // A misspelt field is refused rather than ignored.
        let mut json = serde_json::to_value(sample()).unwrap();
        json["vcpu"] = 4.into();
        std::fs::write(&path, json.to_string()).unwrap();
        let typo = VmConfig::from_json_file(&path).unwrap_err();
        assert!(matches!(typo, ConfigFileError::Parse { .. }), "{typo}");
        assert!(
            std::error::Error::source(&typo)
                .unwrap()
                .to_string()
                .contains("vcpu"),
            "{typo:?}"
        );
    }

    #[test]
    fn macs_are_local_unicast_and_stable() {
        let a = mac_from("tap0");
        assert_eq!(a, mac_from("tap0"));
        assert_ne!(a, mac_from("tap1"));
        assert_eq!(a[0] & 0x03, 0x02);
    }
}
