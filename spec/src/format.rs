//! Value formats shared by KDL manifests, SmartOS payloads and `vmadm update`: sizes,
//! instance names, addresses.

use std::net::IpAddr;

pub use crate::size::{format_size, parse_size, ByteSize, SizeError};

/// Why `name` is not a valid instance name (`[a-z0-9][a-z0-9-]{0,62}`), or `None`.
pub fn check_name(name: &str) -> Option<String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() {
        Some("an instance name cannot be empty".into())
    } else if name.len() > 63 {
        Some(format!(
            "instance name `{name}` is {} characters long; the limit is 63",
            name.len()
        ))
    } else if !ok_first || !ok_rest {
        Some(format!(
            "`{name}` is not a valid instance name: use lower-case letters, digits and `-`, starting with a letter or digit ([a-z0-9][a-z0-9-]{{0,62}})"
        ))
    } else {
        None
    }
}

/// Why `name` is not a valid interface or disk name inside an instance, or `None`:
/// 1 to 15 characters (the Linux interface name limit) of `[a-z0-9_-]`, starting
/// with a letter.
pub fn check_device_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    (!ok).then(|| {
        format!("`{name}` is not a valid device name: 1 to 15 characters of [a-z0-9_-], starting with a letter")
    })
}

/// Why `host` is not a valid host name (RFC 1123: dot-separated labels of
/// letters, digits and `-`, each 1-63 long, 253 in all), or `None`.
pub fn check_hostname(host: &str) -> Option<String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    (host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok)).then(|| {
        format!(
            "`{host}` is not a valid host name: dot-separated labels of letters, digits and `-`"
        )
    })
}

/// Why a text is not `ADDR/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/PREFIX` part.
    #[error(
        "`{0}` has no prefix length: write it in CIDR form like \"10.88.0.10/24\", or \"dhcp\""
    )]
    NoPrefix(String),
    /// The address part does not parse.
    #[error("`{0}` is not an IP address")]
    BadAddress(String),
    /// The prefix is not a number up to the family's width.
    #[error("`{prefix}` is not a prefix length (0-{max})")]
    BadPrefix {
        /// The prefix as written.
        prefix: String,
        /// 32 or 128.
        max: u8,
    },
}

/// Parses `ADDR/PREFIX` (IPv4 or IPv6).
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), CidrError> {
    let Some((addr, prefix)) = text.split_once('/') else {
        return Err(CidrError::NoPrefix(text.to_string()));
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len: u8 =
        prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| CidrError::BadPrefix {
                prefix: prefix.to_string(),
                max,
            })?;
    Ok((addr, prefix_len))
}

/// Whether `other` lies in the subnet `addr/prefix` (same family required).
pub fn in_subnet(addr: IpAddr, prefix: u8, other: IpAddr) -> bool {
    match (addr, other) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Prefix length of a dotted IPv4 netmask (`255.255.255.0` -> 24), if contiguous.
pub fn netmask_prefix(mask: &str) -> Option<u8> {
    let m: std::net::Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(m);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

/// Whether `mac` reads `aa:bb:cc:dd:ee:ff` (six hex octets).
pub fn is_mac(mac: &str) -> bool {
    crate::mac::MacAddr::is_valid(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_1024() {
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("3T"), Ok(3 << 40));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("2P").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("16777216T").is_err());
    }

    #[test]
    fn format_size_round_trips() {
        for n in [
            0,
            1,
            1023,
            1024,
            1536,
            256 << 20,
            3 << 30,
            5 << 40,
            u64::MAX,
        ] {
            assert_eq!(parse_size(&format_size(n)), Ok(n), "{n}");
        }
        assert_eq!(format_size(256 << 20), "256M");
        assert_eq!(format_size(1536), "1536");
    }

    #[test]
    fn names() {
        assert_eq!(check_name("web01"), None);
        assert_eq!(check_name("0-a"), None);
        assert_eq!(check_name(&"a".repeat(63)), None);
        assert!(check_name(&"a".repeat(64)).is_some());
        assert!(check_name("-web").is_some());
        assert!(check_name("Web").is_some());
        assert!(check_name("web_01").is_some());
        assert!(check_name("").is_some());
    }

    #[test]
    fn subnets() {
        let (a, p) = parse_cidr("10.88.0.10/24").unwrap();
        assert!(in_subnet(a, p, "10.88.0.1".parse().unwrap()));
        assert!(!in_subnet(a, p, "10.88.1.1".parse().unwrap()));
        assert!(!in_subnet(a, p, "fd00::1".parse().unwrap()));
        let (a, p) = parse_cidr("0.0.0.0/0").unwrap();
        assert!(in_subnet(a, p, "1.2.3.4".parse().unwrap()));
        let (a, p) = parse_cidr("fd00::10/64").unwrap();
        assert!(in_subnet(a, p, "fd00::1".parse().unwrap()));
        assert!(parse_cidr("10.0.0.1").is_err());
        assert!(parse_cidr("10.0.0.1/33").is_err());
        assert!(parse_cidr("10.0.0/24").is_err());
        assert_eq!(netmask_prefix("255.255.255.0"), Some(24));
        assert_eq!(netmask_prefix("255.255.0.0"), Some(16));
        assert_eq!(netmask_prefix("0.0.0.0"), Some(0));
        assert_eq!(netmask_prefix("255.0.255.0"), None);
    }

    #[test]
    fn macs_and_hostnames() {
        assert!(is_mac("c2:de:e7:ec:99:68"));
        assert!(!is_mac("c2:de:e7:ec:99"));
        assert!(!is_mac("c2:de:e7:ec:99:6g"));
        assert_eq!(check_hostname("web01.example.com"), None);
        assert!(check_hostname("-bad").is_some());
        assert!(check_hostname("a..b").is_some());
    }
}
