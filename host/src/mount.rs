//! Private mount namespaces: what the zone runtime and the vmm jail both do before
//! mounting anything of their own.

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Why a private mount namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// unshare(2) refused (not root, or a multi-threaded caller for some namespaces).
    #[error("unshare({flags:?}) for a private mount namespace: {source}")]
    Unshare {
        /// The namespaces asked for.
        flags: CloneFlags,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// Marking `/` and everything below it private failed.
    #[error("making / private in the new mount namespace: {0}")]
    MakePrivate(#[source] nix::Error),
}

/// Moves the calling process (thread, for a multi-threaded caller) into a new mount
/// namespace, plus the namespaces in `also`, and makes every mount in it private: no
/// mount made afterwards propagates to the host, and all of them disappear with the
/// namespace, however the process ends.
pub fn enter_private_mount_ns(also: CloneFlags) -> Result<(), MountError> {
    let flags = CloneFlags::CLONE_NEWNS | also;
    unshare(flags).map_err(|source| MountError::Unshare { flags, source })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(MountError::MakePrivate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root: every mount in the new namespace is private, and one made there stays
    /// invisible to the host.
    #[test]
    fn mounts_made_inside_stay_inside() {
        assert!(nix::unistd::getuid().is_root(), "mount tests need root");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let inner = path.clone();
        std::thread::spawn(move || {
            enter_private_mount_ns(CloneFlags::empty()).unwrap();
            mount(
                Some("tmpfs"),
                &inner,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            let seen = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
            assert!(seen.contains(inner.to_str().unwrap()), "mounted inside");
            // Private: no mount in the namespace is in a peer group with the host's.
            let shared: Vec<&str> = seen.lines().filter(|l| l.contains(" shared:")).collect();
            assert!(shared.is_empty(), "still shared: {shared:?}");
        })
        .join()
        .unwrap();
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !host.contains(path.to_str().unwrap()),
            "the tmpfs leaked to the host's mount table"
        );
    }
}
