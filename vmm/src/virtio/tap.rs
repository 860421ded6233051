//! Tap devices: opened through the kernel's TUNSETIFF ioctl here; plugged into their
//! bridge and set up by [`host::net`], the same code that plugs zones' veths.

use host::net::NetError;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    // Union member: flags (short) or ifindex (int); padded to the kernel's 24 bytes.
    data: [u8; 24],
}

fn ifreq(name: &str) -> io::Result<IfReq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
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

fn ioctl(fd: &impl AsRawFd, req: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: callers pass a pointer to a live ifreq, the struct TUNSETIFF and the
    // SIOCGIF* requests take; the kernel writes at most that struct.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens (creating if needed) tap `name`, non-blocking, without packet info headers.
pub fn open_tap(name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = ifreq(name)?;
    req.data[..2].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
    ioctl(
        &file,
        TUNSETIFF,
        &mut req as *mut IfReq as *mut libc::c_void,
    )?;
    Ok(file)
}

/// A netlink connection for one call: the vmm installs seccomp filters and drops its
/// privileges after setting its devices up, so it keeps no connection (nor its thread).
fn netlink() -> Result<host::net::Netlink, NetError> {
    host::net::Netlink::new()
}

/// Sets interface `name` up.
pub fn set_up(name: &str) -> Result<(), NetError> {
    netlink()?.blocking().set_up(name)
}

/// Plugs interface `name` into `bridge`, creating (and setting up) the bridge if it
/// does not exist. Plugging it in twice is fine.
pub fn attach_to_bridge(name: &str, bridge: &str) -> Result<(), NetError> {
    netlink()?.blocking().plug_into_bridge(name, bridge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-way-too-long").is_err());
        assert_eq!(&ifreq("tap0").unwrap().name[..5], b"tap0\0");
    }
}

#[cfg(test)]
mod netns_tests {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};

    fn inet_socket() -> io::Result<OwnedFd> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Runs `f` on a thread that has its own network namespace (dropped with it), so
    /// taps and bridges made here never touch the host's network.
    fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): run the tests as root");
            f()
        })
        .join()
        .expect("netns thread")
    }

    #[test]
    fn tap_is_created_up_and_plugged_into_a_new_bridge() {
        in_private_netns(|| {
            let tap = open_tap("sktest0").expect("open /dev/net/tun (tun module loaded?)");
            attach_to_bridge("sktest0", "sktestbr0").unwrap();
            set_up("sktest0").unwrap();
            // sysfs shows the host's namespace, so ask through ioctls in this one.
            let sock = inet_socket().unwrap();
            let mut req = ifreq("sktest0").unwrap();
            ioctl(
                &sock,
                libc::SIOCGIFFLAGS,
                &mut req as *mut IfReq as *mut libc::c_void,
            )
            .unwrap();
            let flags = libc::c_short::from_ne_bytes([req.data[0], req.data[1]]);
            assert_ne!(flags & libc::IFF_UP as libc::c_short, 0, "tap is up");
            let mut br = ifreq("sktestbr0").unwrap();
            ioctl(
                &sock,
                libc::SIOCGIFINDEX,
                &mut br as *mut IfReq as *mut libc::c_void,
            )
            .expect("the bridge was created");
            // Plugging it in twice is fine (already a port).
            attach_to_bridge("sktest0", "sktestbr0").unwrap();
            drop(tap);
        });
        assert!(
            !std::path::Path::new("/sys/class/net/sktestbr0").exists(),
            "nothing leaked into the host's namespace"
        );
    }
}
