//! A client of the OCI distribution API (`GET /v2/<repo>/manifests/<ref>`,
//! `GET /v2/<repo>/blobs/<digest>`) with the anonymous and credentialed token flow.
//!
//! Written over the blocking `reqwest` client the IMGAPI sources already use rather
//! than taking `oci-client`: that crate is async (tokio runtime inside a library init
//! calls from a blocking thread) and buffers or hands back streams we would wrap
//! anyway to verify digests and bound sizes while they stream; the two endpoints and
//! the token dance are ~300 lines here (see imgadm/README.md).

use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Instant;

use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use sha2::{Digest, Sha256};

use super::auth::{parse_challenge, Challenge, Credentials};
use super::{Descriptor, OciReference, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::error::StoreError;
use crate::sources::{error_chain, SourceLimits, TimeBoxed};

/// Most redirects followed for one request (blob stores redirect once or twice).
const MAX_REDIRECTS: usize = 5;
/// Largest manifest, index or token answer.
const MAX_DOCUMENT: u64 = 4 << 20;

/// A manifest or index as fetched: its bytes, media type and (verified) digest.
pub(crate) struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

/// One registry, one repository, one pull.
pub(crate) struct Registry {
    reference: String,
    base: String,
    repository: String,
    http: Client,
    creds: Option<Credentials>,
    /// The `Authorization` value that worked (or was issued) last.
    /// A mutex, not a cell: a pull's downloader thread shares the client.
    auth: Mutex<Option<String>>,
    limits: SourceLimits,
}

impl Registry {
    /// A client for `r`'s registry over `scheme` (`https`, or `http` for a registry
    /// configured as an `http://` docker source).
    pub fn new(
        r: &OciReference,
        scheme: &str,
        creds: Option<Credentials>,
        limits: SourceLimits,
    ) -> Result<Registry, StoreError> {
        let reference = r.to_string();
        let http = Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .user_agent(concat!("skerry-imgadm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StoreError::Oci {
                reference: reference.clone(),
                blob: None,
                reason: e.to_string(),
            })?;
        let auth = Mutex::new(match &creds {
            Some(Credentials::Bearer(t)) => Some(format!("Bearer {t}")),
            _ => None,
        });
        Ok(Registry {
            reference,
            base: format!("{scheme}://{}", r.registry),
            repository: r.repository.clone(),
            http,
            creds,
            auth,
            limits,
        })
    }

    /// An error about this pull and, if given, one blob.
    pub fn err(&self, blob: Option<&str>, reason: impl Into<String>) -> StoreError {
        StoreError::Oci {
            reference: self.reference.clone(),
            blob: blob.map(str::to_string),
            reason: reason.into(),
        }
    }

    /// GET `url` with the authorization we have; on a 401, answers its challenge
    /// once and retries.
    fn get(&self, url: &str, accept: &str, blob: Option<&str>) -> Result<Response, StoreError> {
        for attempt in 0..2 {
            let mut req = self.http.get(url).header(ACCEPT, accept);
            if let Some(a) = self.auth.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req
                .send()
                .map_err(|e| self.err(blob, format!("{url}: {}", error_chain(&e.without_url()))))?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                self.answer(challenge, blob)?;
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            let hint = match status.as_u16() {
                401 | 403 => " (credentials go in <pool>/config/auth.json)",
                404 => " (not in this registry)",
                _ => "",
            };
            return Err(self.err(blob, format!("{url}: HTTP {}{hint}", status.as_u16())));
        }
        Err(self.err(
            blob,
            format!("{url}: still unauthorized after authenticating"),
        ))
    }

    /// Sets the `Authorization` that answers `challenge`.
    fn answer(&self, challenge: Option<Challenge>, blob: Option<&str>) -> Result<(), StoreError> {
        match challenge {
            Some(Challenge::Basic) => match &self.creds {
                Some(Credentials::Basic(b)) => {
                    *self.auth.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("Basic {b}"));
                    Ok(())
                }
                _ => Err(self.err(
                    blob,
                    "the registry wants a user and password: add them to <pool>/config/auth.json",
                )),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let token = self.token(&realm, service.as_deref(), scope.as_deref(), blob)?;
                *self.auth.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("Bearer {token}"));
                Ok(())
            }
            None => Err(self.err(blob, "HTTP 401 without a usable WWW-Authenticate challenge")),
        }
    }

    /// The token flow: anonymous, or with our Basic credentials.
    fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        blob: Option<&str>,
    ) -> Result<String, StoreError> {
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| self.err(blob, format!("token realm {realm:?}: {e}")))?;
        // A token endpoint over plain HTTP is only trusted for a plain-HTTP registry.
        if url.scheme() != "https" && !(url.scheme() == "http" && self.base.starts_with("http:")) {
            return Err(self.err(blob, format!("token realm {realm:?} is not https")));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair(
                "scope",
                scope.unwrap_or(&format!("repository:{}:pull", self.repository)),
            );
        }
        let mut req = self.http.get(url.clone());
        if let Some(Credentials::Basic(b)) = &self.creds {
            req = req.header(AUTHORIZATION, format!("Basic {b}"));
        }
        let resp = req
            .send()
            .map_err(|e| self.err(blob, format!("{url}: {}", error_chain(&e.without_url()))))?;
        if !resp.status().is_success() {
            return Err(self.err(blob, format!("{url}: HTTP {}", resp.status().as_u16())));
        }
        let body = self.read_document(resp, url.as_str(), blob)?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| self.err(blob, format!("{url}: not a token answer: {e}")))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty() && t.len() < 64 << 10)
            .ok_or_else(|| self.err(blob, format!("{url}: the answer holds no token")))
    }

    /// A small JSON document, bounded in size and time.
    fn read_document(
        &self,
        resp: Response,
        url: &str,
        blob: Option<&str>,
    ) -> Result<Vec<u8>, StoreError> {
        if resp.content_length().is_some_and(|n| n > MAX_DOCUMENT) {
            return Err(self.err(blob, format!("{url}: larger than {MAX_DOCUMENT} bytes")));
        }
        let mut bytes = Vec::new();
        TimeBoxed::new(resp, Instant::now() + self.limits.json_time)
            .take(MAX_DOCUMENT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.err(blob, format!("{url}: {}", error_chain(&e))))?;
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(self.err(blob, format!("{url}: larger than {MAX_DOCUMENT} bytes")));
        }
        Ok(bytes)
    }

    /// The manifest or index `reference` (a tag or a digest) names, of one of the four
    /// manifest media types, with its digest checked against what was asked for and
    /// what the registry claims.
    pub fn manifest(&self, reference: &str) -> Result<Fetched, StoreError> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repository);
        let shown = reference.starts_with("sha256:").then_some(reference);
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
        let resp = self.get(&url, &accept, shown)?;
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(CONTENT_TYPE).unwrap_or_default();
        let claimed = header(reqwest::header::HeaderName::from_static(
            "docker-content-digest",
        ));
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if ![OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&media_type.as_str()) {
            return Err(self.err(
                shown,
                format!("{url}: served a manifest of media type {content_type:?}, not an OCI or Docker v2 manifest or index"),
            ));
        }
        let bytes = self.read_document(resp, &url, shown)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let blob = Some(shown.unwrap_or(&digest));
        if shown.is_some_and(|d| d != digest) {
            return Err(self.err(blob, format!("the manifest served hashes to {digest}")));
        }
        if let Some(c) = claimed.filter(|c| c != &digest) {
            return Err(self.err(
                blob,
                format!("the registry says its digest is {c}, it hashes to {digest}"),
            ));
        }
        // The body's own mediaType, when present, must agree with the header.
        #[derive(serde::Deserialize)]
        struct Typed {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
        }
        let typed: Typed = serde_json::from_slice(&bytes)
            .map_err(|e| self.err(blob, format!("not a JSON manifest: {e}")))?;
        if typed.media_type.as_ref().is_some_and(|t| t != &media_type) {
            return Err(self.err(
                blob,
                format!(
                    "served as {media_type} but says it is {}",
                    typed.media_type.unwrap_or_default()
                ),
            ));
        }
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// Streams blob `d` into `sink`, hashing as it goes: refused the moment it exceeds
    /// its declared size, and unless it ends at that size with the declared digest.
    pub fn blob(&self, d: &Descriptor, sink: &mut dyn Write) -> Result<(), StoreError> {
        let mut r = self.open_blob(d)?;
        std::io::copy(&mut r, sink).map_err(|e| self.err(Some(&d.digest), error_chain(&e)))?;
        r.verify(self)
    }

    /// Blob `d` as a reader that hashes what passes through it and fails (with
    /// `InvalidData`) the moment more than its declared size arrives; its
    /// [`BlobReader::verify`] drains the rest and checks size and digest.
    pub fn open_blob(&self, d: &Descriptor) -> Result<BlobReader, StoreError> {
        let blob = Some(d.digest.as_str());
        let hex = d
            .sha256_hex()
            .ok_or_else(|| self.err(blob, "not a sha256 digest"))?
            .to_string();
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repository, d.digest);
        let resp = self.get(&url, "*/*", blob)?;
        if resp.content_length().is_some_and(|n| n > d.size) {
            return Err(self.err(
                blob,
                format!(
                    "the registry sends {} bytes, more than the {} bytes the manifest declares",
                    resp.content_length().unwrap_or(0),
                    d.size
                ),
            ));
        }
        let until = Instant::now() + self.limits.file_time(d.size);
        Ok(BlobReader {
            body: TimeBoxed::new(resp, until),
            hasher: Sha256::new(),
            got: 0,
            size: d.size,
            digest: d.digest.clone(),
            hex,
        })
    }
}

