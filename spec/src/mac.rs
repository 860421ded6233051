//! Ethernet MAC addresses, written `aa:bb:cc:dd:ee:ff` wherever they are text
//! (manifests, SmartOS payloads, `vmm --net TAP,mac=...`, JSON).

use std::fmt;
use std::str::FromStr;

/// Why a text is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address: write six hex bytes like 02:5c:00:11:22:33")]
pub struct MacError(pub String);

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The six octets.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// A stable, locally administered MAC derived from `seed` (instance uuid + nic
    /// index, or a tap name), so an instance keeps its MAC across restarts and the
    /// host knows it without asking the instance.
    pub fn derived(seed: &str) -> MacAddr {
        // FNV-1a: tiny, stable across Rust versions (unlike DefaultHasher).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        let b = h.to_be_bytes();
        MacAddr([0x02, 0x5c, b[2], b[3], b[4], b[5]])
    }

    /// The MAC of nic number `index` of instance `uuid`: the pinned one, else the one
    /// derived from both (what the vmm gives a guest and the zone runtime a veth).
    pub fn of_nic(pinned: Option<MacAddr>, uuid: &str, index: usize) -> MacAddr {
        pinned.unwrap_or_else(|| MacAddr::derived(&format!("{uuid}/{index}")))
    }

    /// Whether `text` reads as a MAC address.
    pub fn is_valid(text: &str) -> bool {
        text.parse::<MacAddr>().is_ok()
    }
}

impl FromStr for MacAddr {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, MacError> {
        let bad = || MacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            None => Ok(MacAddr(out)),
            Some(_) => Err(bad()),
        }
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> [u8; 6] {
        m.0
    }
}

serde_as_text!(MacAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_serialises_colon_hex() {
        let m: MacAddr = "02:5C:00:11:22:ff".parse().unwrap();
        assert_eq!(m.octets(), [2, 0x5c, 0, 0x11, 0x22, 0xff]);
        assert_eq!(m.to_string(), "02:5c:00:11:22:ff");
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:5c:00:11:22:ff\"");
        assert_eq!(
            serde_json::from_str::<MacAddr>("\"02:5c:00:11:22:ff\"").unwrap(),
            m
        );
        for bad in [
            "02:5c:00:11:22",
            "02:5c:00:11:22:33:44",
            "zz:5c:00:11:22:33",
            "2:5c:00:11:22:33",
            "+2:5c:00:11:22:33",
            "",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
        // The error names the bad value (zone's nic setup reports it as is).
        let err = "02:00".parse::<MacAddr>().unwrap_err().to_string();
        assert!(err.contains("`02:00`"), "{err}");
        assert_eq!(
            "02:00:0a:58:00:0a".parse::<MacAddr>().unwrap().octets(),
            [2, 0, 10, 0x58, 0, 10]
        );
    }
}
