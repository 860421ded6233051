//! Client side of the monitor socket (`spec::monitor`): one JSON request line, one
//! JSON response line, the console fd riding along as SCM_RIGHTS.

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use spec::monitor::{MonitorRequest, MonitorResponse};
use std::io::{self, BufRead, BufReader, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends one request and reads its response.
pub fn request(
    socket: &Path,
    req: &MonitorRequest,
    timeout: Duration,
) -> io::Result<MonitorResponse> {
    let mut stream = connect(socket, timeout)?;
    send(&mut stream, req)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    parse(socket, &line)
}

/// Asks for the console and returns the fd the monitor attached to its answer.
pub fn console(socket: &Path, timeout: Duration) -> io::Result<OwnedFd> {
    let mut stream = connect(socket, timeout)?;
    send(&mut stream, &MonitorRequest::Console)?;
    let mut data = Vec::new();
    let mut fd = None;
    while !data.contains(&b'\n') {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let n = msg.bytes;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: the kernel just installed `raw` in our fd table for this
                    // message; nothing else owns it, so taking ownership is sound.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let resp = parse(socket, &String::from_utf8_lossy(&data))?;
    if !resp.ok {
        return Err(io::Error::other(resp.message));
    }
    fd.ok_or_else(|| {
        io::Error::other(format!(
            "{}: console answer carried no file descriptor",
            socket.display()
        ))
    })
}

fn connect(socket: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(socket)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

fn send(stream: &mut UnixStream, req: &MonitorRequest) -> io::Result<()> {
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

fn parse(socket: &Path, line: &str) -> io::Result<MonitorResponse> {
    if line.trim().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{}: monitor closed the socket without answering",
                socket.display()
            ),
        ));
    }
    serde_json::from_str(line.trim()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: bad monitor answer {line:?}: {e}", socket.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::io::IoSlice;
    use std::os::unix::net::UnixListener;

    #[test]
    fn status_and_console_round_trip_against_a_fake_monitor() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("m.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (s, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                let req: MonitorRequest = serde_json::from_str(&line).unwrap();
                let answer = match req {
                    MonitorRequest::Status => {
                        b"{\"ok\":true,\"status\":{\"pid\":7,\"state\":\"running\",\"instance_pid\":8,\"started_at\":1}}\n".to_vec()
                    }
                    _ => b"{\"ok\":true}\n".to_vec(),
                };
                let (r, _w) = nix::unistd::pipe().unwrap();
                let fds = [r.as_raw_fd()];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                sendmsg::<()>(
                    s.as_raw_fd(),
                    &[IoSlice::new(&answer)],
                    &cmsg,
                    MsgFlags::empty(),
                    None,
                )
                .unwrap();
            }
        });
        let st = request(&sock, &MonitorRequest::Status, Duration::from_secs(5)).unwrap();
        assert_eq!(st.status.unwrap().instance_pid, Some(8));
        let fd = console(&sock, Duration::from_secs(5)).unwrap();
        assert!(fd.as_raw_fd() > 2);
        server.join().unwrap();
    }

    #[test]
    fn a_missing_socket_names_its_path() {
        let e = request(
            Path::new("/nonexistent/x.sock"),
            &MonitorRequest::Status,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.sock"), "{e}");
    }
}
