//! An instance's SmartOS `customer_metadata`: the manifest's `metadata { ... }` block
//! plus the `user-script`, `user-data` and `ssh-key` properties, which SmartOS keeps in
//! `customer_metadata` under the keys `user-script`, `user-data` and
//! `root_authorized_keys` (one key per line).
//!
//! The metadata service serves [`InstanceSpec::customer_metadata`]; SmartOS payloads
//! and `vmadm update set_customer_metadata=...` go through
//! [`InstanceSpec::set_customer_metadata`], so the three keys always land in their
//! property and never in `metadata`.

use crate::model::InstanceSpec;
use std::collections::BTreeMap;

/// The `customer_metadata` key of the `user-script` property.
pub const USER_SCRIPT_KEY: &str = "user-script";
/// The `customer_metadata` key of the `user-data` property.
pub const USER_DATA_KEY: &str = "user-data";
/// The `customer_metadata` key the `ssh-key` properties are served as.
pub const AUTHORIZED_KEYS_KEY: &str = "root_authorized_keys";
/// The keys that are properties of their own, not `metadata` entries.
pub const PROPERTY_KEYS: &[&str] = &[USER_SCRIPT_KEY, USER_DATA_KEY, AUTHORIZED_KEYS_KEY];

/// The largest value the metadata service serves or accepts (1 MiB): `user-script`,
/// `user-data` and all `ssh-key`s together are each bounded by it, so a guest can always
/// read back (and re-put) what the operator gave it. mdata's `Limits` use the same.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Key types OpenSSH accepts in `authorized_keys`.
pub const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

impl InstanceSpec {
    /// The instance's SmartOS `customer_metadata`: `metadata` plus `user-script`,
    /// `user-data` and `root_authorized_keys` (the `ssh-key`s, one per line) when set.
    pub fn customer_metadata(&self) -> BTreeMap<String, String> {
        let mut out = self.metadata.clone();
        if let Some(s) = &self.user_script {
            out.insert(USER_SCRIPT_KEY.into(), s.clone());
        }
        if let Some(s) = &self.user_data {
            out.insert(USER_DATA_KEY.into(), s.clone());
        }
        if !self.ssh_keys.is_empty() {
            out.insert(AUTHORIZED_KEYS_KEY.into(), authorized_keys(&self.ssh_keys));
        }
        out
    }

    /// Sets one `customer_metadata` key as SmartOS does: the three property keys set
    /// their property (`root_authorized_keys` is split into one `ssh-key` per non-empty
    /// line), any other key a `metadata` entry. Values are checked by the manifest rules
    /// when the spec is validated.
    pub fn set_customer_metadata(&mut self, key: &str, value: &str) {
        match key {
            USER_SCRIPT_KEY => self.user_script = Some(value.to_owned()),
            USER_DATA_KEY => self.user_data = Some(value.to_owned()),
            AUTHORIZED_KEYS_KEY => {
                self.ssh_keys = value
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            _ => {
                self.metadata.insert(key.to_owned(), value.to_owned());
            }
        }
    }

    /// Removes one `customer_metadata` key (SmartOS `remove_customer_metadata`).
    pub fn remove_customer_metadata(&mut self, key: &str) {
        match key {
            USER_SCRIPT_KEY => self.user_script = None,
            USER_DATA_KEY => self.user_data = None,
            AUTHORIZED_KEYS_KEY => self.ssh_keys.clear(),
            _ => {
                self.metadata.remove(key);
            }
        }
    }
}

/// The `root_authorized_keys` value of a list of keys: one per line, as
/// `authorized_keys` holds them.
pub fn authorized_keys(keys: &[String]) -> String {
    let mut s = keys.join("\n");
    s.push('\n');
    s
}

/// Why `key` is not an `authorized_keys` line `TYPE BASE64 [COMMENT]` of a known
/// type, or `None` when it is one. The base64 blob must decode and name the same
/// type, as every SSH public key blob does.
pub fn check_ssh_key(key: &str) -> Option<String> {
    if key.contains(['\n', '\r', '\0']) {
        return Some("an ssh-key is one line".into());
    }
    let mut words = key.split_ascii_whitespace();
    let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
        return Some(
            "an ssh-key is `TYPE BASE64 [COMMENT]`, like `ssh-ed25519 AAAAC3Nza... user@host`"
                .into(),
        );
    };
    if !SSH_KEY_TYPES.contains(&kind) {
        return Some(format!(
            "`{}` is not an SSH key type; known types: {}",
            clip(kind),
            SSH_KEY_TYPES.join(", ")
        ));
    }
    let Some(bytes) = decode_base64(blob) else {
        return Some(format!("the key of this {kind} ssh-key is not base64"));
    };
    // An SSH public key blob starts with its type as an SSH string: u32 length, bytes.
    let named = bytes
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| bytes.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Some(format!(
            "the key data is not a {kind} key (truncated, or the type does not match)"
        ));
    }
    None
}

