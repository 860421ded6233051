//! Who a zone's init runs as: an OCI image's `User` (`name`, `uid`, `uid:gid`,
//! `name:group`, ...) resolved against the image's own /etc/passwd and /etc/group,
//! as Docker and runc do.
//!
//! The image is hostile input: both files are opened below the image root with every
//! symlink resolved inside it (openat2 `RESOLVE_IN_ROOT`), must be regular files, and
//! are read up to [`MAX_DB`] bytes.

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Largest /etc/passwd or /etc/group read from an image.
pub const MAX_DB: u64 = 1 << 20;
/// Ids a zone has: its user namespace maps 65536 of them.
const ZONE_IDS: u32 = 65536;
/// Most supplementary groups given (the kernel's NGROUPS_MAX is 65536; images with
/// more than this for one user are not real).
const MAX_GROUPS: usize = 64;

/// The ids the zone's init gets, inside the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups: the primary one, then those of /etc/group that list the
    /// user by name.
    pub groups: Vec<u32>,
    /// The user's home directory from /etc/passwd, which becomes `HOME`.
    pub home: Option<String>,
}

/// Why a `User` could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The user or group names nobody in the image.
    #[error("{kind} {name:?} is not in the image's /etc/{file}")]
    Unknown {
        /// `user` or `group`.
        kind: &'static str,
        /// The name looked up.
        name: String,
        /// `passwd` or `group`.
        file: &'static str,
    },
    /// A numeric id past the zone's range.
    #[error("id {0} is outside the zone's ids 0..65535")]
    OutOfRange(u32),
    /// Empty, or more than one `:`.
    #[error("not a user: expected name, uid, name:group or uid:gid")]
    Syntax,
    /// A database could not be read safely.
    #[error("/etc/{file} of the image: {reason}")]
    Db {
        /// `passwd` or `group`.
        file: &'static str,
        /// What was wrong with it.
        reason: String,
    },
}

/// One `/etc/passwd` line's fields we use.
struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One `/etc/group` line's fields we use.
struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `user` against the image rooted at `root`.
pub fn resolve(root: &Path, user: &str) -> Result<ZoneUser, UserError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) if !g.contains(':') => (u, Some(g)),
        Some(_) => return Err(UserError::Syntax),
        None => (user, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        return Err(UserError::Syntax);
    }
    let passwd = read_db(root, "passwd")?;
    let entry = match u.parse::<u32>() {
        // A numeric uid need not be in the image (Docker runs it with gid 0).
        Ok(uid) => passwd
            .as_deref()
            .and_then(|t| find_passwd(t, |p| p.uid == uid)),
        Err(_) => Some(
            passwd
                .as_deref()
                .and_then(|t| find_passwd(t, |p| p.name == u))
                .ok_or_else(|| UserError::Unknown {
                    kind: "user",
                    name: u.into(),
                    file: "passwd",
                })?,
        ),
    };
    let uid = entry
        .as_ref()
        .map_or_else(|| u.parse().unwrap_or(0), |p| p.uid);
    let groups_db = read_db(root, "group")?;
    let groups: Vec<Group> = groups_db.as_deref().map(parse_groups).unwrap_or_default();
    let gid = match g {
        None => entry.as_ref().map_or(0, |p| p.gid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|x| x.name == g)
                    .ok_or_else(|| UserError::Unknown {
                        kind: "group",
                        name: g.into(),
                        file: "group",
                    })?
                    .gid
            }
        },
    };
    let mut ids = vec![gid];
    if let Some(p) = &entry {
        for grp in groups.iter().filter(|x| x.members.contains(&p.name)) {
            if !ids.contains(&grp.gid) && ids.len() < MAX_GROUPS {
                ids.push(grp.gid);
            }
        }
    }
    if let Some(bad) = std::iter::once(uid)
        .chain(ids.iter().copied())
        .find(|i| *i >= ZONE_IDS)
    {
        return Err(UserError::OutOfRange(bad));
    }
    Ok(ZoneUser {
        uid,
        gid,
        groups: ids,
        home: entry.map(|p| p.home).filter(|h| !h.is_empty()),
    })
}

