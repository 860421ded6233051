//! What a node trusts for its boot manifests: minisign public keys and a CA bundle,
//! read from the node image (`/etc/skerry/`) and the pool (`<pool>/config/`), never
//! from the kernel command line (whoever serves the boot script writes that).

use super::BootManifestError;
use minisign_verify::{PublicKey, Signature};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The folder of trusted minisign public keys (`*.pub`) under a trust root.
pub const KEYS_DIR: &str = "manifest-keys";
/// The PEM bundle of CAs trusted for `https://` manifest URLs under a trust root.
pub const CA_FILE: &str = "manifests-ca.pem";
/// Where the node image keeps its trust roots.
pub const IMAGE_TRUST_ROOT: &str = "/etc/skerry";

/// A key file is two short lines; anything larger is not one.
const MAX_KEY_FILE: u64 = 4096;
/// More keys than this in one folder is a mistake, not a keyring.
const MAX_KEYS: usize = 64;
/// A CA bundle larger than this is refused.
const MAX_CA_FILE: u64 = 1 << 20;

/// A minisign key id as `minisign` prints it (`-G`, `-V`): 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// One trusted public key and the file it came from.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Its id.
    pub id: KeyId,
    /// The file, for messages.
    pub file: PathBuf,
    key: PublicKey,
}

/// The keys and CAs a node trusts for its boot manifests.
#[derive(Debug, Default)]
pub struct Trust {
    /// Every trusted key; none means boot manifests are not signature-checked.
    pub keys: Vec<TrustedKey>,
    /// Every CA bundle found; none means the client's built-in web roots.
    pub ca_files: Vec<PathBuf>,
    roots: Vec<reqwest::Certificate>,
}

/// A signature that checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The key that made it.
    pub key: KeyId,
    /// Its trusted comment (signed too), e.g. `timestamp:1764600000 file:node.kdl`.
    pub trusted_comment: String,
}