/// What is wrong with the spec's `user-script`, `user-data` and `ssh-key`s, one
/// sentence per problem, by the manifest's rules (for specs changed outside a manifest:
/// `vmadm update`).
pub fn problems(spec: &InstanceSpec) -> Vec<String> {
    let mut out = Vec::new();
    for (property, value) in [
        (USER_SCRIPT_KEY, &spec.user_script),
        (USER_DATA_KEY, &spec.user_data),
    ] {
        if let Some(v) = value.as_ref().filter(|v| v.len() > MAX_VALUE_BYTES) {
            out.push(format!(
                "{property}: {} bytes; the metadata service serves at most {MAX_VALUE_BYTES} (1 MiB)",
                v.len()
            ));
        }
    }
    for key in &spec.ssh_keys {
        if let Some(why) = check_ssh_key(key) {
            out.push(format!("{AUTHORIZED_KEYS_KEY}: {why}"));
        }
    }
    let total = authorized_keys(&spec.ssh_keys).len();
    if total > MAX_VALUE_BYTES {
        out.push(format!(
            "{AUTHORIZED_KEYS_KEY}: {total} bytes; the metadata service serves at most {MAX_VALUE_BYTES} (1 MiB)"
        ));
    }
    out
}

fn clip(s: &str) -> &str {
    s.char_indices().nth(40).map_or(s, |(i, _)| &s[..i])
}

/// Strict standard base64 (padding optional at the end), as `ssh-keygen` writes keys.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let digits = s.trim_end_matches('=');
    if s.len() - digits.len() > 2 || digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for ch in digits.bytes() {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ed25519 public key (ssh-keygen output).
    pub(crate) const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPTlaXfXGmWO0/kUFKX0YQX/QTGxiNTFhEFN+D8Kgst1 op@desk";

    #[test]
    fn accepts_real_keys_and_refuses_lookalikes() {
        assert_eq!(check_ssh_key(ED25519), None);
        assert_eq!(check_ssh_key(ED25519.rsplit_once(' ').unwrap().0), None);
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIPTlaXfXGmWO0/kUFKX0YQX/QTGxiNTFhEFN+D8Kgst1",
            "ssh-ed25519 not*base64",
            // A valid blob labelled with another type.
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIPTlaXfXGmWO0/kUFKX0YQX/QTGxiNTFhEFN+D8Kgst1",
            // Truncated blob.
            "ssh-ed25519 AAAAC3NzaC1lZDI1",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPTlaXfXGmWO0/kUFKX0YQX/QTGxiNTFhEFN+D8Kgst1\nx",
        ] {
            assert!(check_ssh_key(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn base64_decodes_rfc4648_vectors() {
        assert_eq!(decode_base64("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(decode_base64("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(decode_base64("Zm9vYg").unwrap(), b"foob");
        assert!(decode_base64("Zm9vY").is_none());
        assert!(decode_base64("Zm9v=YmFy").is_none());
    }
}
