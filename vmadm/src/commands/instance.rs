//! `create` and `update`: the commands that send a payload.

use super::{status, Init, Result, VmadmError};
use crate::client::ClientError;
use crate::payload;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

/// Reads `-f FILE`, or stdin when there is no file.
fn read_input(file: Option<&Path>) -> Result<String> {
    match file {
        Some(path) if path != Path::new("-") => {
            std::fs::read_to_string(path).map_err(|source| VmadmError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("vmadm: reading the payload from stdin (Ctrl-D ends it)");
            }
            let mut text = String::new();
            stdin
                .lock()
                .read_to_string(&mut text)
                .map_err(|source| VmadmError::Read {
                    path: PathBuf::from("<stdin>"),
                    source,
                })?;
            Ok(text)
        }
    }
}

/// `vmadm create [-f FILE]`.
pub(super) async fn create(init: &Init, file: Option<&Path>) -> Result<()> {
    let text = read_input(file)?;
    let node = init.node().await?;
    let format = spec::Format::of_file(file, &text).as_str();
    let names = node.create(&text, format).await?;
    for name in names {
        // The UUID is what SmartOS prints; the name is what our operators type.
        match node.get(&name).await {
            Ok(detail) => {
                let uuid = &detail.summary.uuid;
                status(&format!("Successfully created VM {uuid} ({name})"));
            }
            Err(_) => status(&format!("Successfully created VM {name}")),
        }
    }
    Ok(())
}

/// `vmadm update NAME [-f FILE | KEY=VALUE ...]`.
pub(super) async fn update(
    init: &Init,
    id: &str,
    file: Option<&Path>,
    properties: &[String],
) -> Result<()> {
    let body = if properties.is_empty() {
        let name = file.map_or("<stdin>".to_string(), |f| f.display().to_string());
        payload::update_object(&name, &read_input(file)?)?
    } else {
        payload::properties(properties)?.to_string()
    };
    let (restart, message) = init
        .node()
        .await?
        .update(id, &body)
        .await
        .map_err(|e| match e {
            ClientError::Invalid(reason) | ClientError::Failed(reason) => {
                VmadmError::UpdateFailed {
                    id: id.to_string(),
                    reason,
                }
            }
            other => other.into(),
        })?;
    if !message.is_empty() {
        status(&message);
    }
    status(&format!("Successfully updated VM {id}"));
    if restart {
        status(&format!(
            "Restart needed for the change to take effect: vmadm reboot {id}"
        ));
    }
    Ok(())
}
