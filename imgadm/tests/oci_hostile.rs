//! Pulls from a hostile registry written here (plain std sockets): a lying digest, a
//! layer bigger than declared, a manifest of the wrong media type, a redirect loop, a
//! layer with `../`. Each import fails naming the reference and the blob and leaves
//! nothing in the store. Also: the token flow with credentials from the pool, and a
//! multi-arch index.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{gzip, tarball, Entry};
use imgadm::sources::{add_kind, SourceKind};
use imgadm::ImageStore;
use sha2::{Digest, Sha256};

/// What the fake registry answers one path with.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn ok(content_type: &str, body: Vec<u8>) -> Answer {
    Answer {
        status: 200,
        headers: vec![("Content-Type".into(), content_type.into())],
        body,
    }
}

/// A pseudo-header: send this answer without a Content-Length.
const NO_LENGTH: &str = "x-test-no-length";

type Routes = Arc<Mutex<HashMap<String, Answer>>>;

/// A registry that answers GETs from a table; a request whose Authorization is not
/// `Bearer good-token` gets a Bearer challenge when `token_auth` is on.
struct Fake {
    addr: String,
    routes: Routes,
    /// Authorization headers seen by the token endpoint.
    token_requests: Arc<Mutex<Vec<String>>>,
}

fn start(token_auth: bool) -> Fake {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let routes: Routes = Arc::default();
    let token_requests: Arc<Mutex<Vec<String>>> = Arc::default();
    let (r, t, a) = (routes.clone(), token_requests.clone(), addr.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let (r, t, a) = (r.clone(), t.clone(), a.clone());
            std::thread::spawn(move || {
                let mut rd = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                rd.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    if rd.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h
                        .strip_prefix("authorization: ")
                        .or(h.strip_prefix("Authorization: "))
                    {
                        auth = v.trim().to_string();
                    }
                }
                let answer = if path.starts_with("/token") {
                    t.lock().unwrap().push(auth);
                    ok("application/json", br#"{"token":"good-token"}"#.to_vec())
                } else if token_auth && auth != "Bearer good-token" {
                    Answer {
                        status: 401,
                        headers: vec![(
                            "WWW-Authenticate".into(),
                            format!(
                                r#"Bearer realm="http://{a}/token",service="fake",scope="repository:x/app:pull""#
                            ),
                        )],
                        body: vec![],
                    }
                } else {
                    let path = path.split('?').next().unwrap_or("").to_string();
                    r.lock().unwrap().get(&path).cloned().unwrap_or(Answer {
                        status: 404,
                        headers: vec![],
                        body: vec![],
                    })
                };
                // A body "until the connection closes" when the test asks for one.
                let no_length = answer.headers.iter().any(|(k, _)| k == NO_LENGTH);
                let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", answer.status);
                if !no_length {
                    head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
                }
                for (k, v) in answer.headers.iter().filter(|(k, _)| k != NO_LENGTH) {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&answer.body);
                let mut rest = Vec::new();
                let _ = s.shutdown(std::net::Shutdown::Write);
                let _ = rd.read_to_end(&mut rest);
            });
        }
    });
    Fake {
        addr,
        routes,
        token_requests,
    }
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

impl Fake {
    fn route(&self, path: &str, a: Answer) {
        self.routes.lock().unwrap().insert(path.to_string(), a);
    }

    /// Publishes `x/app:v1` with these layers; each layer's declared (size, digest)
    /// may be overridden to lie. Returns the layers' declared digests.
    fn publish(&self, layers: &[(Vec<u8>, Option<u64>, Option<String>)]) -> Vec<String> {
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": []}
        })
        .to_string()
        .into_bytes();
        let mut descs = Vec::new();
        let mut declared = Vec::new();
        for (bytes, size, dig) in layers {
            let d = dig.clone().unwrap_or_else(|| digest(bytes));
            self.route(
                &format!("/v2/x/app/blobs/{d}"),
                ok("application/octet-stream", bytes.clone()),
            );
            descs.push(serde_json::json!({
                "mediaType": LAYER, "digest": d, "size": size.unwrap_or(bytes.len() as u64)
            }));
            declared.push(d);
        }
        let cd = digest(&config);
        self.route(
            &format!("/v2/x/app/blobs/{cd}"),
            ok("application/octet-stream", config.clone()),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": descs,
        })
        .to_string()
        .into_bytes();
        self.route(
            &format!("/v2/x/app/manifests/{}", digest(&manifest)),
            ok(MANIFEST, manifest.clone()),
        );
        self.route("/v2/x/app/manifests/v1", ok(MANIFEST, manifest));
        declared
    }

    fn store(&self) -> (tempfile::TempDir, ImageStore) {
        let pool = common::pool();
        add_kind(
            pool.path(),
            &format!("http://{}", self.addr),
            SourceKind::Docker,
        )
        .unwrap();
        let store = ImageStore::open(pool.path()).unwrap();
        (pool, store)
    }

    fn reference(&self) -> String {
        format!("oci:{}/x/app:v1", self.addr)
    }

    /// Imports `x/app:v1`, expecting failure; asserts the store holds nothing.
    fn fails(&self) -> String {
        let (pool, store) = self.store();
        let r = imgadm::parse_checked_ref(&self.reference()).unwrap();
        let err = store.import_ref(&r).unwrap_err().to_string();
        assert!(
            err.contains(&self.reference()),
            "names the reference: {err}"
        );
        assert!(store.list().unwrap().is_empty(), "an image was installed");
        let partial = store.images_dir().join(".partial");
        let left: Vec<_> = std::fs::read_dir(&partial).unwrap().collect();
        assert!(left.is_empty(), "debris in {}: {left:?}", partial.display());
        drop(pool);
        err
    }
}

