//! `imgadm serve`: the pool's images over the IMGAPI HTTP protocol, so one node (or a
//! laptop) can feed a fleet. Files are streamed from disk with Range support, which
//! is what lets an interrupted import resume.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use crate::error::StoreError;
use crate::manifest::ImageManifest;
use crate::store::{ImageStore, FILE_NAME};

/// IMGAPI's default page size.
const DEFAULT_LIMIT: usize = 1000;

/// A bound IMGAPI server over one store.
pub struct Server {
    store: ImageStore,
    listener: std::net::TcpListener,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(store: ImageStore, addr: SocketAddr) -> Result<Server, StoreError> {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| StoreError::Network {
            url: format!("http://{addr}"),
            reason: format!("cannot listen: {e}"),
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| StoreError::Network {
                url: format!("http://{addr}"),
                reason: e.to_string(),
            })?;
        Ok(Server { store, listener })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound socket has an address")
    }

    /// Serves until the process ends (its own tokio runtime; call from a plain thread).
    pub fn run(self) -> Result<(), StoreError> {
        let addr = self.local_addr();
        let net_err = |e: std::io::Error| StoreError::Network {
            url: format!("http://{addr}"),
            reason: e.to_string(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(net_err)?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(self.listener).map_err(net_err)?;
            axum::serve(listener, router(self.store))
                .await
                .map_err(net_err)
        })
    }
}

/// The IMGAPI routes over `store`.
pub fn router(store: ImageStore) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/images", get(list_images))
        .route("/images/{uuid}", get(get_image))
        .route("/images/{uuid}/file", get(get_file))
        .with_state(store)
}

async fn ping() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "ping": "pong",
        "imgapi": true,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// An IMGAPI-shaped error answer (`{"code": ..., "message": ...}`).
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, message: String) -> ApiError {
    ApiError {
        status,
        code,
        message,
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        e.to_string(),
    )
}

fn not_found(what: impl std::fmt::Display) -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("image {what} not found"),
    )
}

/// Filters and paging of `GET /images`.
#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    marker: Option<Uuid>,
    name: Option<String>,
    version: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    os: Option<String>,
}

async fn manifests(store: ImageStore) -> Result<Vec<ImageManifest>, ApiError> {
    tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(internal)?
        // An image pulled from a registry keeps only its OCI manifest as `file`: not
        // a rootfs tarball another node could import, so it is not offered.
        .map(|imgs| {
            imgs.into_iter()
                .map(|i| i.manifest)
                .filter(|m| m.oci().is_none())
                .collect()
        })
        .map_err(internal)
}

async fn list_images(
    State(store): State<ImageStore>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let mut all = manifests(store).await?;
    // Pages are stable: ordered by publication time, then UUID, and `marker` is the
    // UUID of the last image of the previous page.
    all.sort_by(|a, b| (&a.published_at, a.uuid).cmp(&(&b.published_at, b.uuid)));
    let start = match q.marker {
        Some(m) => match all.iter().position(|i| i.uuid == m) {
            Some(p) => p + 1,
            None => {
                return Err(error(
                    StatusCode::CONFLICT,
                    "InvalidParameter",
                    format!("marker {m} is not an image"),
                ))
            }
        },
        None => 0,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, DEFAULT_LIMIT);
    let page: Vec<&ImageManifest> = all[start..]
        .iter()
        .filter(|m| q.name.as_ref().is_none_or(|n| &m.name == n))
        .filter(|m| q.version.as_ref().is_none_or(|v| &m.version == v))
        .filter(|m| q.kind.as_ref().is_none_or(|k| m.kind.to_string() == *k))
        .filter(|m| q.os.as_ref().is_none_or(|o| &m.os == o))
        .take(limit)
        .collect();
    Ok(Json(page).into_response())
}

fn parse_uuid(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| not_found(s))
}

async fn find(store: ImageStore, uuid: Uuid) -> Result<crate::store::Image, ApiError> {
    tokio::task::spawn_blocking(move || store.get(&uuid))
        .await
        .map_err(internal)?
        .map_err(internal)?
        .ok_or_else(|| not_found(uuid))
}

async fn get_image(
    State(store): State<ImageStore>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let img = find(store, parse_uuid(&id)?).await?;
    Ok(Json(img.manifest).into_response())
}

/// A parsed `Range: bytes=...` header: the inclusive byte range to send.
fn parse_range(h: &str, size: u64) -> Option<(u64, u64)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // multipart ranges: not needed by any client of ours
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (size.saturating_sub(n), size.checked_sub(1)?)
    } else {
        let s: u64 = a.parse().ok()?;
        let e = if b.is_empty() {
            size.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?)
        };
        (s, e)
    };
    (start <= end && end < size).then_some((start, end))
}

async fn get_file(
    State(store): State<ImageStore>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let uuid = parse_uuid(&id)?;
    let img = find(store.clone(), uuid).await?;
    let path = store.image_dir(&uuid).join(FILE_NAME);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| internal(format!("{}: {e}", path.display())))?;
    let size = img.manifest.file().size;
    let (status, start, len) = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => (StatusCode::OK, 0, size),
        Some(r) => match parse_range(r, size) {
            Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
            None => {
                let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(resp);
            }
        },
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(internal)?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    if let Some(sum) = &img.manifest.file().sha256 {
        if let Ok(v) = HeaderValue::from_str(sum) {
            h.insert("x-skerry-sha256", v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 9)));
        assert_eq!(parse_range("bytes=4-", 10), Some((4, 9)));
        assert_eq!(parse_range("bytes=2-5", 10), Some((2, 5)));
        assert_eq!(parse_range("bytes=2-50", 10), Some((2, 9)));
        assert_eq!(parse_range("bytes=-3", 10), Some((7, 9)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=5-2", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
        assert_eq!(parse_range("bytes=0-", 0), None);
    }
}
