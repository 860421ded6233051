//! The socket contract end to end: the library's Server against its Client, and
//! against clients that misbehave.

use monitor::{
    answer, Client, ClientError, Incoming, Instance, MonitorRequest, MonitorStatus, Reply, Server,
    State, StopRequest,
};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// An instance that runs nothing: it records what it is asked.
struct Recorder {
    status: MonitorStatus,
    reloads: u32,
}

impl Instance for Recorder {
    type Error = String;
    fn boot(&mut self) -> Result<(), String> {
        self.status.set(State::Running, "");
        Ok(())
    }
    fn request_stop(&mut self, stop: StopRequest) -> Result<String, String> {
        if self.status.state != State::Running {
            return Err("not running".into());
        }
        self.status.set(State::Stopping, format!("{stop:?}"));
        Ok("stopping".into())
    }
    fn console(&mut self) -> Result<OwnedFd, String> {
        let (r, _w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
        Ok(r)
    }
    fn status(&mut self) -> MonitorStatus {
        self.status.clone()
    }
    fn reload(&mut self) -> Option<Result<String, String>> {
        self.reloads += 1;
        Some(Ok(format!("reload {}", self.reloads)))
    }
}

/// An instance that applies nothing live: it keeps the trait's default `reload`.
struct Inert;

impl Instance for Inert {
    type Error = String;
    fn boot(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn request_stop(&mut self, _: StopRequest) -> Result<String, String> {
        Err("inert".into())
    }
    fn console(&mut self) -> Result<OwnedFd, String> {
        Err("inert".into())
    }
    fn status(&mut self) -> MonitorStatus {
        MonitorStatus::provisioning(8)
    }
}

fn serve_recorder(server: Server) {
    let shared = std::sync::Mutex::new(Recorder {
        status: MonitorStatus::provisioning(7),
        reloads: 0,
    });
    shared.lock().unwrap().boot().unwrap();
    std::thread::spawn(move || server.serve(move |req| answer(&mut *shared.lock().unwrap(), req)));
}

#[test]
fn status_stop_and_console_round_trip_through_server_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    serve_recorder(Server::bind(&sock).unwrap());
    let client = Client::new(&sock).with_timeout(Duration::from_secs(5));
    let st = client.status().unwrap();
    assert_eq!((st.pid, st.state), (7, State::Running));
    let fd = client.console().unwrap();
    assert!(fd.as_raw_fd() > 2);
    assert_eq!(
        client.stop(false, Duration::from_secs(4)).unwrap(),
        "stopping"
    );
    let st = client.status().unwrap();
    assert_eq!(st.state, State::Stopping);
    assert!(st.reason.contains("grace: Some(4s)"), "{}", st.reason);
    // A second stop is refused in the instance's own words.
    match client.stop(true, Duration::ZERO) {
        Err(ClientError::Refused { message, .. }) => assert_eq!(message, "not running"),
        other => panic!("{other:?}"),
    }
    // The socket is root's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn reload_reaches_the_instance_and_a_monitor_without_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    serve_recorder(Server::bind(&sock).unwrap());
    let client = Client::new(&sock).with_timeout(Duration::from_secs(5));
    assert_eq!(client.reload().unwrap(), "reload 1");
    assert_eq!(client.reload().unwrap(), "reload 2");
    let inert = dir.path().join("inert.sock");
    let server = Server::bind(&inert).unwrap();
    std::thread::spawn(move || server.serve(|req| answer(&mut Inert, req)));
    match Client::new(&inert).reload() {
        Err(ClientError::Refused { message, .. }) => {
            assert!(message.contains("without a restart"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_server_on_a_live_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    let _first = Server::bind(&sock).unwrap();
    let e = Server::bind(&sock).unwrap_err().to_string();
    assert!(e.contains("already answers") && e.contains("m.sock"), "{e}");
}

#[test]
fn client_errors_name_the_socket() {
    let e = Client::new("/nonexistent/x.sock").status().unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.sock"), "{e}");
    // A monitor that hangs up without answering.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("mute.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&s), &mut line).unwrap();
        drop(s);
    });
    let e = Client::new(&sock).status().unwrap_err().to_string();
    assert!(
        e.contains("mute.sock") && e.contains("without answering"),
        "{e}"
    );
}

/// Sends raw bytes and reads what comes back until the server closes or `wait` ends.
fn raw_exchange(sock: &Path, bytes: &[u8], wait: Duration) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn an_overlong_request_line_is_answered_with_an_error_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    serve_recorder(Server::bind(&sock).unwrap());
    // No newline within the bound: refused once the bound is passed, then dropped.
    let long = vec![b'x'; monitor::MAX_REQUEST_LINE + 10_000];
    let answer = raw_exchange(&sock, &long, Duration::from_secs(5));
    assert!(
        answer.contains("\"ok\":false") && answer.contains("longer than 65536 bytes"),
        "{answer}"
    );
    // A line that does end, but too late.
    let mut line = vec![b' '; monitor::MAX_REQUEST_LINE + 1];
    line.extend_from_slice(b"{\"op\":\"status\"}\n");
    let answer = raw_exchange(&sock, &line, Duration::from_secs(5));
    assert!(answer.contains("longer than"), "{answer}");
    // Garbage within the bound gets an answer and the connection goes on.
    let answer = raw_exchange(
        &sock,
        b"{\"op\":\"dance\"}\n{\"op\":\"status\"}\n",
        Duration::from_millis(500),
    );
    let lines: Vec<&str> = answer.lines().collect();
    assert!(lines[0].contains("bad request"), "{answer}");
    assert!(lines[1].contains("\"state\":\"running\""), "{answer}");
    assert_eq!(Client::new(&sock).status().unwrap().pid, 7);
}

#[test]
fn a_silent_client_is_dropped_and_never_holds_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    let timeout = Duration::from_millis(300);
    let server = Server::bind(&sock)
        .unwrap()
        .with_limits(monitor::MAX_REQUEST_LINE, timeout);
    serve_recorder(server);
    let silent = std::thread::spawn({
        let sock = sock.clone();
        move || {
            let t = Instant::now();
            let answer = raw_exchange(&sock, b"{\"op\":", Duration::from_secs(10));
            (answer, t.elapsed())
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    assert_eq!(Client::new(&sock).status().unwrap().state, State::Running);
    assert!(t.elapsed() < timeout, "served in {:?}", t.elapsed());
    let (answer, took) = silent.join().unwrap();
    assert_eq!(answer, "", "a client out of time gets nothing");
    assert!(took >= timeout && took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn in_a_poll_loop_nothing_blocks_and_a_silent_connection_expires() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    let timeout = Duration::from_millis(200);
    let server = Server::bind(&sock)
        .unwrap()
        .with_limits(monitor::MAX_REQUEST_LINE, timeout);
    assert!(server.accept().unwrap().is_none(), "no client: no wait");
    let mut client = UnixStream::connect(&sock).unwrap();
    let mut conn = server.accept().unwrap().expect("a pending connection");
    let t = Instant::now();
    assert_eq!(conn.next_request().unwrap(), Incoming::Waiting);
    assert!(t.elapsed() < Duration::from_millis(100));
    client.write_all(b"{\"op\":\"sta").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(conn.next_request().unwrap(), Incoming::Waiting);
    client.write_all(b"tus\"}\n").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        conn.next_request().unwrap(),
        Incoming::Request(MonitorRequest::Status)
    );
    conn.reply(Reply::ok("fine")).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&client), &mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
    assert!(!conn.expired(Instant::now()));
    std::thread::sleep(timeout);
    assert!(conn.expired(Instant::now()));
    assert!(
        !conn.serve(|_| Reply::ok("")),
        "an expired connection is done"
    );
}
