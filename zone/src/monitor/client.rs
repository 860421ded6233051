//! The client side of the monitor socket (used by tests; init has its own).

use crate::error::{Context, Result, ZoneError};
use nix::sys::socket::MsgFlags;
use spec::monitor::{InstanceConfig, MonitorRequest, MonitorResponse};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Client side of the monitor socket: one request, one response (and the console fd
/// for `Console`). Used by tests and handy for init.
pub fn request(
    socket: &Path,
    req: &MonitorRequest,
) -> Result<(MonitorResponse, Option<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::os::fd::FromRawFd;
    let mut stream =
        UnixStream::connect(socket).ctx(|| format!("connecting to {}", socket.display()))?;
    let mut line = serde_json::to_vec(req).map_err(|e| ZoneError::Invalid(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .ctx(|| format!("writing to {}", socket.display()))?;
    let mut data = Vec::new();
    let mut fd = None;
    while !data.ends_with(b"\n") {
        let mut buf = [0u8; 65536];
        let mut cmsg = nix::cmsg_space!([i32; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ctx(|| format!("reading from {}", socket.display()))?;
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel just installed these fds in our table for us.
                fd = fds
                    .first()
                    .map(|f| unsafe { std::os::fd::OwnedFd::from_raw_fd(*f) });
            }
        }
        let n = msg.bytes;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let resp = serde_json::from_slice(&data)
        .map_err(|e| ZoneError::Invalid(format!("bad response from {}: {e}", socket.display())))?;
    Ok((resp, fd))
}

/// The pool directory of an instance (`<pool>/<uuid>`).
pub fn instance_dir(config: &InstanceConfig) -> PathBuf {
    config.pool.join(&config.uuid)
}
