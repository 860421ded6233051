//! Project quota (ext4 and xfs share the kernel interface): `quotactl_fd(2)` on an fd
//! of the upper directory (no device path needed), `FS_IOC_FSSETXATTR` to tag inodes.
//!
//! The decisions live in [`apply`] over the [`ProjectOps`] trait, so they are
//! unit-tested with a recording double; [`Quotactl`] is the real implementation.

use super::{QuotaStatus, Usage};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const PRJQUOTA: u32 = 2;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const Q_XQUOTAON: u32 = (b'X' as u32) << 8 | 1;
const Q_XGETQSTATV: u32 = (b'X' as u32) << 8 | 8;
/// `struct if_dqblk` validity bit for the block limits.
const QIF_BLIMITS: u32 = 1;
/// Project quota accounting is on (`qs_flags` of `fs_quota_statv`).
pub const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
/// Project quota limits are enforced.
pub const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
const FS_QSTATV_VERSION1: i8 = 1;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;
/// `_IOR('X', 31, struct fsxattr)` and `_IOW('X', 32, struct fsxattr)`.
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;

fn qcmd(cmd: u32) -> u32 {
    (cmd << 8) | PRJQUOTA
}

/// `struct fs_qfilestatv` of `<linux/dqblk_xfs.h>`.
#[repr(C)]
#[derive(Default)]
struct FsQfilestatv {
    ino: u64,
    nblks: u64,
    nextents: u32,
    pad: u32,
}

/// `struct fs_quota_statv` of `<linux/dqblk_xfs.h>`.
#[repr(C)]
#[derive(Default)]
struct FsQuotaStatv {
    version: i8,
    pad1: u8,
    flags: u16,
    incoredqs: u32,
    uquota: FsQfilestatv,
    gquota: FsQfilestatv,
    pquota: FsQfilestatv,
    btimelimit: i32,
    itimelimit: i32,
    rtbtimelimit: i32,
    bwarnlimit: u16,
    iwarnlimit: u16,
    rtbwarnlimit: u16,
    pad3: u16,
    pad4: u32,
    pad2: [u64; 7],
}

/// `struct if_dqblk` of `<linux/quota.h>`: limits in 1 KiB blocks, space in bytes.
#[repr(C)]
#[derive(Default)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

/// `struct fsxattr` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// What project quota setup needs from the kernel.
pub trait ProjectOps {
    /// `qs_flags` of `Q_XGETQSTATV` for project quota on the filesystem.
    fn state(&self) -> io::Result<u16>;
    /// Turns on project quota enforcement (`Q_XQUOTAON` with `FS_QUOTA_PDQ_ENFD`).
    fn enforce(&self) -> io::Result<()>;
    /// The project id of the directory `path`.
    fn project_of(&self, path: &Path) -> io::Result<u32>;
    /// Gives every inode under `path` (itself included) project `id`; directories
    /// also get the inherit flag.
    fn tag_tree(&self, path: &Path, id: u32) -> io::Result<()>;
    /// Sets the block hard limit of project `id`, in 1 KiB blocks (0 = none).
    fn set_limit(&self, id: u32, kib: u64) -> io::Result<()>;
    /// Bytes charged to project `id`.
    fn usage(&self, id: u32) -> io::Result<u64>;
}

/// Where a real error happened: the path and what failed.
#[derive(Debug)]
pub struct Failure {
    /// The path the failing call was about.
    pub path: PathBuf,
    /// What failed, with the errno.
    pub reason: String,
}

