//! The endpoint over a real socket, on the containerd fake: a server on a temporary port, and
//! requests written and read as bytes. What is served ([`serving`]), signatures and referrers ([`signatures`]), and how connections are
//! kept and refused ([`connections`]).

use super::*;
use crate::containerd::ImageTarget;
use crate::digest::Digest;
use crate::oci::{MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST};
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

/// The image `docker.io/library/busybox:1.35`, served (airlift's).
async fn busybox(fake: &Fake) -> Image {
    let busybox = image(fake, "busybox");
    put(fake, "docker.io/library/busybox:1.35", &busybox.index, true).await;
    busybox
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

mod connections;
mod serving;
mod signatures;