impl Trust {
    /// Reads `KEYS_DIR/*.pub` and `CA_FILE` under each of `roots` (missing ones are
    /// fine). A key or bundle that cannot be read or parsed is an error: a node whose
    /// operator configured a key must never fall back to accepting unsigned bodies.
    pub fn load(roots: &[&Path]) -> Result<Trust, BootManifestError> {
        let mut trust = Trust::default();
        for root in roots {
            trust.load_keys(&root.join(KEYS_DIR))?;
            let ca = root.join(CA_FILE);
            if ca.exists() {
                let pem = read_bounded(&ca, MAX_CA_FILE)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                    BootManifestError::BadCa {
                        file: ca.clone(),
                        source,
                    }
                })?;
                if certs.is_empty() {
                    return Err(BootManifestError::EmptyCa(ca));
                }
                trust.roots.extend(certs);
                trust.ca_files.push(ca);
            }
        }
        Ok(trust)
    }

    fn load_keys(&mut self, dir: &Path) -> Result<(), BootManifestError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(BootManifestError::Read {
                    file: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        files.sort();
        if files.len() > MAX_KEYS {
            return Err(BootManifestError::TooManyKeys {
                dir: dir.to_path_buf(),
                count: files.len(),
                limit: MAX_KEYS,
            });
        }
        for file in files {
            let text = read_bounded(&file, MAX_KEY_FILE)?;
            let bad = |reason: &str| BootManifestError::BadKey {
                file: file.clone(),
                reason: reason.to_string(),
            };
            let text = std::str::from_utf8(&text).map_err(|_| bad("not text"))?;
            let key = PublicKey::decode(text).map_err(|e| bad(&e.to_string()))?;
            let id = text
                .lines()
                .nth(1)
                .and_then(key_id_of_line)
                .ok_or_else(|| bad("no key id"))?;
            self.keys.push(TrustedKey { id, file, key });
        }
        Ok(())
    }

    /// A blocking HTTP(S) client for `url` within `limits`: only the configured CAs
    /// when there are any (the boot server's private CA, pinned), the built-in web
    /// roots otherwise; an `https://` URL is never redirected to plain HTTP.
    pub fn client(
        &self,
        url: &str,
        limits: &super::Limits,
    ) -> Result<reqwest::blocking::Client, BootManifestError> {
        let mut b = reqwest::blocking::Client::builder()
            .user_agent("skerry-init")
            .no_proxy()
            .connect_timeout(limits.stall)
            .timeout(limits.stall)
            .https_only(url.starts_with("https://"))
            .redirect(reqwest::redirect::Policy::limited(3));
        if !self.roots.is_empty() {
            b = b.tls_built_in_root_certs(false);
            for c in &self.roots {
                b = b.add_root_certificate(c.clone());
            }
        }
        b.build().map_err(|source| BootManifestError::Http {
            url: url.to_string(),
            source,
        })
    }

    /// Checks a minisign signature `sig` (from `sig_url`) over `body` against the
    /// trusted keys. Only prehashed (Ed25519ph, minisign's default since 0.8)
    /// signatures are accepted; a legacy one is refused.
    pub fn verify(
        &self,
        body: &[u8],
        sig: &[u8],
        sig_url: &str,
    ) -> Result<Verified, BootManifestError> {
        let bad = |reason: String| BootManifestError::BadSignature {
            url: sig_url.to_string(),
            reason,
        };
        let text = std::str::from_utf8(sig).map_err(|_| bad("not text".into()))?;
        let signature = Signature::decode(text).map_err(|e| bad(e.to_string()))?;
        let id = text
            .lines()
            .nth(1)
            .and_then(key_id_of_line)
            .ok_or_else(|| bad("no key id".into()))?;
        let Some(key) = self.keys.iter().find(|k| k.id == id) else {
            return Err(BootManifestError::UnknownKey {
                url: sig_url.to_string(),
                key: id,
                trusted: self.keys.iter().map(|k| k.id.to_string()).collect(),
            });
        };
        key.key
            .verify(body, &signature, false)
            .map_err(|e| bad(format!("key {id} ({}): {e}", key.file.display())))?;
        Ok(Verified {
            key: id,
            trusted_comment: signature.trusted_comment().to_string(),
        })
    }
}

/// The key id inside a base64 key or signature line: bytes 2..10 after the
/// two-byte algorithm tag.
fn key_id_of_line(line: &str) -> Option<KeyId> {
    use base64::Engine;
    let bin = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()?;
    let mut id = [0u8; 8];
    id.copy_from_slice(bin.get(2..10)?);
    Some(KeyId(id))
}

/// The `timestamp:N` minisign puts in a trusted comment by default, if present.
pub fn signed_timestamp(trusted_comment: &str) -> Option<u64> {
    trusted_comment
        .split(|c: char| c.is_whitespace())
        .find_map(|w| w.strip_prefix("timestamp:"))
        .and_then(|n| n.parse().ok())
}

/// Reads at most `max` bytes of `file`; a larger file is an error.
fn read_bounded(file: &Path, max: u64) -> Result<Vec<u8>, BootManifestError> {
    let read = |source| BootManifestError::Read {
        file: file.to_path_buf(),
        source,
    };
    let mut data = Vec::new();
    std::fs::File::open(file)
        .map_err(read)?
        .take(max + 1)
        .read_to_end(&mut data)
        .map_err(read)?;
    if data.len() as u64 > max {
        return Err(BootManifestError::FileTooLarge {
            file: file.to_path_buf(),
            limit: max,
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_print_like_minisign() {
        // minisign -G prints the id as the little-endian u64 in upper-case hex.
        let id = KeyId([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        assert_eq!(id.to_string(), "EFCDAB8967452301");
    }

    #[test]
    fn timestamps_come_from_the_trusted_comment() {
        assert_eq!(
            signed_timestamp("timestamp:1764600000\tfile:node.kdl\thashed"),
            Some(1764600000)
        );
        assert_eq!(signed_timestamp("release 7"), None);
    }
}