/// Sets up project quota `id` on `upper` and `work` (on a `fstype` filesystem) with
/// `limit` bytes (None: no limit). `Ok(Unenforced)` when the filesystem or kernel
/// simply lacks support, `Err` on a real error.
pub fn apply(
    ops: &dyn ProjectOps,
    fstype: &str,
    upper: &Path,
    work: &Path,
    id: u32,
    limit: Option<u64>,
) -> Result<QuotaStatus, Failure> {
    let fail = |path: &Path, what: &str, e: io::Error| Failure {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    };
    let flags = match ops.state() {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            return Ok(QuotaStatus::Unenforced(no_quota_support(fstype)));
        }
        Err(e) => return Err(fail(upper, "quotactl_fd(Q_XGETQSTATV, PRJQUOTA)", e)),
    };
    if flags & FS_QUOTA_PDQ_ACCT == 0 {
        return Ok(QuotaStatus::Unenforced(no_accounting(fstype)));
    }
    let mut turned_on = false;
    if flags & FS_QUOTA_PDQ_ENFD == 0 {
        ops.enforce().map_err(|e| {
            fail(
                upper,
                "turning on project quota enforcement (Q_XQUOTAON)",
                e,
            )
        })?;
        turned_on = true;
    }
    // Both layers: overlay copy-up renames from work to upper, and a rename between
    // different projects fails with EXDEV.
    for dir in [upper, work] {
        let current = ops
            .project_of(dir)
            .map_err(|e| fail(dir, "reading the project id (FS_IOC_FSGETXATTR)", e))?;
        // A tagged top directory means everything below inherited the id; otherwise
        // (a zone that ran before it had a quota) every existing inode is tagged.
        if current != id {
            ops.tag_tree(dir, id).map_err(|e| {
                fail(
                    dir,
                    &format!("tagging it with project {id} (FS_IOC_FSSETXATTR)"),
                    e,
                )
            })?;
        }
    }
    let kib = limit.map_or(0, |l| l.div_ceil(1024));
    ops.set_limit(id, kib).map_err(|e| {
        fail(
            upper,
            &format!("setting the limit of project {id} (Q_SETQUOTA)"),
            e,
        )
    })?;
    let Some(limit) = limit else {
        return Ok(QuotaStatus::Unlimited);
    };
    let mut how = format!("project quota {id} on {fstype}");
    if turned_on {
        how.push_str(", enforcement turned on by skerry");
    }
    Ok(QuotaStatus::Enforced {
        limit,
        how,
        usage: Usage::Project {
            ops: Box::new(Quotactl::open(upper).map_err(|e| fail(upper, "opening", e))?),
            id,
        },
    })
}

fn no_quota_support(fstype: &str) -> String {
    let needs = match fstype {
        "xfs" => "CONFIG_XFS_QUOTA",
        _ => "CONFIG_QUOTA and CONFIG_QFMT_V2",
    };
    format!("{fstype} has no quota support in this kernel (quotactl_fd: ENOSYS; it needs {needs})")
}

fn no_accounting(fstype: &str) -> String {
    match fstype {
        "ext4" => "ext4 pool without project quota: it needs `mkfs.ext4 -O quota,project` \
                   (or `tune2fs -O quota,project` while unmounted)"
            .into(),
        "xfs" => "xfs pool mounted without project quota: mount it with `-o prjquota`".into(),
        other => format!("project quota accounting is off on this {other} pool"),
    }
}

/// The real kernel interface, on an fd of a directory of the pool filesystem.
pub struct Quotactl {
    fd: OwnedFd,
}

