//! A node's pool disk read from the host with `debugfs` (e2fsprogs): no loop mount,
//! no root-only mount, and the disk is never modified.

use crate::{run, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// An ext4 pool disk image (LABEL=zones) a node used.
#[derive(Debug, Clone)]
pub struct PoolDisk {
    /// The disk image file.
    pub path: PathBuf,
}

impl PoolDisk {
    /// The pool disk at `path` (it may not exist yet: run-node creates it).
    pub fn new(path: &Path) -> PoolDisk {
        PoolDisk {
            path: path.to_path_buf(),
        }
    }

    fn debugfs(&self, request: &str) -> Result<String> {
        run(Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(&self.path))
    }

    /// Names in directory `dir` of the pool (without `.` and `..`); empty if missing.
    pub fn ls(&self, dir: &str) -> Result<Vec<String>> {
        // `ls -p` prints /inode/mode/uid/gid/name/size/ per entry.
        let out = self.debugfs(&format!("ls -p {dir}"))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split('/').nth(5))
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .map(str::to_string)
            .collect())
    }

    /// The contents of file `path` in the pool (empty if it does not exist).
    pub fn cat(&self, path: &str) -> Result<String> {
        self.debugfs(&format!("cat {path}"))
    }
}
