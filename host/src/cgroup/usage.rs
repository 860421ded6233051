//! What an instance's cgroup uses right now: memory, CPU time and tasks, with the
//! limits they run against, read from the v2 or v1 control files.

use super::{CgroupError, Result};
use std::fs;
use std::path::Path;

/// A cgroup's usage and limits at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupUsage {
    /// Memory charged to the cgroup, page cache included (v2 `memory.current`, v1
    /// `memory.usage_in_bytes`), in bytes.
    pub memory_bytes: u64,
    /// The memory limit in bytes; `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// CPU time used so far, in microseconds.
    pub cpu_usec: u64,
    /// Tasks (processes and threads) in the cgroup and below.
    pub tasks: u64,
    /// The task limit; `None` when unlimited.
    pub tasks_limit: Option<u64>,
}

/// v1 reports "no limit" as a page-rounded `i64::MAX`; anything this large is none.
const V1_UNLIMITED: u64 = 1 << 62;

/// Reads one control file holding a number (`max` = `None`).
pub(super) fn read_limit(dir: &Path, file: &str) -> Result<Option<u64>> {
    let text = read_text(dir, file)?;
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    let n: u64 = t.parse().map_err(|_| CgroupError {
        path: dir.to_path_buf(),
        reason: format!("{file} is not a number: {t:?}"),
    })?;
    Ok((n < V1_UNLIMITED).then_some(n))
}

/// Reads one control file holding a counter.
pub(super) fn read_counter(dir: &Path, file: &str) -> Result<u64> {
    read_limit(dir, file)?.ok_or_else(|| CgroupError {
        path: dir.to_path_buf(),
        reason: format!("{file} holds no count"),
    })
}

/// Reads a control file; they are a few bytes, but a bad mount could be anything, so
/// only the first 4 KiB count.
pub(super) fn read_text(dir: &Path, file: &str) -> Result<String> {
    use std::io::Read;
    let path = dir.join(file);
    let mut text = String::new();
    fs::File::open(&path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .map_err(|e| CgroupError {
            path: dir.to_path_buf(),
            reason: format!("reading {file}: {e}"),
        })?;
    Ok(text)
}

/// The `oom_kill` count of a flat keyed file (`memory.events`, `memory.oom_control`);
/// 0 when the kernel is too old to count.
pub(super) fn read_oom_kills(dir: &Path, file: &str) -> Result<u64> {
    let text = read_text(dir, file)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_max_and_huge_as_none() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), "max\n").unwrap();
        fs::write(d.path().join("b"), "9223372036854771712\n").unwrap();
        fs::write(d.path().join("c"), "1048576\n").unwrap();
        fs::write(d.path().join("d"), "lots\n").unwrap();
        assert_eq!(read_limit(d.path(), "a").unwrap(), None);
        assert_eq!(read_limit(d.path(), "b").unwrap(), None);
        assert_eq!(read_limit(d.path(), "c").unwrap(), Some(1 << 20));
        let e = read_limit(d.path(), "d").unwrap_err();
        assert!(e.to_string().contains("d is not a number"), "{e}");
        assert!(read_counter(d.path(), "missing").is_err());
    }
}
