//! A raw HTTP/1.1 server on loopback that answers as the test says: for image
//! servers and registries that misbehave on purpose (statuses, endless bodies,
//! drips), which no real server would do on request.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A server answering every request with `answer(path, connection)`, one thread per
/// connection, for the life of the test process. Returns its base URL and the count
/// of requests it has read.
pub fn hostile(
    answer: impl Fn(&str, &mut TcpStream) -> std::io::Result<()> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let (answer, seen) = (Arc::new(answer), Arc::clone(&count));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (answer, seen) = (Arc::clone(&answer), Arc::clone(&seen));
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = answer(&path, &mut conn);
            });
        }
    });
    (url, count)
}

/// A JSON response head; no length means the body runs to the connection's close.
pub fn head(out: &mut TcpStream, status: u16, len: Option<usize>) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
    )?;
    if let Some(len) = len {
        write!(out, "Content-Length: {len}\r\n")?;
    }
    write!(out, "Connection: close\r\n\r\n")
}

/// `python3 -m http.server` on loopback serving a directory, killed on drop.
pub struct FileServer {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `dir` with Python's http.server on a free loopback port.
pub fn file_server(dir: &std::path::Path) -> FileServer {
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::program("python3"))
        .args([
            "-u",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "0",
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let port: u16 = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("http.server said {line:?}"));
    FileServer {
        child,
        port,
        base: format!("http://127.0.0.1:{port}"),
    }
}
