//! OCI image references (`oci:REGISTRY/REPO:TAG`, `oci:REGISTRY/REPO@sha256:HEX`): the
//! one parser a manifest's `image` and `imgadm import` share.
//!
//! The registry is always explicit (no implied Docker Hub): a manifest names where its
//! bytes come from. Repository and tag follow the OCI distribution grammar.

use std::fmt;
use std::str::FromStr;

/// The prefix that marks an OCI reference where an image name could also stand.
pub const PREFIX: &str = "oci:";

/// A parsed OCI reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciReference {
    /// `host[:port]` of the registry.
    pub registry: String,
    /// `team/app`: lowercase components separated by `/`.
    pub repository: String,
    /// The tag, when the reference names one (`latest` when it names neither).
    pub tag: Option<String>,
    /// `sha256:HEX`, when the reference pins a digest.
    pub digest: Option<String>,
}

/// Why a text is not an OCI reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an OCI reference: {reason} (write oci:REGISTRY/REPO:TAG or oci:REGISTRY/REPO@sha256:DIGEST)")]
pub struct BadReference {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl OciReference {
    /// What to ask the registry's manifest endpoint for: the digest when pinned, else
    /// the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `REGISTRY/REPO`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

fn repo_component_ok(s: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = s.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    s.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

fn registry_ok(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
}

fn tag_ok(s: &str) -> bool {
    // [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn digest_ok(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

impl FromStr for OciReference {
    type Err = BadReference;

    /// Parses `oci:REGISTRY/REPO[:TAG][@sha256:HEX]` (the `oci:` prefix is required).
    fn from_str(text: &str) -> Result<Self, BadReference> {
        let bad = |reason| BadReference {
            text: text.to_string(),
            reason,
        };
        let rest = text.strip_prefix(PREFIX).ok_or(bad("no `oci:` prefix"))?;
        if rest.len() > 1024 {
            return Err(bad("longer than 1024 characters"));
        }
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) if digest_ok(d) => (r, Some(d.to_string())),
            Some(_) => return Err(bad("the digest is not sha256: and 64 lowercase hex digits")),
            None => (rest, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or(bad("no registry: the reference needs REGISTRY/REPO"))?;
        if !registry_ok(registry) {
            return Err(bad("the registry is not HOST or HOST:PORT"));
        }
        // A tag follows the last ':' after the last '/'.
        let last = path.rsplit('/').next().unwrap_or(path);
        let (repository, tag) = match last.rsplit_once(':') {
            Some((_, t)) => (&path[..path.len() - t.len() - 1], Some(t.to_string())),
            None => (path, None),
        };
        if repository.is_empty() || !repository.split('/').all(repo_component_ok) {
            return Err(bad(
                "the repository is not lowercase [a-z0-9._-] components separated by /",
            ));
        }
        if tag.as_deref().is_some_and(|t| !tag_ok(t)) {
            return Err(bad("the tag is not 1-128 characters of [A-Za-z0-9_.-]"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(OciReference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

/// As written: `oci:REGISTRY/REPO[:TAG][@DIGEST]`.
impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

serde_as_text!(OciReference);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_digests_and_ports() {
        let r: OciReference = "oci:127.0.0.1:5000/team/app:1.4".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.4"));
        assert_eq!(r.manifest_ref(), "1.4");
        assert_eq!(r.to_string(), "oci:127.0.0.1:5000/team/app:1.4");
        let d = format!("sha256:{}", "a".repeat(64));
        let r: OciReference = format!("oci:ghcr.io/x/y@{d}").parse().unwrap();
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(d.as_str())));
        let r: OciReference = "oci:registry.example/app".parse().unwrap();
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn refuses_what_is_not_a_reference() {
        for bad in [
            "busybox",
            "oci:app:1",
            "oci:reg/App:1",
            "oci:reg/app:-x",
            "oci:reg/app@sha256:abc",
            "oci:reg:99999/app",
            "oci:reg/../app",
            "oci:reg//app",
        ] {
            assert!(bad.parse::<OciReference>().is_err(), "{bad}");
        }
    }
}