/// A blob as it streams: hashed, counted, cut past its declared size.
pub(crate) struct BlobReader {
    body: TimeBoxed<Response>,
    hasher: Sha256,
    got: u64,
    size: u64,
    digest: String,
    hex: String,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // One byte past the declared size is enough to know it lies.
        let room = (self.size + 1 - self.got).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.body.read(&mut buf[..room])?;
        self.got += n as u64;
        if self.got > self.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the registry sends more than the {} bytes the manifest declares",
                    self.size
                ),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl BlobReader {
    /// Reads what the consumer left (a tar's trailing padding), then checks that the
    /// blob ended at its declared size with its declared digest.
    pub fn verify(mut self, reg: &Registry) -> Result<(), StoreError> {
        let blob = Some(self.digest.clone());
        let blob = blob.as_deref();
        std::io::copy(&mut self, &mut std::io::sink())
            .map_err(|e| reg.err(blob, error_chain(&e)))?;
        if self.got != self.size {
            return Err(reg.err(
                blob,
                format!(
                    "the registry sent {} of the {} bytes declared",
                    self.got, self.size
                ),
            ));
        }
        let actual = hex::encode(self.hasher.finalize());
        if actual != self.hex {
            return Err(reg.err(blob, format!("the bytes served hash to sha256:{actual}")));
        }
        Ok(())
    }
}
