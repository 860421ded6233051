//! Sizes in the one dialect of the project: a whole number of bytes with an optional
//! `K`, `M`, `G` or `T` suffix, powers of 1024 (manifests/README.md, "Values"). Manifests,
//! SmartOS payloads, `zone run --memory` and `vmm --memory` all read sizes here.

use std::fmt;
use std::str::FromStr;

/// Why a text is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No leading digits.
    #[error("`{0}` is not a size: write a whole number with an optional K, M, G or T suffix, like \"256M\"")]
    NotANumber(String),
    /// A suffix other than K, M, G or T (with an optional `B` / `iB`).
    #[error("`{text}` has an unknown size suffix `{suffix}`: use K, M, G or T (powers of 1024)")]
    UnknownSuffix {
        /// The whole text.
        text: String,
        /// The suffix that was not understood.
        suffix: String,
    },
    /// More than `u64::MAX` bytes.
    #[error("`{0}` is too large a size")]
    TooLarge(String),
}

/// Parses a size: a decimal number of bytes with an optional `K`, `M`, `G` or `T`
/// suffix (powers of 1024; lower case accepted, as is a trailing `B` or `iB`).
///
/// ```
/// assert_eq!(spec::format::parse_size("2G"), Ok(2 << 30));
/// assert_eq!(spec::format::parse_size("512"), Ok(512));
/// assert!(spec::format::parse_size("2 gigs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::NotANumber(text.to_string()));
    }
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(SizeError::UnknownSuffix {
                text: text.to_string(),
                suffix: suffix.to_string(),
            })
        }
    };
    let too_large = || SizeError::TooLarge(text.to_string());
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    n.checked_mul(1u64 << shift).ok_or_else(too_large)
}

/// Formats a byte count with the largest suffix that divides it exactly
/// (`268435456` -> `"256M"`); [`parse_size`] reads it back to the same number.
pub fn format_size(bytes: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A number of bytes that reads and prints in the size dialect (`"256M"`), and
/// travels through serde as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        parse_size(s).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl From<ByteSize> for u64 {
    fn from(s: ByteSize) -> u64 {
        s.0
    }
}

serde_as_text!(ByteSize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_size_reads_prints_and_serialises_in_the_dialect() {
        let s: ByteSize = "256M".parse().unwrap();
        assert_eq!(s.bytes(), 256 << 20);
        assert_eq!(s.to_string(), "256M");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"256M\"");
        assert_eq!(
            serde_json::from_str::<ByteSize>("\"2g\"").unwrap(),
            ByteSize(2 << 30)
        );
        assert!(serde_json::from_str::<ByteSize>("\"2P\"").is_err());
        assert!(matches!(
            "12Q".parse::<ByteSize>(),
            Err(SizeError::UnknownSuffix { .. })
        ));
    }
}
