//! Registry credentials (`<pool>/config/auth.json`, docker `config.json` form) and the
//! `WWW-Authenticate` challenges of the distribution token flow.
//!
//! ```json
//! {"auths": {"registry.example:5000": {"auth": "base64(user:password)"},
//!            "ghcr.io": {"username": "u", "password": "p"},
//!            "other.example": {"registrytoken": "a bearer token"}}}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::error::StoreError;

/// Path of the registry credentials of `pool`.
pub fn auth_path(pool: &Path) -> PathBuf {
    spec::pool::config_dir(pool).join("auth.json")
}

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// What we may present to one registry.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// `Authorization: Basic base64(user:password)`, also used to get tokens.
    Basic(String),
    /// A bearer token given as is.
    Bearer(String),
}

/// Secrets never reach a log line through `{:?}`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Basic(_) => "Basic(..)",
            Credentials::Bearer(_) => "Bearer(..)",
        })
    }
}

/// The credentials `pool` holds for `registry` (`host[:port]`; a key may also be
/// written as a URL, as docker writes Docker Hub's).
pub(crate) fn credentials(pool: &Path, registry: &str) -> Result<Option<Credentials>, StoreError> {
    let path = auth_path(pool);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path)(e)),
    };
    let bad = |reason: String| StoreError::Sources(format!("{}: {reason}", path.display()));
    if data.len() > 1 << 20 {
        return Err(bad("larger than 1 MiB".into()));
    }
    let file: AuthFile = serde_json::from_slice(&data).map_err(|e| bad(e.to_string()))?;
    let key_host = |k: &str| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k.split('/').next().unwrap_or(k).to_string()
    };
    let Some(entry) = file
        .auths
        .iter()
        .find(|(k, _)| key_host(k) == registry)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    if let Some(t) = &entry.registrytoken {
        return Ok(Some(Credentials::Bearer(t.clone())));
    }
    if let Some(a) = &entry.auth {
        let plain = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|e| bad(format!("auths.{registry:?}.auth is not base64: {e}")))?;
        if !plain.contains(&b':') {
            return Err(bad(format!(
                "auths.{registry:?}.auth is not base64 of user:password"
            )));
        }
        return Ok(Some(Credentials::Basic(a.trim().to_string())));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials::Basic(
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")),
        ))),
        _ => Err(bad(format!(
            "auths.{registry:?} has neither auth, username+password nor registrytoken"
        ))),
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm="https://auth/token",service="...",scope="..."`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value (one challenge; quoted or bare parameters).
pub(crate) fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(k, v.to_string());
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn credentials_come_from_the_pool_config() {
        let pool = tempfile::tempdir().unwrap();
        let dir = spec::pool::config_dir(pool.path());
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(credentials(pool.path(), "r:5000").unwrap(), None);
        std::fs::write(
            auth_path(pool.path()),
            r#"{"auths":{"https://r:5000/v1/":{"username":"u","password":"p"},
                "t.example":{"registrytoken":"tok"},"bad.example":{"auth":"!!"}}}"#,
        )
        .unwrap();
        assert_eq!(
            credentials(pool.path(), "r:5000").unwrap(),
            Some(Credentials::Basic("dTpw".into()))
        );
        assert_eq!(
            credentials(pool.path(), "t.example").unwrap(),
            Some(Credentials::Bearer("tok".into()))
        );
        let e = credentials(pool.path(), "bad.example").unwrap_err();
        assert!(e.to_string().contains("auth.json"), "{e}");
    }
}
