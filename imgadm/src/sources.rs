//! Image sources: IMGAPI servers, configured in `<pool>/config/sources.json`, and the
//! HTTP client that talks to them (`GET /ping`, `/images`, `/images/:uuid`,
//! `/images/:uuid/file`).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::manifest::ImageManifest;

/// Page size asked of sources for `GET /images`.
pub const PAGE_LIMIT: usize = 200;

/// Redirects followed for one request to a source.
pub const MAX_REDIRECTS: usize = 5;

/// `<pool>/config/sources.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SourcesFile {
    sources: Vec<Source>,
}

/// What a source speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// An IMGAPI server (`imgadm serve`, SmartOS's images.smartos.org).
    #[default]
    Imgapi,
    /// An OCI distribution registry (SmartOS's `-t docker`): `oci:HOST/...` references
    /// to its host are pulled over its URL's scheme, so `http://` allows plain HTTP.
    Docker,
}

/// One configured source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Its base URL.
    pub url: String,
    /// Its protocol.
    #[serde(rename = "type", default)]
    pub kind: SourceKind,
}

/// Path of the sources configuration of `pool`.
pub fn config_path(pool: &Path) -> PathBuf {
    spec::pool::config_dir(pool).join("sources.json")
}

/// Every configured source of `pool`, of either kind (none without the file).
pub fn load_all(pool: &Path) -> Result<Vec<Source>, StoreError> {
    let path = config_path(pool);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(&path)(e)),
    };
    let f: SourcesFile = serde_json::from_slice(&data).map_err(|e| {
        StoreError::Sources(format!(
            "{}: {e} (expected {{\"sources\": [{{\"url\": \"http://...\", \"type\": \"imgapi\"}}]}})",
            path.display()
        ))
    })?;
    Ok(f.sources)
}

/// The configured IMGAPI source URLs of `pool` (none when the file does not exist).
pub fn load(pool: &Path) -> Result<Vec<String>, StoreError> {
    Ok(load_all(pool)?
        .into_iter()
        .filter(|s| s.kind == SourceKind::Imgapi)
        .map(|s| s.url)
        .collect())
}

fn save_all(pool: &Path, sources: Vec<Source>) -> Result<(), StoreError> {
    let path = config_path(pool);
    let dir = path.parent().expect("config path has a parent");
    fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    spec::atomic::write_json_atomic(&path, &SourcesFile { sources }).map_err(StoreError::io(&path))
}

/// Replaces the configured IMGAPI source list of `pool` (validated, written
/// atomically); docker sources are kept.
pub fn save(pool: &Path, urls: &[String]) -> Result<(), StoreError> {
    for u in urls {
        normalize_url(u)?;
    }
    let mut all: Vec<Source> = load_all(pool)?
        .into_iter()
        .filter(|s| s.kind == SourceKind::Docker)
        .collect();
    all.extend(urls.iter().map(|u| Source {
        url: u.clone(),
        kind: SourceKind::Imgapi,
    }));
    save_all(pool, all)
}

/// Adds `url` to the IMGAPI sources of `pool`.
pub fn add(pool: &Path, url: &str) -> Result<(), StoreError> {
    add_kind(pool, url, SourceKind::Imgapi)
}

/// Adds `url` as a source of `kind` to `pool`.
pub fn add_kind(pool: &Path, url: &str, kind: SourceKind) -> Result<(), StoreError> {
    let url = normalize_url(url)?;
    let mut all = load_all(pool)?;
    if all.iter().any(|s| s.url == url) {
        return Err(StoreError::Sources(format!("{url} is already a source")));
    }
    all.push(Source { url, kind });
    save_all(pool, all)
}

/// Removes `url` (of either kind) from the sources of `pool`.
pub fn remove(pool: &Path, url: &str) -> Result<(), StoreError> {
    let url = normalize_url(url)?;
    let mut all = load_all(pool)?;
    let before = all.len();
    all.retain(|s| s.url != url);
    if all.len() == before {
        return Err(StoreError::Sources(format!("{url} is not a source")));
    }
    save_all(pool, all)
}

/// The scheme to reach registry `host[:port]` over: `http` only when a docker source
/// names it with an `http://` URL, `https` otherwise.
pub fn registry_scheme(pool: &Path, registry: &str) -> Result<&'static str, StoreError> {
    let plain = load_all(pool)?.iter().any(|s| {
        s.kind == SourceKind::Docker
            && reqwest::Url::parse(&s.url).is_ok_and(|u| {
                u.scheme() == "http"
                    && u.host_str().is_some_and(|h| {
                        let hp = match u.port() {
                            Some(p) => format!("{h}:{p}"),
                            None => h.to_string(),
                        };
                        hp == registry
                    })
            })
    });
    Ok(if plain { "http" } else { "https" })
}

