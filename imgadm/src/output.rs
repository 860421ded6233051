//! Table and JSON output shared by `list` and `avail`: SmartOS's `-j`, `-o F,..` and
//! `-H` conventions.

use crate::manifest::ImageManifest;
use spec::table::{Table, TableStyle};

/// Columns shown when `-o` is not given (SmartOS's default).
pub const DEFAULT_FIELDS: &[&str] = &["uuid", "name", "version", "os", "type", "pub"];

/// A field of a manifest as table text, or None for an unknown field name.
pub fn field(m: &ImageManifest, name: &str) -> Option<String> {
    Some(match name {
        "uuid" => m.uuid.to_string(),
        "name" => m.name.clone(),
        "version" => m.version.clone(),
        "os" => m.os.clone(),
        "type" => m.kind.to_string(),
        // SmartOS shows the publication date only.
        "pub" => m
            .published_at
            .get(..10)
            .unwrap_or(&m.published_at)
            .to_string(),
        "published_at" => m.published_at.clone(),
        "size" => m.file().size.to_string(),
        "compression" => format!("{:?}", m.file().compression).to_lowercase(),
        "sha256" => m.file().sha256.clone().unwrap_or_default(),
        "sha1" => m.file().sha1.clone().unwrap_or_default(),
        "state" => m.state.clone(),
        "description" => m.description.clone(),
        "owner" => m.owner.to_string(),
        "public" => m.public.to_string(),
        "disabled" => m.disabled.to_string(),
        // Images pulled from an OCI registry: the reference and the manifest digest.
        "ref" => m.oci().map(|o| o.reference.to_string()).unwrap_or_default(),
        "digest" => m.oci().map(|o| o.digest).unwrap_or_default(),
        _ => return None,
    })
}

/// A `-o` list imgadm cannot print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    /// A name that is not a field; the message lists the known ones.
    #[error("unknown field {0:?}; known: uuid, name, version, os, type, pub, published_at, size, compression, sha256, sha1, state, description, owner, public, disabled, ref, digest")]
    Unknown(String),
    /// `-o ""`.
    #[error("-o needs at least one field")]
    Empty,
}

/// Parses `-o uuid,name,...`, refusing unknown names (and listing the known ones).
pub fn parse_fields(spec: Option<&str>) -> Result<Vec<String>, FieldsError> {
    let Some(spec) = spec else {
        return Ok(DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect());
    };
    let probe = probe_manifest();
    let fields: Vec<String> = spec
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for f in &fields {
        if field(&probe, f).is_none() {
            return Err(FieldsError::Unknown(f.clone()));
        }
    }
    if fields.is_empty() {
        return Err(FieldsError::Empty);
    }
    Ok(fields)
}

fn probe_manifest() -> ImageManifest {
    serde_json::from_value(serde_json::json!({
        "v": 2, "uuid": uuid::Uuid::nil(), "name": "x", "version": "1", "type": "zvol",
        "files": [{"sha256": "0".repeat(64), "size": 0}]
    }))
    .expect("probe manifest is valid")
}

/// Renders manifests as an aligned table (header unless `no_header`).
pub fn table(ms: &[ImageManifest], fields: &[String], no_header: bool) -> String {
    let mut t = Table::new(fields);
    for m in ms {
        t.push(fields.iter().map(|f| field(m, f).unwrap_or_default()));
    }
    t.render(TableStyle {
        no_header,
        parsable: false,
    })
}

/// Renders manifests as a JSON array (`-j`), pretty like SmartOS's imgadm.
pub fn json(ms: &[ImageManifest]) -> String {
    let mut s = serde_json::to_string_pretty(ms).expect("manifests serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_honours_h_and_o() {
        let mut m = probe_manifest();
        m.name = "busybox".into();
        m.published_at = "2026-01-02T03:04:05Z".into();
        let fields = parse_fields(Some("name,version,pub")).unwrap();
        let t = table(std::slice::from_ref(&m), &fields, false);
        assert_eq!(t, "NAME     VERSION  PUB\nbusybox  1        2026-01-02\n");
        let t = table(&[m], &fields, true);
        assert_eq!(t, "busybox  1  2026-01-02\n");
        assert!(parse_fields(Some("name,bogus"))
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }
}
