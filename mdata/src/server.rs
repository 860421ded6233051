//! The server side of the protocol: one [`Session`] per connection (a socket
//! connection, or a serial line), fed bytes, producing answer bytes.
//!
//! The session owns no thread and no file descriptor, so a monitor's poll loop can
//! drive it: [`Session::feed`] takes what was read and says how much it consumed;
//! [`Session::output`] is what to write; [`Session::wants_input`] and
//! [`Session::ready_at`] say when to read again. [`serve`] is the blocking loop for a
//! plain `Read + Write` stream.
//!
//! Answers are SmartOS's metadata agent's, byte for byte (see mdata/README.md).

use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::frame;
use crate::store::{Limits, MetadataStore};

/// Per-connection bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionConfig {
    /// Longest request line; a longer one is discarded up to its newline and answered
    /// with FAILURE, without ever being held in memory.
    pub max_line_bytes: usize,
    /// Sustained requests per second one connection may make; more wait.
    pub requests_per_second: f64,
    /// Requests one connection may make at once before the rate applies.
    pub burst: f64,
    /// Answer bytes not yet written past which the session reads no more requests
    /// (a guest that writes but never reads stops being served, not buffered).
    pub max_pending_output: usize,
}

impl SessionConfig {
    /// The bounds that let a guest use everything `limits` allows, and no more.
    pub fn for_limits(limits: &Limits) -> Self {
        SessionConfig {
            max_line_bytes: limits.max_line_bytes(),
            requests_per_second: 1000.0,
            burst: 1000.0,
            max_pending_output: 4 << 20,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self::for_limits(&Limits::default())
    }
}

/// How many bytes of an overlong line are kept to address the answer to it.
const OVERLONG_PREFIX: usize = 64;

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    line: Vec<u8>,
    /// Set while discarding the rest of an overlong line.
    overlong: bool,
    out: Vec<u8>,
    tokens: f64,
    refilled: Instant,
}

