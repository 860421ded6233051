//! Taps, bridges and link state through the kernel's ioctls, in the calling thread's
//! network namespace: open a tap, make a bridge exist and be up, plug a port into it,
//! set a link up. The one implementation of these for every skerry program: init (a
//! nic tag's bridge and uplink), the zone runtime (a zone veth's host end) and the vmm
//! (a guest's tap).
//!
//! Ioctls rather than netlink, so that a program that only needs these (the vmm) does
//! not link the netlink stack: it made the vmm binary nearly three times larger, and a
//! guest's VMM slower to start and 1 MiB heavier, for four system calls. The bridge
//! side of a port always lives in the host's namespace, which is the namespace these
//! calls act in.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const SIOCBRADDBR: libc::c_ulong = 0x89a0;
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// A link operation the kernel refused, naming the link and the step.
#[derive(Debug, thiserror::Error)]
#[error("{link}: {op}: {source}")]
pub struct LinkError {
    /// The interface concerned.
    pub link: String,
    /// What was being done (`creating bridge`, `plugging into bridge sk-admin`).
    pub op: String,
    /// The kernel's answer.
    #[source]
    pub source: io::Error,
}

impl LinkError {
    /// Did the kernel answer `errno`?
    pub fn is_errno(&self, errno: i32) -> bool {
        self.source.raw_os_error() == Some(errno)
    }
}

fn failed(link: &str, op: impl Into<String>) -> impl FnOnce(io::Error) -> LinkError + '_ {
    let op = op.into();
    move |source| LinkError {
        link: link.to_string(),
        op,
        source,
    }
}

/// A link's traffic counters, as the kernel keeps them for the link itself (for the
/// host end of a veth or a tap, "received" is what the instance sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

/// The counters of link `name` in this process's network namespace, from
/// `/sys/class/net/<name>/statistics`.
pub fn counters(name: &str) -> Result<LinkCounters, LinkError> {
    counters_in(std::path::Path::new("/sys/class/net"), name)
}

fn counters_in(sys: &std::path::Path, name: &str) -> Result<LinkCounters, LinkError> {
    use std::io::Read;
    // A name with a slash would read outside the link's directory.
    if name.is_empty() || name.contains('/') || name.len() >= libc::IFNAMSIZ {
        return Err(LinkError {
            link: name.to_string(),
            op: "reading counters".into(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    let dir = sys.join(name).join("statistics");
    let read = |file: &str| -> Result<u64, LinkError> {
        let op = format!("reading statistics/{file}");
        let mut text = String::new();
        File::open(dir.join(file))
            .and_then(|f| f.take(64).read_to_string(&mut text))
            .map_err(failed(name, op.clone()))?;
        text.trim()
            .parse()
            .map_err(|_| failed(name, op)(io::Error::from(io::ErrorKind::InvalidData)))
    };
    Ok(LinkCounters {
        rx_bytes: read("rx_bytes")?,
        tx_bytes: read("tx_bytes")?,
        rx_packets: read("rx_packets")?,
        tx_packets: read("tx_packets")?,
    })
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    // Union member: flags (short) or ifindex (int); padded to the kernel's 24 bytes.
    data: [u8; 24],
}

fn ifreq(name: &str) -> io::Result<IfReq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must be 1-15 bytes"),
        ));
    }
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 24],
    };
    r.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(r)
}

