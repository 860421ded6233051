//! KDL manifests: reading ([`parse_str`], [`parse_file`], [`load_dir`]) and writing
//! ([`to_kdl`]).

mod devices;
mod dir;
mod emit;
mod firewall;
pub mod limits;
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
    let text = read_text(path).map_err(|e| ManifestError::unreadable(path, &e))?;
    parse_str(path, &text)
}

/// Reads a manifest file (or node.kdl), but never more than one byte past
/// [`limits::MAX_BYTES`]: a larger file is kept that long, for [`limits::check`] to
/// refuse at the limit.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limits::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > limits::MAX_BYTES {
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}