fn find_passwd(text: &str, want: impl Fn(&Passwd) -> bool) -> Option<Passwd> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.splitn(8, ':').collect();
            let [name, _, uid, gid, _, home, ..] = f.as_slice() else {
                return None;
            };
            Some(Passwd {
                name: (*name).into(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                home: (*home).into(),
            })
        })
        .find(|p| want(p))
}

fn parse_groups(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.splitn(5, ':').collect();
            let [name, _, gid, members, ..] = f.as_slice() else {
                return None;
            };
            Some(Group {
                name: (*name).into(),
                gid: gid.parse().ok()?,
                members: members
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// The text of the image's `/etc/{file}`, or None when it has none.
fn read_db(root: &Path, file: &'static str) -> Result<Option<String>, UserError> {
    let fail = |reason: String| UserError::Db { file, reason };
    let dir = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail(format!("opening the image root {}: {e}", root.display())))?;
    // O_NONBLOCK: a FIFO planted there must not hang the monitor before it is refused.
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd: OwnedFd = match openat2(&dir, format!("etc/{file}").as_str(), how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    let f = std::fs::File::from(fd);
    let meta = f.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if meta.len() > MAX_DB {
        return Err(fail(format!("over {MAX_DB} bytes")));
    }
    let mut bytes = Vec::new();
    f.take(MAX_DB + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_DB {
        return Err(fail(format!("over {MAX_DB} bytes")));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(passwd: &str, group: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(d.path().join("etc/group"), group).unwrap();
        d
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          # a comment\n\
                          broken line\n\
                          app:x:1000:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\nwheel:x:10:other\n";

    #[test]
    fn every_form_docker_takes_resolves() {
        let d = image(PASSWD, GROUP);
        let r = |u: &str| resolve(d.path(), u).unwrap();
        let app = r("app");
        assert_eq!(
            (app.uid, app.gid, app.home.as_deref()),
            (1000, 1001, Some("/home/app"))
        );
        assert_eq!(app.groups, [1001, 50]);
        assert_eq!(r("1000"), app);
        let g = r("app:staff");
        assert_eq!((g.uid, g.gid, g.groups.clone()), (1000, 50, vec![50]));
        assert_eq!((r("1000:7").uid, r("1000:7").gid), (1000, 7));
        // A uid the image does not know runs with gid 0 and no home.
        let n = r("4242");
        assert_eq!((n.uid, n.gid, n.home), (4242, 0, None));
    }

    #[test]
    fn unknown_names_bad_syntax_and_ids_past_the_zone_are_refused() {
        let d = image(PASSWD, GROUP);
        let e = |u: &str| resolve(d.path(), u).unwrap_err().to_string();
        assert_eq!(
            e("nobody"),
            "user \"nobody\" is not in the image's /etc/passwd"
        );
        assert_eq!(
            e("app:nogroup"),
            "group \"nogroup\" is not in the image's /etc/group"
        );
        assert!(e("70000").contains("outside the zone's ids"));
        assert!(e("1:70000").contains("70000"));
        for bad in ["", ":", "a:", ":b", "a:b:c"] {
            assert!(e(bad).contains("not a user"), "{bad}");
        }
        // No /etc/passwd at all: a name cannot resolve, a number still does.
        let empty = tempfile::tempdir().unwrap();
        assert!(resolve(empty.path(), "app").is_err());
        assert_eq!(resolve(empty.path(), "5:6").unwrap().gid, 6);
    }

    #[test]
    fn the_databases_are_read_inside_the_image_and_bounded() {
        // An absolute symlink resolves inside the image, not to the host's file.
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::create_dir_all(d.path().join("lib")).unwrap();
        std::fs::write(d.path().join("lib/pw"), "only:x:7:7::/o:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/lib/pw", d.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve(d.path(), "only").unwrap().uid, 7);
        assert!(resolve(d.path(), "root").is_err(), "read the host's passwd");
        // `..` past the image root stays at the image root.
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/passwd", d.path().join("etc/passwd"))
            .unwrap();
        assert!(resolve(d.path(), "root").is_err(), "escaped through ..");
        // A FIFO is refused at once; a huge file is refused by size.
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(&d.path().join("etc/passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = resolve(d.path(), "root").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        let big = "x".repeat(MAX_DB as usize + 1);
        std::fs::write(d.path().join("etc/passwd"), big).unwrap();
        let e = resolve(d.path(), "root").unwrap_err().to_string();
        assert!(e.contains("over"), "{e}");
    }
}
