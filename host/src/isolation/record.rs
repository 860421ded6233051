//! The record of the elements each port has in the kernel's sets, so that a reinstall
//! can delete what the new policy drops and a removal can delete them all (nf_tables
//! deletes an element by its key, which holds the old address or rule).
//!
//! One file per port in `/run/skerry/ports/NETNS/`, where NETNS is the cookie of the
//! network namespace the rules live in (tests and benchmarks use their own), and one
//! lock per namespace, held across read, transaction and write. The invariant: whatever the
//! kernel holds for a port is in its record. So the record is written *before* the
//! transaction, with the old elements and the new ones as candidates, and reduced
//! to the new ones after it succeeds (to the old ones if it fails). A crash between
//! the two leaves them all: the kernel holds exactly one of them (a transaction
//! is all or nothing), and deleting tries each until one applies.
//!
//! /run is a tmpfs: a reboot clears it together with the kernel's tables; an init
//! restart keeps both.

use super::rules::{self, Element};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the records live.
pub const ROOT: &str = "/run/skerry/ports";

/// A record larger than this is not one we wrote.
const MAX_RECORD: u64 = 1 << 20;

/// Candidates a record may hold: each install that dies between its transaction and
/// its record's update leaves one more.
const MAX_CANDIDATES: usize = 8;

/// The line that starts the next candidate.
const PENDING: &str = "pending";

/// The records of the caller's network namespace, locked against other installers.
pub struct Records {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Records {
    /// Opens (making it) the directory of the caller's network namespace and takes
    /// its lock (released when dropped).
    pub fn lock() -> io::Result<Records> {
        Records::lock_in(Path::new(ROOT).join(netns_cookie()?.to_string()))
    }

    /// [`Records::lock`] of the records in `dir`.
    fn lock_in(dir: PathBuf) -> io::Result<Records> {
        fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io::Error::from(errno))?;
        Ok(Records { dir, _lock: lock })
    }

    fn path(&self, port: &str) -> PathBuf {
        self.dir.join(port)
    }

    /// The candidates of `port`'s record: none (no record), one, or more after a
    /// crash mid-install.
    pub fn read(&self, port: &str) -> io::Result<Vec<Vec<Element>>> {
        let path = self.path(port);
        let Some(text) = read_small(&path)? else {
            return Ok(vec![]);
        };
        parse(&text).map_err(|(line, why)| bad(&path, line, why))
    }

    /// Replaces `port`'s record with `candidates` (at least one), atomically.
    pub fn write(&self, port: &str, candidates: &[&[Element]]) -> io::Result<()> {
        self.replace(port, &format(candidates))
    }

    /// Replaces the file `name` with `text`, atomically: written beside it as
    /// `.NAME.tmp`, synced, renamed over it.
    fn replace(&self, name: &str, text: &str) -> io::Result<()> {
        let tmp = self
            .dir
            .join(format!(".{}.tmp", name.trim_start_matches('.')));
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        fs::rename(&tmp, self.dir.join(name))
    }