fn good_layer() -> Vec<u8> {
    gzip(&tarball(&[Entry::File("etc/ok", b"ok\n", 0o644)], (0, 0)))
}

#[test]
fn a_blob_that_does_not_hash_to_its_digest_is_refused() {
    let f = start(false);
    let lie = digest(b"something else");
    f.publish(&[(good_layer(), None, Some(lie.clone()))]);
    let err = f.fails();
    assert!(
        err.contains(&format!("blob {lie}")) && err.contains("hash"),
        "{err}"
    );
}

#[test]
fn a_layer_bigger_than_declared_is_cut() {
    let f = start(false);
    let layer = good_layer();
    let d = f.publish(&[(layer.clone(), Some(layer.len() as u64 - 10), None)]);
    let err = f.fails();
    assert!(err.contains(&format!("blob {}", d[0])), "{err}");
    assert!(
        err.contains(&format!("{} bytes", layer.len() - 10)),
        "{err}"
    );
}

#[test]
fn a_layer_bigger_than_declared_without_a_length_is_cut_while_streaming() {
    let f = start(false);
    // Valid gzip, then junk past the declared size: the cut comes from the stream.
    let layer = good_layer();
    let mut longer = layer.clone();
    longer.extend(std::iter::repeat_n(0u8, 1 << 20));
    let d = f.publish(&[(longer, Some(layer.len() as u64), None)]);
    let path = format!("/v2/x/app/blobs/{}", d[0]);
    let mut a = f.routes.lock().unwrap()[&path].clone();
    a.headers.push((NO_LENGTH.into(), "1".into()));
    f.route(&path, a);
    let err = f.fails();
    assert!(err.contains(&format!("blob {}", d[0])), "{err}");
    assert!(
        err.contains(&format!("more than the {} bytes", layer.len())),
        "{err}"
    );
}

#[test]
fn a_manifest_of_the_wrong_media_type_is_refused() {
    let f = start(false);
    f.publish(&[(good_layer(), None, None)]);
    let m = f.routes.lock().unwrap()["/v2/x/app/manifests/v1"].clone();
    f.route("/v2/x/app/manifests/v1", ok("text/html", m.body));
    let err = f.fails();
    assert!(err.contains("media type \"text/html\""), "{err}");
}

#[test]
fn a_registry_that_lies_about_the_manifest_digest_is_refused() {
    let f = start(false);
    f.publish(&[(good_layer(), None, None)]);
    let mut m = f.routes.lock().unwrap()["/v2/x/app/manifests/v1"].clone();
    let claimed = digest(b"another manifest");
    m.headers
        .push(("Docker-Content-Digest".into(), claimed.clone()));
    f.route("/v2/x/app/manifests/v1", m);
    let err = f.fails();
    assert!(err.contains(&claimed), "{err}");
}

#[test]
fn a_redirect_loop_is_given_up() {
    let f = start(false);
    f.route(
        "/v2/x/app/manifests/v1",
        Answer {
            status: 302,
            headers: vec![("Location".into(), "/v2/x/app/manifests/v1".into())],
            body: vec![],
        },
    );
    let err = f.fails();
    assert!(err.contains("redirect"), "{err}");
}

#[test]
fn a_layer_escaping_with_dotdot_is_refused() {
    let f = start(false);
    let evil = gzip(&tarball(
        &[Entry::File("../../escaped", b"x", 0o644)],
        (0, 0),
    ));
    let d = f.publish(&[(good_layer(), None, None), (evil, None, None)]);
    let err = f.fails();
    assert!(err.contains(&format!("blob {}", d[1])), "{err}");
    assert!(err.contains(".."), "{err}");
}

#[test]
fn the_token_flow_uses_the_pool_credentials_and_an_index_gives_amd64() {
    let f = start(true);
    f.publish(&[(good_layer(), None, None)]);
    // Wrap the manifest in an index whose first entry is another platform.
    let m = f.routes.lock().unwrap()["/v2/x/app/manifests/v1"].clone();
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": MANIFEST, "digest": digest(b"arm"), "size": 3,
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": MANIFEST, "digest": digest(&m.body), "size": m.body.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ]
    })
    .to_string()
    .into_bytes();
    f.route(
        "/v2/x/app/manifests/v1",
        ok("application/vnd.oci.image.index.v1+json", index.clone()),
    );
    let (pool, store) = f.store();
    std::fs::write(
        imgadm::oci::auth_path(pool.path()),
        format!(
            r#"{{"auths":{{"{}":{{"username":"u","password":"p"}}}}}}"#,
            f.addr
        ),
    )
    .unwrap();
    let r = imgadm::parse_checked_ref(&f.reference()).unwrap();
    let img = store.import_ref(&r).unwrap();
    assert!(img.path.join("etc/ok").is_file());
    let o = img.manifest.oci().unwrap();
    assert_eq!(o.digest, digest(&m.body), "the amd64 manifest was pulled");
    assert_eq!(o.resolved, digest(&index), "the tag resolved to the index");
    let seen = f.token_requests.lock().unwrap().clone();
    assert!(!seen.is_empty(), "no token was asked for");
    // base64("u:p")
    assert!(seen.iter().all(|a| a == "Basic dTpw"), "{seen:?}");
}