impl Session {
    /// A fresh connection, its rate budget full.
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        Session {
            config,
            line: Vec::new(),
            overlong: false,
            out: Vec::new(),
            tokens: config.burst,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.config.requests_per_second).min(self.config.burst);
        self.refilled = now;
    }

    /// Takes received bytes, answers every complete request line in them, and returns
    /// how many bytes it consumed. It stops early (the caller keeps the rest) when the
    /// answers not yet written reach their bound or the request rate is exhausted.
    pub fn feed(&mut self, input: &[u8], store: &Mutex<MetadataStore>, now: Instant) -> usize {
        self.refill(now);
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                self.append(rest);
                return input.len();
            };
            self.append(&rest[..nl]);
            pos += nl;
            if self.tokens < 1.0 || self.out.len() >= self.config.max_pending_output {
                return pos;
            }
            self.tokens -= 1.0;
            pos += 1;
            let line = std::mem::take(&mut self.line);
            if std::mem::take(&mut self.overlong) {
                self.answer_overlong(&line);
            } else {
                let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
                self.handle_line(&line, &mut store);
            }
        }
        pos
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.line.len() + bytes.len() > self.config.max_line_bytes {
            self.overlong = true;
            self.line.truncate(OVERLONG_PREFIX);
            let room = OVERLONG_PREFIX.saturating_sub(self.line.len());
            self.line.extend_from_slice(&bytes[..room.min(bytes.len())]);
            self.line.shrink_to(OVERLONG_PREFIX);
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// The answer bytes not yet written.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Drops the first `n` answer bytes, once written.
    pub fn consume_output(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// Takes all answer bytes not yet written.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether [`Session::feed`] would consume a request now: answers are below their
    /// bound and the rate allows one more.
    pub fn wants_input(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0 && self.out.len() < self.config.max_pending_output
    }

    /// When the rate limit next allows a request (`None`: it allows one now).
    pub fn ready_at(&self) -> Option<Instant> {
        if self.tokens >= 1.0 {
            return None;
        }
        let wait = (1.0 - self.tokens) / self.config.requests_per_second;
        Some(self.refilled + Duration::from_secs_f64(wait))
    }

    /// An overlong line gets FAILURE: as a V2 frame when its beginning names a request
    /// id, otherwise as the agent's plain v1 FAILURE.
    fn answer_overlong(&mut self, prefix: &[u8]) {
        let words: Vec<&[u8]> = prefix
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        let reqid = match words.as_slice() {
            [b"V2", _len, _crc, reqid, ..] if reqid.iter().all(u8::is_ascii_hexdigit) => {
                String::from_utf8_lossy(reqid).into_owned()
            }
            _ => {
                self.out.extend_from_slice(b"FAILURE\n");
                return;
            }
        };
        let msg = format!(
            "request too long (limit {} bytes)",
            self.config.max_line_bytes
        );
        self.out
            .extend_from_slice(&frame::encode(&reqid, "FAILURE", msg.as_bytes()));
    }

    /// Answers one request line (without its newline) as SmartOS's agent does.
    fn handle_line(&mut self, raw: &[u8], store: &mut MetadataStore) {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end();
        if text.is_empty() || text.starts_with(char::is_whitespace) {
            self.out.extend_from_slice(b"invalid command\n");
            return;
        }
        let (cmd, want) = match text.find(char::is_whitespace) {
            Some(i) => {
                let ws = text[i..].chars().next().map_or(1, char::len_utf8);
                (&text[..i], &text[i + ws..])
            }
            None => (text, ""),
        };
        if (cmd == "NEGOTIATE" || cmd == "GET") && want.is_empty() {
            self.out.extend_from_slice(b"invalid command\n");
            return;
        }
        if cmd == "V2" {
            // A frame that does not parse, or fails its length or checksum, is dropped
            // without an answer: that is what the agent does.
            let Some(f) = frame::parse_request(want.as_bytes()) else {
                return;
            };
            let payload = String::from_utf8_lossy(&f.payload).into_owned();
            let reply = dispatch(&f.code, &payload, true, store);
            let (code, body) = match reply {
                Reply::Value(v) => ("SUCCESS", v),
                Reply::NotFound => ("NOTFOUND", String::new()),
                Reply::Failure(msg) => ("FAILURE", msg),
                // NEGOTIATE inside a frame is an unknown command: never V2_OK.
                Reply::V2Ok => ("FAILURE", String::new()),
            };
            self.out
                .extend_from_slice(&frame::encode(&f.reqid, code, body.as_bytes()));
            return;
        }
        match dispatch(cmd, want, false, store) {
            Reply::Value(v) => {
                self.out.extend_from_slice(b"SUCCESS\n");
                self.out.extend_from_slice(dot_stuff(&v).as_bytes());
                self.out.extend_from_slice(b"\n.\n");
            }
            Reply::NotFound => self.out.extend_from_slice(b"NOTFOUND\n"),
            Reply::Failure(_) => self.out.extend_from_slice(b"FAILURE\n"),
            Reply::V2Ok => self.out.extend_from_slice(b"V2_OK\n"),
        }
    }
}

/// What a request comes to, before it is written in v1 or v2 form.
enum Reply {
    Value(String),
    NotFound,
    Failure(String),
    V2Ok,
}

/// Prefixes every line that begins with `.` with another `.`, so that a lone `.`
/// can end a v1 answer.
fn dot_stuff(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    let mut at_line_start = true;
    for c in value.chars() {
        if at_line_start && c == '.' {
            out.push('.');
        }
        out.push(c);
        at_line_start = c == '\n' || c == '\r';
    }
    out
}

fn dispatch(cmd: &str, want: &str, v2: bool, store: &mut MetadataStore) -> Reply {
    let failure = |e: crate::store::StoreError| Reply::Failure(e.to_string());
    match cmd {
        "GET" => {
            let key = want.trim();
            if key.is_empty() {
                return Reply::Failure("Invalid GET Request".into());
            }
            match store.get(key) {
                Some(v) => Reply::Value(v),
                None => Reply::NotFound,
            }
        }
        "NEGOTIATE" if !v2 => {
            if want == "V2" {
                Reply::V2Ok
            } else {
                Reply::Failure(String::new())
            }
        }
        "KEYS" => Reply::Value(store.keys().join("\n")),
        "DELETE" if v2 => {
            let key = want.trim();
            if key.is_empty() {
                return Reply::Failure("Invalid DELETE Request".into());
            }
            match store.delete(key) {
                Ok(()) => Reply::Value("OK".into()),
                Err(e) => failure(e),
            }
        }
        "PUT" if v2 => {
            // Two space-separated base64 terms: the key, then the value.
            let terms: Vec<&str> = want.trim().split(' ').collect();
            let [key, value] = terms.as_slice() else {
                return Reply::Failure("Invalid PUT Request".into());
            };
            let key = String::from_utf8_lossy(&crate::base64::decode_lenient(key.as_bytes()))
                .trim()
                .to_string();
            let value = String::from_utf8_lossy(&crate::base64::decode_lenient(value.as_bytes()))
                .into_owned();
            if key.is_empty() {
                return Reply::Failure("Invalid PUT Request".into());
            }
            match store.put(&key, &value) {
                Ok(()) => Reply::Value("OK".into()),
                Err(e) => failure(e),
            }
        }
        _ => Reply::Failure(format!("Unknown command {cmd}")),
    }
}

/// Serves one blocking stream until it ends: reads, answers, writes, and waits out the
/// rate limit. Errors are the stream's.
pub fn serve<S: Read + Write>(
    mut stream: S,
    store: &Mutex<MetadataStore>,
    config: SessionConfig,
) -> io::Result<()> {
    let mut session = Session::new(config, Instant::now());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut pos = 0;
        while pos < n {
            pos += session.feed(&buf[pos..n], store, Instant::now());
            let out = session.take_output();
            if !out.is_empty() {
                stream.write_all(&out)?;
                stream.flush()?;
            }
            if let Some(at) = session.ready_at() {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            }
        }
    }
}
