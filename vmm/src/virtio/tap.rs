//! Tap devices and the bridge they plug into, through the kernel's ioctls.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const SIOCBRADDBR: libc::c_ulong = 0x89a0;
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

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
    // SAFETY: callers pass a pointer to a live, correctly sized struct for `req`
    // (an ifreq, or a NUL-terminated name for SIOCBRADDBR); the kernel writes at most
    // that struct.
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

fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets interface `name` up.
pub fn set_up(name: &str) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name)?;
    ioctl(
        &sock,
        libc::SIOCGIFFLAGS,
        &mut req as *mut IfReq as *mut libc::c_void,
    )?;
    let flags =
        libc::c_short::from_ne_bytes([req.data[0], req.data[1]]) | libc::IFF_UP as libc::c_short;
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl(
        &sock,
        libc::SIOCSIFFLAGS,
        &mut req as *mut IfReq as *mut libc::c_void,
    )
}

/// Plugs interface `name` into `bridge`, creating (and setting up) the bridge if it
/// does not exist.
pub fn attach_to_bridge(name: &str, bridge: &str) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut br = ifreq(bridge)?;
    if ioctl(
        &sock,
        libc::SIOCGIFINDEX,
        &mut br as *mut IfReq as *mut libc::c_void,
    )
    .is_err()
    {
        let mut cname = [0u8; libc::IFNAMSIZ];
        cname[..bridge.len()].copy_from_slice(bridge.as_bytes());
        match ioctl(&sock, SIOCBRADDBR, cname.as_mut_ptr() as *mut libc::c_void) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("creating bridge {bridge}: {e}"),
                ))
            }
        }
        set_up(bridge)?;
    }
    let mut dev = ifreq(name)?;
    ioctl(
        &sock,
        libc::SIOCGIFINDEX,
        &mut dev as *mut IfReq as *mut libc::c_void,
    )?;
    let mut req = ifreq(bridge)?;
    req.data[..4].copy_from_slice(&dev.data[..4]); // ifindex
    match ioctl(
        &sock,
        SIOCBRADDIF,
        &mut req as *mut IfReq as *mut libc::c_void,
    ) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()), // already a port
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("adding {name} to bridge {bridge}: {e}"),
        )),
    }
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
