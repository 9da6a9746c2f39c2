//! The endpoint over a real socket, on the containerd fake: what is served and what is not,
//! headers, ranges, errors, writes refused, counters.

use super::*;
use crate::archive::spec::{MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST};
use crate::containerd::ImageTarget;
use crate::digest::Digest;
use crate::testkit::fake::Fake;
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct FakeConnect(Fake);

#[async_trait::async_trait]
impl Connect for FakeConnect {
    async fn connect(&self) -> crate::containerd::Result<Client> {
        Ok(self.0.client())
    }
}

/// An image: an index over one manifest of a config and a layer; its digests.
struct Image {
    index: Digest,
    manifest: Digest,
    config: Digest,
    layer: Digest,
}

fn image(fake: &Fake, seed: &str) -> Image {
    let config = fake.add_blob(format!("{{\"seed\":\"{seed}\"}}").as_bytes(), &[]);
    let layer = fake.add_blob(format!("layer of {seed}, 0123456789").as_bytes(), &[]);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 1}],
    });
    let manifest = fake.add_blob(manifest.to_string().as_bytes(), &[]);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [{"mediaType": MEDIA_OCI_MANIFEST, "digest": manifest.to_string(), "size": 1}],
    });
    let index = fake.add_blob(index.to_string().as_bytes(), &[]);
    Image {
        index,
        manifest,
        config,
        layer,
    }
}

async fn put(fake: &Fake, name: &str, digest: &Digest, airlift: bool) {
    let mut labels = BTreeMap::new();
    if airlift {
        labels.insert(crate::labels::PINNED.to_string(), "true".to_string());
    }
    fake.client()
        .put_image(
            &ImageTarget {
                name: name.into(),
                media_type: MEDIA_OCI_INDEX.into(),
                digest: digest.to_string(),
                size: 1,
                annotations: BTreeMap::new(),
            },
            &labels,
        )
        .await
        .unwrap();
}

struct Server {
    addr: std::net::SocketAddr,
    counters: Counters,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(fake: &Fake, settings: Settings) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Counters::default();
    let registry = Registry::new(
        settings,
        Arc::new(FakeConnect(fake.clone())),
        counters.clone(),
    );
    let task = serve(Arc::new(registry), listener);
    Server {
        addr,
        counters,
        task,
    }
}

fn settings() -> Settings {
    Settings {
        max_connections: 16,
        ..Settings::default()
    }
}

/// A response as received: status, headers (names lowercased), body.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        v["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn parse(data: &[u8]) -> Got {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = std::str::from_utf8(&data[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    Got {
        status,
        headers,
        body: data[end + 4..].to_vec(),
    }
}

/// Sends `raw` (a whole request, or several) and reads until the server closes.
async fn raw(addr: std::net::SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out)).await;
    out
}

async fn request(addr: std::net::SocketAddr, method: &str, target: &str, headers: &[&str]) -> Got {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    parse(&raw(addr, text.as_bytes()).await)
}

async fn get(addr: std::net::SocketAddr, target: &str) -> Got {
    request(addr, "GET", target, &[]).await
}