impl Quotactl {
    /// Opens `dir` (any directory of the filesystem) for quotactl_fd.
    pub fn open(dir: &Path) -> io::Result<Quotactl> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)?;
        Ok(Quotactl { fd: f.into() })
    }

    fn quotactl<T>(&self, cmd: u32, id: u32, arg: *mut T) -> io::Result<()> {
        // SAFETY: quotactl_fd on an fd we own; `arg` points to a live, properly laid out
        // structure of the type the command reads or fills (or is null where none).
        let r = unsafe {
            libc::syscall(
                libc::SYS_quotactl_fd,
                self.fd.as_raw_fd(),
                qcmd(cmd),
                id,
                arg as *mut libc::c_void,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl ProjectOps for Quotactl {
    fn state(&self) -> io::Result<u16> {
        let mut st = FsQuotaStatv {
            version: FS_QSTATV_VERSION1,
            ..Default::default()
        };
        self.quotactl(Q_XGETQSTATV, 0, &mut st)?;
        Ok(st.flags)
    }

    fn enforce(&self) -> io::Result<()> {
        let mut flags: u32 = FS_QUOTA_PDQ_ENFD as u32;
        self.quotactl(Q_XQUOTAON, 0, &mut flags)
    }

    fn project_of(&self, path: &Path) -> io::Result<u32> {
        Ok(get_xattr(&open_nofollow(path)?)?.projid)
    }

    fn tag_tree(&self, path: &Path, id: u32) -> io::Result<()> {
        let dev = std::fs::symlink_metadata(path)?.dev();
        tag_walk(path, dev, id)
    }

    fn set_limit(&self, id: u32, kib: u64) -> io::Result<()> {
        let mut q = IfDqblk {
            bhardlimit: kib,
            bsoftlimit: 0,
            valid: QIF_BLIMITS,
            ..Default::default()
        };
        self.quotactl(Q_SETQUOTA, id, &mut q)
    }

    fn usage(&self, id: u32) -> io::Result<u64> {
        let mut q = IfDqblk::default();
        self.quotactl(Q_GETQUOTA, id, &mut q)?;
        Ok(q.curspace)
    }
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
}

fn get_xattr(f: &File) -> io::Result<FsXattr> {
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills a `struct fsxattr` we own.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(x)
}

fn set_project(f: &File, id: u32, inherit: bool) -> io::Result<()> {
    let mut x = get_xattr(f)?;
    if x.projid == id && (!inherit || x.xflags & FS_XFLAG_PROJINHERIT != 0) {
        return Ok(());
    }
    x.projid = id;
    if inherit {
        x.xflags |= FS_XFLAG_PROJINHERIT;
    }
    // SAFETY: FS_IOC_FSSETXATTR reads the `struct fsxattr` we pass.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSSETXATTR, &x) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tags `path` and everything below it like `xfs_quota -x -c 'project -s'`: no symlink
/// is followed, no mount point crossed; symlinks and device nodes are skipped (they
/// cannot be opened for the ioctl and hold no blocks).
fn tag_walk(path: &Path, dev: u64, id: u32) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.dev() != dev {
        return Ok(());
    }
    let ft = meta.file_type();
    if !(ft.is_dir() || ft.is_file()) {
        return Ok(());
    }
    let f = open_nofollow(path).map_err(|e| annotate(path, e))?;
    set_project(&f, id, ft.is_dir()).map_err(|e| annotate(path, e))?;
    drop(f);
    if ft.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| annotate(path, e))? {
            tag_walk(&entry.map_err(|e| annotate(path, e))?.path(), dev, id)?;
        }
    }
    Ok(())
}

/// Names the inode below the top directory where tagging failed.
fn annotate(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records the calls; answers with the given quota state and project ids.
    struct Recorder {
        state: io::Result<u16>,
        projid: u32,
        calls: RefCell<Vec<String>>,
    }

    impl Recorder {
        fn new(state: io::Result<u16>, projid: u32) -> Recorder {
            Recorder {
                state,
                projid,
                calls: RefCell::new(vec![]),
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl ProjectOps for Recorder {
        fn state(&self) -> io::Result<u16> {
            match &self.state {
                Ok(f) => Ok(*f),
                Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error().unwrap())),
            }
        }
        fn enforce(&self) -> io::Result<()> {
            self.calls.borrow_mut().push("enforce".into());
            Ok(())
        }
        fn project_of(&self, _: &Path) -> io::Result<u32> {
            Ok(self.projid)
        }
        fn tag_tree(&self, path: &Path, id: u32) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("tag {} {id}", path.display()));
            if path.ends_with("denied") {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        }
        fn set_limit(&self, id: u32, kib: u64) -> io::Result<()> {
            self.calls.borrow_mut().push(format!("limit {id} {kib}"));
            Ok(())
        }
        fn usage(&self, _: u32) -> io::Result<u64> {
            Ok(0)
        }
    }

    fn run(r: &Recorder, fstype: &str, limit: Option<u64>) -> Result<QuotaStatus, Failure> {
        // `/` exists, so the enforced outcome can open its usage fd.
        apply(r, fstype, Path::new("/"), Path::new("/w"), 7, limit)
    }

    #[test]
    fn structures_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!((FS_IOC_FSGETXATTR >> 16) & 0x3fff, 28);
        assert_eq!(std::mem::size_of::<IfDqblk>(), 72);
        assert_eq!(std::mem::size_of::<FsQuotaStatv>(), 160);
        assert_eq!(Q_XGETQSTATV, 0x5808);
    }

    #[test]
    fn enforced_quota_tags_both_layers_and_sets_the_limit_in_kib() {
        let r = Recorder::new(Ok(FS_QUOTA_PDQ_ACCT | FS_QUOTA_PDQ_ENFD), 0);
        let st = run(&r, "xfs", Some((16 << 20) + 1)).unwrap();
        assert_eq!(r.calls(), ["tag / 7", "tag /w 7", "limit 7 16385"]);
        assert_eq!(
            st.detail().unwrap(),
            "16777217 enforced (project quota 7 on xfs)"
        );
    }

    #[test]
    fn accounting_without_enforcement_is_turned_on_and_said() {
        let r = Recorder::new(Ok(FS_QUOTA_PDQ_ACCT), 7);
        let st = run(&r, "ext4", Some(16 << 20)).unwrap();
        // Already tagged: no walk.
        assert_eq!(r.calls(), ["enforce", "limit 7 16384"]);
        assert_eq!(
            st.detail().unwrap(),
            "16M enforced (project quota 7 on ext4, enforcement turned on by skerry)"
        );
    }

    #[test]
    fn no_limit_clears_it() {
        let r = Recorder::new(Ok(FS_QUOTA_PDQ_ACCT | FS_QUOTA_PDQ_ENFD), 7);
        assert!(matches!(run(&r, "ext4", None), Ok(QuotaStatus::Unlimited)));
        assert_eq!(r.calls(), ["limit 7 0"]);
    }

    #[test]
    fn missing_support_is_unenforced_with_the_fix() {
        let r = Recorder::new(Ok(0), 0);
        let d = run(&r, "ext4", Some(1 << 20)).unwrap().detail().unwrap();
        assert!(
            d.starts_with("unenforced (") && d.contains("-O quota,project"),
            "{d}"
        );
        let d = run(&r, "xfs", Some(1 << 20)).unwrap().detail().unwrap();
        assert!(d.contains("-o prjquota"), "{d}");
        let r = Recorder::new(Err(io::Error::from_raw_os_error(libc::ENOSYS)), 0);
        let d = run(&r, "xfs", Some(1 << 20)).unwrap().detail().unwrap();
        assert_eq!(
            d,
            "unenforced (xfs has no quota support in this kernel (quotactl_fd: ENOSYS; \
             it needs CONFIG_XFS_QUOTA))"
        );
        assert!(r.calls().is_empty(), "{:?}", r.calls());
    }

    #[test]
    fn real_errors_name_the_path() {
        let r = Recorder::new(Err(io::Error::from_raw_os_error(libc::EPERM)), 0);
        let e = run(&r, "ext4", Some(1 << 20)).err().unwrap();
        assert_eq!(e.path, Path::new("/"));
        assert!(e.reason.contains("Q_XGETQSTATV"), "{}", e.reason);
        let r = Recorder::new(Ok(FS_QUOTA_PDQ_ACCT | FS_QUOTA_PDQ_ENFD), 0);
        let e = apply(
            &r,
            "ext4",
            Path::new("/"),
            Path::new("/denied"),
            7,
            Some(1 << 20),
        )
        .err()
        .unwrap();
        assert_eq!(e.path, Path::new("/denied"));
        assert!(e.reason.contains("project 7"), "{}", e.reason);
    }
}