fn ioctl(fd: &impl AsRawFd, req: libc::c_ulong, arg: &mut IfReq) -> io::Result<()> {
    // SAFETY: `arg` is a live, exclusively borrowed ifreq, the struct TUNSETIFF,
    // SIOCGIFFLAGS/SIOCSIFFLAGS, SIOCGIFINDEX and SIOCBRADDIF take, and SIOCBRADDBR
    // reads a NUL-terminated name from its start (ifreq's name, NUL-padded by
    // `ifreq`); the kernel writes at most that struct.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut IfReq as *mut libc::c_void) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) with constant arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn index(sock: &OwnedFd, name: &str) -> io::Result<Option<[u8; 4]>> {
    let mut req = ifreq(name)?;
    match ioctl(sock, libc::SIOCGIFINDEX, &mut req) {
        Ok(()) => Ok(Some([req.data[0], req.data[1], req.data[2], req.data[3]])),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens (creating if needed) tap `name`, non-blocking, without packet info headers.
pub fn open_tap(name: &str) -> Result<File, LinkError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(failed(name, "opening /dev/net/tun"))?;
    let mut req = ifreq(name).map_err(failed(name, "opening tap"))?;
    req.data[..2].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
    ioctl(&file, TUNSETIFF, &mut req).map_err(failed(name, "opening tap"))?;
    Ok(file)
}

/// A raw packet socket that writes whole Ethernet frames out of link `name` with
/// send(2) (bound to no protocol, it reads none): a frame written on a bridge is
/// forwarded to the port of its destination MAC, or flooded. Close-on-exec.
pub fn frame_writer(name: &str) -> Result<OwnedFd, LinkError> {
    let fd = packet_socket(0).map_err(failed(name, "opening a packet socket"))?;
    bind_packet(&fd, name, 0).map_err(failed(name, "binding a packet socket"))?;
    Ok(fd)
}

/// An AF_PACKET raw socket, close-on-exec (and `flags`, e.g. SOCK_NONBLOCK), bound to
/// nothing: it receives nothing until [`bind_packet`].
pub(crate) fn packet_socket(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with integer arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds packet socket `fd` to link `name` for `protocol` (host order: ETH_P_ALL, or
/// 0 for none).
pub(crate) fn bind_packet(fd: &OwnedFd, name: &str, protocol: u16) -> io::Result<()> {
    let ifindex = nix::net::if_::if_nametoindex(name)?;
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: `addr` is a sockaddr_ll that lives across the call and the length
    // passed is its size; the kernel only reads it.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Sets link `name` up.
pub fn set_up(name: &str) -> Result<(), LinkError> {
    let up = || -> io::Result<()> {
        let sock = inet_socket()?;
        let mut req = ifreq(name)?;
        ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)?;
        let flags = libc::c_short::from_ne_bytes([req.data[0], req.data[1]])
            | libc::IFF_UP as libc::c_short;
        req.data[..2].copy_from_slice(&flags.to_ne_bytes());
        ioctl(&sock, libc::SIOCSIFFLAGS, &mut req)
    };
    up().map_err(failed(name, "setting up"))
}

/// Makes bridge `name` exist and be up. Idempotent, and safe against another
/// program creating it at the same moment.
pub fn ensure_bridge(name: &str) -> Result<(), LinkError> {
    let sock = inet_socket().map_err(failed(name, "opening a socket"))?;
    if index(&sock, name)
        .map_err(failed(name, "looking up"))?
        .is_none()
    {
        let mut req = ifreq(name).map_err(failed(name, "creating bridge"))?;
        match ioctl(&sock, SIOCBRADDBR, &mut req) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(failed(name, "creating bridge")(e)),
        }
    }
    set_up(name)
}

/// Plugs link `port` (a veth end, a tap, an uplink) into `bridge`, creating the bridge
/// if missing, and sets both up. Plugging a port in twice is fine.
pub fn plug_into_bridge(port: &str, bridge: &str) -> Result<(), LinkError> {
    ensure_bridge(bridge)?;
    let op = format!("plugging into bridge {bridge}");
    let sock = inet_socket().map_err(failed(port, op.clone()))?;
    let Some(port_index) = index(&sock, port).map_err(failed(port, op.clone()))? else {
        return Err(failed(port, op)(io::Error::from_raw_os_error(libc::ENODEV)));
    };
    let mut req = ifreq(bridge).map_err(failed(port, op.clone()))?;
    req.data[..4].copy_from_slice(&port_index);
    match ioctl(&sock, SIOCBRADDIF, &mut req) {
        Ok(()) => {}
        // Already a port: of this bridge, unless sysfs names another one.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) && !in_another_bridge(port, bridge) => {}
        Err(e) => return Err(failed(port, op)(e)),
    }
    set_up(port)
}

/// Whether sysfs says `port` is a port of a bridge other than `bridge` (sysfs shows the
/// namespace it was mounted in, the host's, where bridges live; a link it does not
/// show is taken at the kernel's word).
fn in_another_bridge(port: &str, bridge: &str) -> bool {
    std::fs::read_link(format!("/sys/class/net/{port}/master"))
        .is_ok_and(|m| m.file_name().is_some_and(|n| n != bridge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_come_from_sysfs_statistics() {
        // The loopback exists in every namespace and counts its own traffic.
        assert!(counters("lo").is_ok());
        let sys = tempfile::tempdir().unwrap();
        let stats = sys.path().join("sk1n0/statistics");
        std::fs::create_dir_all(&stats).unwrap();
        for (f, v) in [
            ("rx_bytes", 10),
            ("tx_bytes", 20),
            ("rx_packets", 1),
            ("tx_packets", 2),
        ] {
            std::fs::write(stats.join(f), format!("{v}\n")).unwrap();
        }
        let c = counters_in(sys.path(), "sk1n0").unwrap();
        assert_eq!(
            (c.rx_bytes, c.tx_bytes, c.rx_packets, c.tx_packets),
            (10, 20, 1, 2)
        );
        let e = counters_in(sys.path(), "nosuch0").unwrap_err();
        assert!(e.to_string().contains("nosuch0"), "{e}");
        assert!(counters("../lo").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-way-too-long").is_err());
        assert_eq!(&ifreq("tap0").unwrap().name[..5], b"tap0\0");
    }
}