#[tokio::test]
async fn serves_what_served_images_reach_and_nothing_else() {
    let fake = Fake::new();
    let busybox = image(&fake, "busybox");
    let other = image(&fake, "other");
    let stray = fake.add_blob(b"a blob no served image reaches", &[]);
    put(
        &fake,
        "docker.io/library/busybox:1.35",
        &busybox.index,
        true,
    )
    .await;
    put(&fake, "quay.io/org/app:v1", &busybox.index, true).await;
    put(&fake, "docker.io/library/other:1", &other.index, false).await;
    let s = start(&fake, settings()).await;

    let r = get(s.addr, "/v2/").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // A tag, by every name that means it.
    for target in [
        "/v2/library/busybox/manifests/1.35",
        "/v2/busybox/manifests/1.35",
        "/v2/docker.io/library/busybox/manifests/1.35",
        "/v2/library/busybox/manifests/1.35?ns=docker.io",
        "/v2/org/app/manifests/v1?ns=quay.io",
        "/v2/quay.io/org/app/manifests/v1",
    ] {
        let r = get(s.addr, target).await;
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(r.header("content-type"), Some(MEDIA_OCI_INDEX), "{target}");
        let digest = busybox.index.to_string();
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(Digest::of(&r.body), busybox.index);
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
    }
    // HEAD: the same headers, no body.
    let r = request(s.addr, "HEAD", "/v2/library/busybox/manifests/1.35", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_ne!(r.header("content-length"), Some("0"));
    // The child manifest by digest, with its own media type.
    let r = get(
        s.addr,
        &format!("/v2/library/busybox/manifests/{}", busybox.manifest),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(MEDIA_OCI_MANIFEST));
    // Blobs, whole and in part.
    let r = get(
        s.addr,
        &format!("/v2/library/busybox/blobs/{}", busybox.layer),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(Digest::of(&r.body), busybox.layer);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let size = r.body.len();
    let r = request(
        s.addr,
        "GET",
        &format!("/v2/library/busybox/blobs/{}", busybox.layer),
        &["Range: bytes=2-5"],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"yer ");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 2-5/{size}").as_str())
    );
    let r = request(
        s.addr,
        "GET",
        &format!("/v2/library/busybox/blobs/{}", busybox.config),
        &["Range: bytes=1000-"],
    )
    .await;
    assert_eq!(r.status, 416);
    assert!(r.header("content-range").unwrap().starts_with("bytes */"));

    // Not served: another image's blob, a stray blob, an image airlift does not manage.
    for (target, status, code) in [
        (
            format!("/v2/library/busybox/blobs/{}", other.layer),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            format!("/v2/library/busybox/blobs/{stray}"),
            404,
            "BLOB_UNKNOWN",
        ),
        ("/v2/library/other/manifests/1".into(), 404, "NAME_UNKNOWN"),
        (
            format!("/v2/library/other/blobs/{}", other.layer),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            "/v2/library/busybox/manifests/9.9".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/library/busybox/manifests/{}", other.manifest),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/library/busybox/manifests/sha256:abc".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/busybox/blobs/sha256:abc".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/busybox/blobs/md5:abc".into(),
            400,
            "DIGEST_INVALID",
        ),
        ("/v2/library/../etc/manifests/1".into(), 400, "NAME_INVALID"),
        ("/v2/%2e%2e/x/manifests/1".into(), 400, "NAME_INVALID"),
        (
            "/v2/library/busybox/manifests/1?ns=bad/ns".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/library/busybox/tags/list?ns=quay.io".into(),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "/v2/library/busybox/blobs/uploads/".into(),
            404,
            "NOT_FOUND",
        ),
        ("/etc/passwd".into(), 404, "NOT_FOUND"),
    ] {
        let r = get(s.addr, &target).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{target}: {r:?}"
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{target}"
        );
    }
    // Writes are refused, whatever the path.
    for method in ["PUT", "POST", "PATCH", "DELETE", "OPTIONS"] {
        let r = request(
            s.addr,
            method,
            "/v2/library/busybox/manifests/1.35",
            &["Content-Length: 3"],
        )
        .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (405, "UNSUPPORTED"),
            "{method}"
        );
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }

    // The lists.
    let r = get(s.addr, "/v2/_catalog").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"repositories": ["library/busybox", "quay.io/org/app"]})
    );
    let r = get(s.addr, "/v2/_catalog?n=1").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["library/busybox"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/_catalog?n=1&last=library/busybox>; rel=\"next\"")
    );
    put(
        &fake,
        "docker.io/library/busybox:stable",
        &busybox.index,
        true,
    )
    .await;
    let r = get(s.addr, "/v2/library/busybox/tags/list").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    // Within the listing's freshness the new tag may not be there yet; a miss lists again.
    let r2 = get(s.addr, "/v2/library/busybox/manifests/stable").await;
    assert_eq!(r2.status, 200, "a new tag is found at once");
    assert_eq!(v["name"], "library/busybox");

    // Deleted: no longer served once the listing is older than its freshness.
    fake.delete_image("quay.io/org/app:v1");
    tokio::time::sleep(served::FRESH).await;
    let r = get(s.addr, "/v2/quay.io/org/app/manifests/v1").await;
    assert_eq!(r.code(), "NAME_UNKNOWN");

    let text = {
        let mut reg = prometheus_client::registry::Registry::default();
        s.counters.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    };
    for line in [
        "registry_requests_total{route=\"manifest\",method=\"GET\",status=\"200\"}",
        "registry_requests_total{route=\"blob\",method=\"GET\",status=\"206\"} 1",
        "registry_requests_total{route=\"blob\",method=\"GET\",status=\"416\"} 1",
        "registry_requests_total{route=\"manifest\",method=\"other\",status=\"405\"} 5",
        "registry_sent_bytes_total{route=\"blob\"}",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn files_of_a_content_root_are_sent_and_keep_alive_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new().with_content_root(dir.path());
    let busybox = image(&fake, "busybox");
    let root = crate::store::layout::ContentRoot::new(dir.path());
    std::fs::create_dir_all(root.blobs()).unwrap();
    for d in [
        &busybox.index,
        &busybox.manifest,
        &busybox.config,
        &busybox.layer,
    ] {
        let data = fake.state().blobs[d].data.clone();
        std::fs::write(root.blob(d), data).unwrap();
    }
    // A big layer, so sendfile takes several calls.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let big_d = Digest::of(&big);
    std::fs::write(root.blob(&big_d), &big).unwrap();
    let manifest = serde_json::json!({
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"digest": busybox.config.to_string(), "size": 1},
        "layers": [{"digest": big_d.to_string(), "size": big.len()}],
    });
    let m = manifest.to_string();
    let md = Digest::of(m.as_bytes());
    std::fs::write(root.blob(&md), &m).unwrap();
    put(
        &fake,
        "docker.io/library/busybox:1.35",
        &busybox.index,
        true,
    )
    .await;
    let mut labels = BTreeMap::new();
    labels.insert(crate::labels::PINNED.to_string(), "true".to_string());
    fake.client()
        .put_image(
            &ImageTarget {
                name: "docker.io/library/big:1".into(),
                media_type: MEDIA_OCI_MANIFEST.into(),
                digest: md.to_string(),
                size: m.len() as i64,
                annotations: BTreeMap::new(),
            },
            &labels,
        )
        .await
        .unwrap();
    let s = start(&fake, settings()).await;
    let reads = fake.count("read");
    let r = get(s.addr, &format!("/v2/library/big/blobs/{big_d}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(Digest::of(&r.body), big_d);
    let r = request(
        s.addr,
        "GET",
        &format!("/v2/library/big/blobs/{big_d}"),
        &["Range: bytes=-10"],
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (206, &big[big.len() - 10..]));
    assert_eq!(
        fake.count("read"),
        reads,
        "files are read from the content root, not the Content API"
    );

    // Two pipelined requests on one connection, then a close.
    let two = format!(
        "GET /v2/library/busybox/blobs/{} HTTP/1.1\r\nHost: x\r\n\r\nHEAD /v2/library/busybox/manifests/1.35 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        busybox.layer
    );
    let out = raw(s.addr, two.as_bytes()).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    // A broken file (not what its digest says) is not served as a manifest.
    std::fs::write(root.blob(&busybox.index), b"{\"tampered\":1}").unwrap();
    let r = get(s.addr, "/v2/library/busybox/manifests/1.35").await;
    assert_eq!(r.code(), "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn bad_heads_slow_clients_and_too_many_connections() {
    let fake = Fake::new();
    let s = start(
        &fake,
        Settings {
            max_connections: 4,
            ..Settings::default()
        },
    )
    .await;
    let out = raw(s.addr, b"\x00\x01garbage\r\n\r\n").await;
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let huge = format!(
        "GET /v2/ HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(http::MAX_HEAD)
    );
    let out = raw(s.addr, huge.as_bytes()).await;
    assert!(
        out.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let long = format!("GET /v2/{}/manifests/1 HTTP/1.1\r\n\r\n", "a/".repeat(1500));
    let out = raw(s.addr, long.as_bytes()).await;
    assert!(
        out.starts_with(b"HTTP/1.1 414"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let r = get(s.addr, &format!("/v2/{}/manifests/1", "a".repeat(300))).await;
    assert_eq!(r.code(), "NAME_INVALID");

    // Connections that hold their slot without sending anything: the fifth is turned away.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let out = raw(s.addr, b"GET /v2/ HTTP/1.1\r\n\r\n").await;
    assert!(
        out.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    drop(idle);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = get(s.addr, "/v2/").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn containerd_down_is_503_and_comes_back() {
    let fake = Fake::new();
    let busybox = image(&fake, "busybox");
    put(
        &fake,
        "docker.io/library/busybox:1.35",
        &busybox.index,
        true,
    )
    .await;
    fake.fail("list_images", None, Class::Unavailable);
    fake.fail("get_image", None, Class::Unavailable);
    let s = start(&fake, settings()).await;
    let r = get(s.addr, "/v2/library/busybox/manifests/1.35").await;
    assert_eq!((r.status, r.code().as_str()), (503, "UNAVAILABLE"));
    fake.heal();
    let r = get(s.addr, "/v2/library/busybox/manifests/1.35").await;
    assert_eq!(r.status, 200);
}

/// containerd escapes the `:` of a registry with a port in `ns=` (Go's url.Values): the
/// endpoint serves such a registry's images by either spelling.
#[tokio::test]
async fn ns_of_a_registry_with_a_port_is_percent_decoded() {
    let fake = Fake::new();
    let busybox = image(&fake, "busybox");
    put(&fake, "127.0.0.1:5000/org/app:v1", &busybox.index, true).await;
    let s = start(&fake, settings()).await;
    for target in [
        "/v2/org/app/manifests/v1?ns=127.0.0.1%3A5000",
        "/v2/org/app/manifests/v1?ns=127.0.0.1:5000",
    ] {
        let r = get(s.addr, target).await;
        assert_eq!(r.status, 200, "{target}: {r:?}");
    }
    let r = get(s.addr, "/v2/org/app/manifests/v1?ns=127.0.0.1%3A5001").await;
    assert_eq!(r.status, 404);
    let r = get(s.addr, "/v2/org/app/manifests/v1?ns=127.0.0.1%3").await;
    assert_eq!((r.status, r.code().as_str()), (400, "NAME_INVALID"));
}

/// Bytes from a small deterministic generator (xorshift), biased towards the characters
/// requests are made of.
fn noise(state: &mut u64, len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"/:.-_%@?&=,abz09AZ \r\n\t\x00\xff";
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            let r = *state as usize;
            if r.is_multiple_of(4) {
                (r >> 8) as u8
            } else {
                ALPHABET[(r >> 8) % ALPHABET.len()]
            }
        })
        .collect()
}

#[tokio::test]
async fn no_input_makes_it_panic() {
    let fake = Fake::new();
    let busybox = image(&fake, "busybox");
    put(
        &fake,
        "docker.io/library/busybox:1.35",
        &busybox.index,
        true,
    )
    .await;
    let registry = Registry::new(
        settings(),
        Arc::new(FakeConnect(fake.clone())),
        Counters::default(),
    );
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let prefixes = [
        "/v2/",
        "/v2/library/busybox/manifests/",
        "/v2/library/busybox/blobs/",
        "/v2/library/",
        "/v2/_catalog?n=",
        "/v2/quay.io/",
    ];
    for i in 0..20_000 {
        let tail =
            String::from_utf8_lossy(&noise(&mut state, i % 40)).replace(['\r', '\n', ' '], "");
        let target = format!("{}{tail}", prefixes[i % prefixes.len()]);
        let range = String::from_utf8_lossy(&noise(&mut state, i % 12)).replace(['\r', '\n'], "");
        let req = http::Request::new(
            if i % 7 == 0 { "HEAD" } else { "GET" },
            &target,
            &[("Range", &format!("bytes={range}"))],
        );
        let (_, resp) = registry.respond(&req).await;
        assert!(
            resp.status < 500 || resp.status == 503,
            "{target}: {}",
            resp.status
        );
        let _ = names::repository(&tail, Some(&range));
        let _ = range::wanted(Some(&range), (i % 5) as u64);
    }
    // Raw heads through the parser.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = serve(Arc::new(registry), listener);
    for i in 0..300 {
        let mut head = b"GET /v2/".to_vec();
        head.extend(noise(&mut state, i % 200));
        head.extend_from_slice(b"\r\n\r\n");
        let out = raw(addr, &head).await;
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 "),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }
    let r = get(addr, "/v2/library/busybox/manifests/1.35").await;
    assert_eq!(r.status, 200);
    task.abort();
}
