//! The HTTP side of the metrics endpoint, written for hostile clients: a fixed number
//! of connections (the rest are closed at once), a capped request head read within a
//! deadline, a deadline on writing the answer, one method and one path. A scrape costs
//! init one `Usage` call at most once per [`Limits::min_interval`]; scrapes in between
//! get the same text.

use super::{render, sample_node};
use crate::client::Node;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};

/// How much the server gives any client.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more are closed without an answer.
    pub max_connections: usize,
    /// Bytes of request head read; a longer head is answered 431.
    pub max_request: usize,
    /// Time to send the request head.
    pub read_timeout: Duration,
    /// Time to take the answer.
    pub write_timeout: Duration,
    /// Time init has to answer `Usage`.
    pub init_timeout: Duration,
    /// Scrapes closer together than this share one reading.
    pub min_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16,
            max_request: 8 << 10,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            init_timeout: Duration::from_secs(5),
            min_interval: Duration::from_secs(1),
        }
    }
}

/// Makes the exposition text, asking init over the bus (reconnecting when needed).
pub struct Collector {
    limits: Limits,
    node: Mutex<Option<Node>>,
    last: Mutex<Option<(Instant, Arc<String>)>>,
}

impl Collector {
    /// A collector that connects to init on first use.
    pub fn new(limits: Limits) -> Self {
        Collector {
            limits,
            node: Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    /// The text for one scrape.
    pub async fn text(&self) -> Arc<String> {
        let mut last = self.last.lock().await;
        if let Some((at, text)) = last.as_ref() {
            if at.elapsed() < self.limits.min_interval {
                return Arc::clone(text);
            }
        }
        let instances = self.ask_init().await;
        let node = tokio::task::spawn_blocking(sample_node)
            .await
            .unwrap_or_default();
        let text = Arc::new(render(&node, instances.as_deref()));
        *last = Some((Instant::now(), Arc::clone(&text)));
        text
    }

    async fn ask_init(&self) -> Option<Vec<spec::api::InstanceUsage>> {
        let mut node = self.node.lock().await;
        if node.is_none() {
            match tokio::time::timeout(self.limits.init_timeout, Node::connect()).await {
                Ok(Ok(n)) => *node = Some(n),
                Ok(Err(e)) => {
                    log::warn!("cannot reach init: {e}");
                    return None;
                }
                Err(_) => {
                    log::warn!(
                        "cannot reach init: no answer in {:?}",
                        self.limits.init_timeout
                    );
                    return None;
                }
            }
        }
        let n = node.as_ref()?;
        match tokio::time::timeout(self.limits.init_timeout, n.usage("")).await {
            Ok(Ok(rows)) => Some(rows),
            Ok(Err(e)) => {
                log::warn!("Usage: {e}");
                // The bus or init may have restarted: connect afresh next time.
                *node = None;
                None
            }
            Err(_) => {
                log::warn!("Usage: no answer in {:?}", self.limits.init_timeout);
                *node = None;
                None
            }
        }
    }
}

/// Serves `listener` until an accept fails for good.
pub async fn serve(listener: TcpListener, collector: Arc<Collector>) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(collector.limits.max_connections));
    loop {
        let (sock, _peer) = match listener.accept().await {
            Ok(a) => a,
            // Out of fds, or a connection reset before accept: pause, go on.
            Err(e) => {
                log::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // Over the limit: closing at once costs nothing to keep.
            drop(sock);
            continue;
        };
        let c = Arc::clone(&collector);
        tokio::spawn(async move {
            let _permit = permit;
            handle(sock, &c).await;
        });
    }
}

/// What the request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics,
    Index,
    NotFound,
    BadMethod,
    Malformed,
}

fn parse_head(head: &[u8]) -> Request {
    let Some(line) = head.split(|b| *b == b'\n').next() else {
        return Request::Malformed;
    };
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Malformed;
    }
    if method != "GET" && method != "HEAD" {
        return Request::BadMethod;
    }
    match target.split('?').next().unwrap_or("") {
        "/metrics" => Request::Metrics,
        "/" => Request::Index,
        _ => Request::NotFound,
    }
}

/// Reads the request head: up to the blank line, at most `max` bytes.
async fn read_head(sock: &mut TcpStream, max: usize) -> Result<Vec<u8>, &'static str> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = sock.read(&mut chunk).await.map_err(|_| "read")?;
        if n == 0 {
            return Err("closed");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(buf);
        }
        if buf.len() > max {
            return Err("too large");
        }
    }
}

async fn handle(mut sock: TcpStream, c: &Collector) {
    let limits = &c.limits;
    let head = match tokio::time::timeout(
        limits.read_timeout,
        read_head(&mut sock, limits.max_request),
    )
    .await
    {
        Ok(Ok(h)) => h,
        Ok(Err("too large")) => {
            let _ = respond(
                &mut sock,
                limits,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request head too large\n",
            )
            .await;
            // Closing with unread input would reset the connection and lose the
            // answer: read (and drop) what is still coming, briefly and boundedly.
            drain(&mut sock, 1 << 20, Duration::from_secs(1)).await;
            return;
        }
        // Closed, reset, or too slow: nothing to answer.
        _ => return,
    };
    let head_only = head.starts_with(b"HEAD ");
    let (status, body): (&str, Arc<String>) = match parse_head(&head) {
        Request::Metrics => ("200 OK", c.text().await),
        Request::Index => ("200 OK", Arc::new("skerry metrics: GET /metrics\n".into())),
        Request::NotFound => (
            "404 Not Found",
            Arc::new("not found; try /metrics\n".into()),
        ),
        Request::BadMethod => ("405 Method Not Allowed", Arc::new("only GET\n".into())),
        Request::Malformed => ("400 Bad Request", Arc::new("bad request\n".into())),
    };
    let body: &[u8] = if head_only { b"" } else { body.as_bytes() };
    let _ = respond(
        &mut sock,
        limits,
        status,
        "text/plain; version=0.0.4; charset=utf-8",
        body,
    )
    .await;
}

/// Reads and drops up to `max` bytes for at most `time`.
async fn drain(sock: &mut TcpStream, max: usize, time: Duration) {
    let mut buf = [0u8; 4096];
    let mut seen = 0;
    let _ = tokio::time::timeout(time, async {
        while seen < max {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    })
    .await;
}

async fn respond(
    sock: &mut TcpStream,
    limits: &Limits,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        sock.write_all(head.as_bytes()).await?;
        sock.write_all(body).await?;
        sock.shutdown().await
    };
    tokio::time::timeout(limits.write_timeout, write)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_of_known_paths_is_served() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n\r\n"), Request::Index);
        assert_eq!(
            parse_head(b"GET /etc/passwd HTTP/1.1\r\n\r\n"),
            Request::NotFound
        );
        assert_eq!(
            parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::BadMethod
        );
        assert_eq!(parse_head(b"GET /metrics\r\n\r\n"), Request::Malformed);
        assert_eq!(parse_head(b"\xff\xfe"), Request::Malformed);
    }
}