/// Checks that `url` is http(s) and strips trailing slashes.
pub fn normalize_url(url: &str) -> Result<String, StoreError> {
    let u = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(u)
        .map_err(|e| StoreError::Sources(format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(StoreError::Sources(format!(
            "{url:?}: sources are http:// or https:// URLs of an IMGAPI server"
        )));
    }
    Ok(u.to_string())
}

/// What a source may send, at most: every read from the network is bounded, so a
/// hostile or broken server can neither fill memory nor hold an import forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// Largest JSON answer (one page of `GET /images`, one manifest), in bytes.
    pub max_json_bytes: u64,
    /// Most pages of `GET /images` followed for one listing.
    pub max_pages: usize,
    /// Longest one JSON answer may take, from the request to its last byte.
    pub json_time: Duration,
    /// Slowest average rate an image file may arrive at, in bytes per second: a
    /// transfer still running after `file_grace + size / file_min_rate` is cut (the
    /// partial download is kept and resumes on the next import).
    pub file_min_rate: u64,
    /// Time granted to every file transfer on top of what its size needs.
    pub file_grace: Duration,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            max_json_bytes: 8 << 20,
            // 500 pages of PAGE_LIMIT: 100000 images.
            max_pages: 500,
            json_time: Duration::from_secs(60),
            file_min_rate: 64 << 10,
            file_grace: Duration::from_secs(120),
        }
    }
}

impl SourceLimits {
    /// How long a transfer of `bytes` may take.
    pub fn file_time(&self, bytes: u64) -> Duration {
        self.file_grace + Duration::from_secs(bytes / self.file_min_rate.max(1))
    }
}

/// A reader that fails with `TimedOut` once its deadline has passed. Each read is
/// bounded by the client's own timeout, so a server dripping one byte at a time is
/// cut at most one read timeout past the deadline.
pub(crate) struct TimeBoxed<R> {
    inner: R,
    until: Instant,
}

impl<R> TimeBoxed<R> {
    /// `inner`, readable until `until`.
    pub(crate) fn new(inner: R, until: Instant) -> Self {
        TimeBoxed { inner, until }
    }
}

impl<R: Read> Read for TimeBoxed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.until {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the server sends too slowly: the transfer ran out of time",
            ));
        }
        self.inner.read(buf)
    }
}

/// A client of one IMGAPI source.
#[derive(Debug, Clone)]
pub struct SourceClient {
    base: String,
    http: reqwest::blocking::Client,
    limits: SourceLimits,
}

/// An image file being downloaded.
pub struct FileResponse {
    /// The body, from `offset` on.
    pub body: reqwest::blocking::Response,
    /// The byte offset the body starts at: the requested one when the server honoured
    /// the Range request, 0 when it sent the whole file.
    pub offset: u64,
    /// The URL, for messages.
    pub url: String,
}

impl SourceClient {
    /// A client for the IMGAPI server at `url`.
    pub fn new(url: &str) -> Result<SourceClient, StoreError> {
        let base = normalize_url(url)?;
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // The blocking client applies this to the wait for the response head and to
            // each body read, not to the whole transfer: a large image may take long,
            // a stalled one fails after a minute (and resumes on the next try).
            .timeout(Duration::from_secs(60))
            // A redirect loop is an error after this many hops, as for registries.
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .user_agent(concat!("skerry-imgadm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StoreError::Network {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(SourceClient {
            base,
            http,
            limits: SourceLimits::default(),
        })
    }

    /// This client with other limits (tests use small ones).
    pub fn with_limits(mut self, limits: SourceLimits) -> SourceClient {
        self.limits = limits;
        self
    }

    /// The limits this client holds sources to.
    pub fn limits(&self) -> &SourceLimits {
        &self.limits
    }

