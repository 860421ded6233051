//! One entry point for "a payload in either format", as the API's `Create` and
//! `Validate` take them: a KDL manifest or a SmartOS JSON create payload, told apart
//! by content unless the caller says which.

use crate::error::ManifestError;
use crate::model::InstanceSpec;
use crate::smartos::{self, SmartosErrors};
use std::path::Path;

/// The two payload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A KDL v2 manifest.
    Kdl,
    /// A SmartOS `vmadm` JSON create payload.
    Json,
}

impl Format {
    /// Tells the format from the text: a JSON payload starts with `{` (or `[`), a
    /// manifest cannot.
    pub fn sniff(text: &str) -> Format {
        let t = text.trim_start();
        if t.starts_with('{') || t.starts_with('[') {
            Format::Json
        } else {
            Format::Kdl
        }
    }

    /// The format of a file: from its extension (`.json`, `.kdl`), else from its
    /// text as [`Format::sniff`] tells it.
    pub fn of_file(path: Option<&Path>, text: &str) -> Format {
        match path.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            Some("kdl") => Format::Kdl,
            _ => Format::sniff(text),
        }
    }

    /// Reads the API's format argument: `kdl`, `json`, or empty for [`Format::sniff`].
    pub fn from_arg(arg: &str, text: &str) -> Result<Format, UnknownFormat> {
        match arg {
            "kdl" => Ok(Format::Kdl),
            "json" => Ok(Format::Json),
            "" => Ok(Format::sniff(text)),
            other => Err(UnknownFormat(other.to_string())),
        }
    }

    /// The API's word for the format: `kdl` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Kdl => "kdl",
            Format::Json => "json",
        }
    }
}

/// A format argument that is neither `kdl`, `json` nor empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payload format `{0}`: use kdl, json or nothing")]
pub struct UnknownFormat(pub String);

/// Why a payload was refused, in the format's own terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The KDL manifest's problems, each at FILE:LINE:COL.
    #[error("{0}")]
    Manifest(ManifestError),
    /// SmartOS's error object.
    #[error("{0}")]
    Smartos(SmartosErrors),
}

impl PayloadError {
    /// One line per problem (`FILE:LINE:COL: message`, or a SmartOS field and why),
    /// as the API's `Validate` returns them.
    pub fn lines(&self) -> Vec<String> {
        match self {
            PayloadError::Manifest(e) => e.render_plain().lines().map(str::to_owned).collect(),
            PayloadError::Smartos(e) => {
                let mut out = e.fields();
                out.extend(e.notes.iter().cloned());
                out
            }
        }
    }
}

/// Parses a payload in `format` (`name` labels it in errors). JSON payloads are
/// checked without an image lookup; see [`smartos::from_payload_with`] for one.
pub fn parse_payload(
    name: impl AsRef<Path>,
    text: &str,
    format: Format,
) -> Result<Vec<InstanceSpec>, PayloadError> {
    match format {
        Format::Kdl => crate::manifest::parse_str(name, text).map_err(PayloadError::Manifest),
        Format::Json => smartos::from_payload(text).map_err(PayloadError::Smartos),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats() {
        let kdl = "zone a { image \"busybox@1.36\"; }";
        assert_eq!(Format::sniff(kdl), Format::Kdl);
        assert_eq!(parse_payload("api", kdl, Format::Kdl).unwrap()[0].name, "a");
        let json = r#" {"brand": "joyent", "alias": "b", "image_uuid": "01b2c898-945f-11e1-a523-af1afbe22822"}"#;
        assert_eq!(Format::from_arg("", json), Ok(Format::Json));
        assert_eq!(
            parse_payload("api", json, Format::Json).unwrap()[0].name,
            "b"
        );
        let bad = parse_payload("api", "zone a { memroy 1; }", Format::Kdl).unwrap_err();
        assert!(
            bad.lines()[1].starts_with("api:1:10: unknown zone property"),
            "{:?}",
            bad.lines()
        );
        let bad = parse_payload("api", r#"{"brand": "joyent"}"#, Format::Json).unwrap_err();
        assert_eq!(bad.lines()[0], "missing_properties:image_uuid");
        assert!(Format::from_arg("yaml", "").is_err());
        assert_eq!(Format::sniff(" [1]"), Format::Json);
    }

    #[test]
    fn format_from_extension_then_content() {
        assert_eq!(of_file(Some(Path::new("a.json")), "zone x {}"), "json");
        assert_eq!(of_file(Some(Path::new("a.kdl")), "{"), "kdl");
        assert_eq!(
            of_file(Some(Path::new("a.txt")), "  \n{\"brand\":1}"),
            "json"
        );
        assert_eq!(of_file(None, "zone web01 { }"), "kdl");
    }

    fn of_file(path: Option<&Path>, text: &str) -> &'static str {
        Format::of_file(path, text).as_str()
    }
}
