//! The end-to-end harness: builds the node image with `build-image/build`, boots nodes
//! with `build-image/run-node` (QEMU, PXE), drives and watches their serial console,
//! and reads their pool disk from the host with `debugfs` (no loop mounts).
//!
//! Every test starts the real things it needs (QEMU, iPXE, `imgadm serve`); when one
//! is missing the test fails with a message naming it.

pub mod boot_image;
pub mod node;
pub mod pool;
pub mod ssh;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What went wrong in an end-to-end step, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// A command the harness runs could not be started or failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command, as a person would type it.
        what: String,
        /// Its exit status and the tail of its output.
        detail: String,
    },
    /// The node's console did not show what the test waits for in time.
    #[error("no console match for /{pattern}/ within {timeout:?}; last console lines:\n{tail}")]
    ConsoleTimeout {
        /// The regex waited for.
        pattern: String,
        /// How long it waited.
        timeout: Duration,
        /// The end of the console output.
        tail: String,
    },
    /// The node (QEMU) ended while the test still waited for something.
    #[error("the node stopped while waiting for /{pattern}/; last console lines:\n{tail}\nrun-node said:\n{stderr}")]
    NodeExited {
        /// The regex waited for.
        pattern: String,
        /// The end of the console output.
        tail: String,
        /// run-node's stderr (timeline, QEMU errors).
        stderr: String,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Shorthand for harness results.
pub type Result<T> = std::result::Result<T, E2eError>;

/// Wraps an I/O error with what the harness was doing.
pub fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> E2eError {
    let context = context.into();
    move |source| E2eError::Io { context, source }
}

/// The repository root (this crate lives in `<root>/tests/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/e2e has two ancestors")
        .to_path_buf()
}

/// The shared download/build cache (`$SKERRY_CACHE`, default `<root>/.cache`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SKERRY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"))
}

/// The cargo target directory the tests were built in (`…/target` of
/// `…/target/debug/deps/<test>`), so the release build of the image lands beside it.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Runs a command to completion; a non-zero exit is an error carrying its output.
pub fn run(cmd: &mut std::process::Command) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = cmd.output().map_err(io_err(format!("starting {what}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(E2eError::Command {
            what,
            detail: format!("{}\n{}{}", out.status, tail(&stdout, 20), tail(&stderr, 40)),
        });
    }
    Ok(stdout)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n") + "\n"
}