    /// The source's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn send(
        &self,
        url: &str,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, StoreError> {
        req.send().map_err(|e| StoreError::Network {
            url: url.to_string(),
            reason: error_chain(&e.without_url()),
        })
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, StoreError> {
        let url = format!("{}{path}", self.base);
        let started = Instant::now();
        let limit = self.limits.max_json_bytes;
        let req = self.http.get(&url).timeout(self.limits.json_time);
        let resp = self.send(&url, req)?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(StoreError::HttpStatus {
                url,
                status: resp.status().as_u16(),
            });
        }
        let too_large = |url: String| StoreError::BadResponse {
            url,
            reason: format!("the answer is larger than the {limit} bytes allowed"),
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large(url));
        }
        let mut bytes = Vec::new();
        TimeBoxed::new(resp, started + self.limits.json_time)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                let mut reason = error_chain(&e);
                if started.elapsed() >= self.limits.json_time {
                    let secs = self.limits.json_time.as_secs_f32();
                    reason.push_str(&format!(" (the answer did not arrive within {secs} s)"));
                }
                StoreError::Network {
                    url: url.clone(),
                    reason,
                }
            })?;
        if bytes.len() as u64 > limit {
            return Err(too_large(url));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::BadResponse {
                url,
                reason: e.to_string(),
            })
    }

    /// `GET /ping`: is this an IMGAPI server?
    pub fn ping(&self) -> Result<(), StoreError> {
        let v: Option<serde_json::Value> = self.get_json("/ping")?;
        match v {
            Some(v) if v["ping"] == "pong" => Ok(()),
            _ => Err(StoreError::BadResponse {
                url: format!("{}/ping", self.base),
                reason: "expected {\"ping\": \"pong\"}".into(),
            }),
        }
    }

    /// Every image of the source (`GET /images`, following `limit`/`marker` pages).
    /// Manifests the store could not use are skipped with a warning.
    pub fn list(&self) -> Result<Vec<ImageManifest>, StoreError> {
        let mut out = Vec::new();
        let mut marker: Option<Uuid> = None;
        for _ in 0..self.limits.max_pages {
            let path = match marker {
                Some(m) => format!("/images?limit={PAGE_LIMIT}&marker={m}"),
                None => format!("/images?limit={PAGE_LIMIT}"),
            };
            let page: Vec<serde_json::Value> =
                self.get_json(&path)?
                    .ok_or_else(|| StoreError::HttpStatus {
                        url: format!("{}{path}", self.base),
                        status: 404,
                    })?;
            let n = page.len();
            let mut last = None;
            for v in page {
                let origin = format!("{}/images/{}", self.base, v["uuid"].as_str().unwrap_or("?"));
                last = v["uuid"]
                    .as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .or(last);
                match serde_json::from_value::<ImageManifest>(v)
                    .map_err(|e| StoreError::BadManifest {
                        origin: origin.clone(),
                        reason: e.to_string(),
                    })
                    .and_then(|m| m.validate(&origin).map(|_| m))
                {
                    Ok(m) => out.push(m),
                    Err(e) => log::warn!("{e}"),
                }
            }
            if n < PAGE_LIMIT || last.is_none() || last == marker {
                return Ok(out);
            }
            marker = last;
        }
        Err(StoreError::BadResponse {
            url: format!("{}/images", self.base),
            reason: format!(
                "the listing goes on past {} pages of {PAGE_LIMIT} images; stopped there",
                self.limits.max_pages
            ),
        })
    }

    /// `GET /images/:uuid` (None on 404).
    pub fn get(&self, uuid: &Uuid) -> Result<Option<ImageManifest>, StoreError> {
        let path = format!("/images/{uuid}");
        let Some(v) = self.get_json::<serde_json::Value>(&path)? else {
            return Ok(None);
        };
        let origin = format!("{}{path}", self.base);
        let m: ImageManifest = serde_json::from_value(v).map_err(|e| StoreError::BadManifest {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        m.validate(&origin)?;
        Ok(Some(m))
    }

    /// `GET /images/:uuid/file`, from byte `offset` on (a Range request when > 0).
    pub fn open_file(&self, uuid: &Uuid, offset: u64) -> Result<FileResponse, StoreError> {
        let url = format!("{}/images/{uuid}/file", self.base);
        let mut req = self.http.get(&url);
        if offset > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let resp = self.send(&url, req)?;
        let status = resp.status();
        let start = if status == reqwest::StatusCode::PARTIAL_CONTENT {
            content_range_start(&resp).ok_or_else(|| StoreError::BadResponse {
                url: url.clone(),
                reason: "206 without a usable Content-Range".into(),
            })?
        } else if status.is_success() {
            0
        } else if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
            // Our partial file is longer than the server's: start over, once (a 416
            // to a request without a range is an error like any other).
            return self.open_file(uuid, 0);
        } else {
            return Err(StoreError::HttpStatus {
                url,
                status: status.as_u16(),
            });
        };
        if start != 0 && start != offset {
            return Err(StoreError::BadResponse {
                url,
                reason: format!("asked for bytes from {offset}, got from {start}"),
            });
        }
        Ok(FileResponse {
            body: resp,
            offset: start,
            url,
        })
    }
}

fn content_range_start(resp: &reqwest::blocking::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = v.strip_prefix("bytes ")?;
    range.split(['-', '/']).next()?.trim().parse().ok()
}

/// An error and its causes on one line (reqwest hides the useful part in `source`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one byte per call, `pause` apart: a dripping server.
    struct Drip(Duration);

    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.0);
            buf[0] = b'x';
            Ok(1)
        }
    }

    #[test]
    fn a_time_boxed_read_stops_at_its_deadline() {
        let started = Instant::now();
        let until = started + Duration::from_millis(100);
        let mut r = TimeBoxed::new(Drip(Duration::from_millis(10)), until);
        let err = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn file_time_grows_with_the_size() {
        let l = SourceLimits::default();
        assert_eq!(l.file_time(0), l.file_grace);
        assert_eq!(
            l.file_time(1 << 30),
            l.file_grace + Duration::from_secs((1 << 30) / (64 << 10))
        );
    }
}