    /// The conntrack zone of nic tag `tag`'s VLAN `vlan` in this namespace: the
    /// number it was given when a port on it was first installed, or the next one
    /// (from 1), kept in `.zones` (a name no port has) until the node reboots. One
    /// number each, never two for one, so no two tenants' segments share a zone.
    pub fn zone(&self, tag: &str, vlan: u16) -> io::Result<u16> {
        let path = self.dir.join(".zones");
        if tag.is_empty() || tag.len() > 64 || !tag.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "nic tag {:?}: not a name a zone can be kept under",
                    tag.chars().take(64).collect::<String>()
                ),
            ));
        }
        let text = read_small(&path)?.unwrap_or_default();
        let mut last = 0u16;
        for (i, line) in text.lines().enumerate() {
            // ZONE VLAN TAG
            let mut words = line.split(' ');
            let parsed = (|| {
                let zone: u16 = words.next()?.parse().ok().filter(|z| *z > 0)?;
                let v: u16 = words.next()?.parse().ok()?;
                let t = words.next()?;
                words.next().is_none().then_some((zone, v, t))
            })();
            let Some((zone, v, t)) = parsed else {
                return Err(bad(&path, i + 1, "not ZONE VLAN TAG"));
            };
            if (t, v) == (tag, vlan) {
                return Ok(zone);
            }
            last = last.max(zone);
        }
        let zone = last
            .checked_add(1)
            .ok_or_else(|| bad(&path, 0, "every zone is given"))?;
        self.replace(".zones", &format!("{text}{zone} {vlan} {tag}\n"))?;
        Ok(zone)
    }

    /// Forgets `port` (its elements are gone from the kernel).
    pub fn forget(&self, port: &str) -> io::Result<()> {
        match fs::remove_file(self.path(port)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The calling thread's network namespace's cookie: a number the kernel gives each
/// namespace and never gives another until it reboots (an inode number, by contrast,
/// is reused once a namespace is gone, and a test's records would then be taken for
/// a new namespace's).
#[allow(unsafe_code)]
pub fn netns_cookie() -> io::Result<u64> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    // A socket belongs to the namespace of the thread that makes it.
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `cookie`, a u64 that lives
    // across the call, and the descriptor is open.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The text of the record file at `path`, `None` if there is none; one larger than
/// [`MAX_RECORD`] is not one we wrote.
fn read_small(path: &Path) -> io::Result<Option<String>> {
    let mut text = String::new();
    match File::open(path) {
        Ok(f) => f.take(MAX_RECORD + 1).read_to_string(&mut text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if text.len() as u64 > MAX_RECORD {
        return Err(bad(path, 0, "larger than 1 MiB"));
    }
    Ok(Some(text))
}

fn bad(path: &Path, line: usize, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{}:{line}: not a record skerry wrote: {why}",
            path.display()
        ),
    )
}

/// `FAMILY SET ELEMENT` per line, candidates separated by a `pending` line.
fn format(candidates: &[&[Element]]) -> String {
    let mut s = String::new();
    for (i, els) in candidates.iter().enumerate() {
        if i > 0 {
            s.push_str(PENDING);
            s.push('\n');
        }
        for e in els.iter() {
            s.push_str(&format!("{} {} {}\n", e.set.family, e.set.name(), e.text));
        }
    }
    s
}

/// What an element's text may hold: what [`rules::elements`] writes, and nothing
/// that could end the element in a script (`}`, `;`, `,`, a newline, a comment).
fn element_text_ok(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || " .:/-_\"".contains(c))
}

fn parse(text: &str) -> Result<Vec<Vec<Element>>, (usize, &'static str)> {
    let mut candidates = vec![vec![]];
    for (i, line) in text.lines().enumerate() {
        if line == PENDING {
            if candidates.len() == MAX_CANDIDATES {
                return Err((i + 1, "more candidates than installs leave"));
            }
            candidates.push(vec![]);
            continue;
        }
        let mut words = line.splitn(3, ' ');
        let (Some(family), Some(name), Some(el)) = (words.next(), words.next(), words.next())
        else {
            return Err((i + 1, "expected FAMILY SET ELEMENT"));
        };
        let set = rules::set_named(family, name).ok_or((i + 1, "unknown set"))?;
        if !element_text_ok(el) {
            return Err((i + 1, "element holds characters skerry never writes"));
        }
        candidates
            .last_mut()
            .expect("one candidate at least")
            .push(Element {
                set,
                text: el.to_owned(),
            });
    }
    Ok(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::PortPolicy;
    use spec::NicAllow;

    fn els(port: &str, ct: rules::Conntrack) -> Vec<Element> {
        rules::elements(
            &PortPolicy {
                port: port.into(),
                mac: [2, 0, 0, 0, 0, 1],
                addrs: vec!["10.0.0.1".parse().unwrap()],
                dhcp: false,
                allow: NicAllow::default(),
                firewall: Some(spec::Firewall::default()),
                tag: "admin".into(),
                vlan: 10,
                zone: 7,
            },
            ct,
        )
    }

    #[test]
    fn a_record_reads_back_as_written() {
        // The firewall's sets in either table.
        let (a, b) = (
            els("p1", rules::Conntrack::Bridge),
            els("p2", rules::Conntrack::BrNetfilter),
        );
        assert!(a
            .iter()
            .any(|e| e.set.family == "bridge" && e.set.name() == "fw_on"));
        assert!(b
            .iter()
            .any(|e| e.set.family == "inet" && e.set.name() == "fw_on"));
        assert_eq!(parse(&format(&[&a])).unwrap(), vec![a.clone()]);
        assert_eq!(parse(&format(&[&a, &b])).unwrap(), vec![a, b]);
        assert_eq!(parse("").unwrap(), vec![Vec::<Element>::new()]);
    }

    #[test]
    fn each_tag_and_vlan_has_one_zone_of_its_own_until_reboot() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::lock_in(dir.path().join("1")).unwrap();
        assert_eq!(records.zone("admin", 0).unwrap(), 1);
        assert_eq!(records.zone("admin", 10).unwrap(), 2);
        assert_eq!(records.zone("external", 10).unwrap(), 3);
        assert_eq!(records.zone("admin", 10).unwrap(), 2);
        drop(records);
        // Kept: another installer (an init restarted) gets the same numbers.
        let records = Records::lock_in(dir.path().join("1")).unwrap();
        assert_eq!(records.zone("external", 10).unwrap(), 3);
        assert_eq!(records.zone("admin", 0).unwrap(), 1);
        assert_eq!(records.zone("admin", 20).unwrap(), 4);
        for tag in ["", "a b", "a\nb", &"t".repeat(65)] {
            assert!(records.zone(tag, 0).is_err(), "{tag:?}");
        }
        let zones = dir.path().join("1/.zones");
        std::fs::write(&zones, "1 0 admin\n0 10 admin\n").unwrap();
        let e = records.zone("admin", 10).unwrap_err().to_string();
        assert!(e.contains(".zones:2:"), "{e}");
        std::fs::write(&zones, "65535 0 admin\n").unwrap();
        assert!(records.zone("other", 0).is_err());
    }

    #[test]
    fn a_record_that_could_inject_into_a_script_is_refused() {
        for (text, line) in [
            ("bridge macs \"p\" }\nflush ruleset", 1),
            (
                "bridge macs \"p\" . 02:00:00:00:00:01\nbridge nope \"p\"",
                2,
            ),
            ("inet macs \"p\" . 02:00:00:00:00:01", 1),
            ("ip fw_on 0x00000001", 1),
            ("bridge macs", 1),
            ("bridge macs \"p\";", 1),
            (&"pending\n".repeat(8), 8),
        ] {
            assert_eq!(parse(text).unwrap_err().0, line, "{text}");
        }
    }
}
