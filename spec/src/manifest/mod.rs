//! KDL manifests: reading ([`parse_str`], [`parse_file`], [`load_dir`]) and writing
//! ([`to_kdl`]).

mod devices;
mod dir;
mod emit;
mod props;
mod read;
pub mod schema;
mod values;

pub use dir::{load_dir, load_files, manifest_files, LoadedDir};
pub use emit::{image_text, to_kdl};

use crate::error::ManifestError;
use crate::model::InstanceSpec;
use std::path::Path;

/// Parses and validates one manifest text; `path` names it in errors and origins.
/// All problems of the text are reported together.
pub fn parse_str(path: impl AsRef<Path>, text: &str) -> Result<Vec<InstanceSpec>, ManifestError> {
    read::parse_text(path.as_ref(), text)
}

/// Reads, parses and validates one manifest file.
pub fn parse_file(path: impl AsRef<Path>) -> Result<Vec<InstanceSpec>, ManifestError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError::unreadable(path, &e))?;
    parse_str(path, &text)
}
