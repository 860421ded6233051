//! CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the checksum of version 2 frames.
//!
//! The protocol names mdata-client's table-driven implementation as normative; this is
//! the same function (zlib's `crc32`), so frames from any conformant peer verify here.

/// The byte-at-a-time lookup table, built at compile time.
const TABLE: [u32; 256] = build_table();

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// The CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The CRC-32 of `data` as the wire writes it: eight lower-case, zero-filled hex digits.
pub fn crc32_hex(data: &[u8]) -> String {
    format!("{:08x}", crc32(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_value() {
        // The CRC-32 catalogue's check value for "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn matches_the_protocol_documents_example_frame() {
        // "V2 21 265ae1d8 dc4fae17 SUCCESS W10=" from the protocol specification.
        assert_eq!(crc32_hex(b"dc4fae17 SUCCESS W10="), "265ae1d8");
    }
}
