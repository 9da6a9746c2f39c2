//! Client pulls from a registry on a real socket (a small server answering from a map, with
//! token authentication) into the containerd fake: what is fetched, how it is labelled, the
//! hosts tried in order, and that a pull that fails leaves no image and no ingest.

use super::*;
use crate::platform::Platform;
use crate::testkit::fake::Fake;
use http_body_util::Full;
use hyper::body::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the test registry serves, and what it was asked.
#[derive(Default)]
struct Content {
    /// Path → (content type, body).
    files: HashMap<String, (String, Vec<u8>)>,
    /// A bearer token every request must carry (from `/token`).
    token: Option<String>,
    /// Every request: `path?query`.
    log: Mutex<Vec<String>>,
}

struct TestRegistry {
    addr: SocketAddr,
    content: Arc<Content>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestRegistry {
    fn asked(&self) -> Vec<String> {
        self.content.log.lock().unwrap().clone()
    }
}

async fn answer(
    c: Arc<Content>,
    addr: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    c.log.lock().unwrap().push(target);
    let reply = |status: u16, ctype: &str, body: Vec<u8>| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    if let Some(t) = &c.token {
        if path == "/token" {
            let body = serde_json::json!({ "token": t }).to_string();
            return Ok(reply(200, "application/json", body.into_bytes()));
        }
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(format!("Bearer {t}").as_str()) {
            let mut r = reply(401, "application/json", b"{}".to_vec());
            r.headers_mut().insert(
                "www-authenticate",
                format!("Bearer realm=\"http://{addr}/token\",service=\"test\"")
                    .parse()
                    .unwrap(),
            );
            return Ok(r);
        }
    }
    Ok(match c.files.get(&path) {
        Some((ctype, body)) => reply(200, ctype, body.clone()),
        None => reply(
            404,
            "application/json",
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#.to_vec(),
        ),
    })
}

async fn start(content: Content) -> TestRegistry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let content = Arc::new(content);
    let c = content.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(c.clone(), addr, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    TestRegistry {
        addr,
        content,
        task,
    }
}

/// A two-platform image: the index, and per platform (manifest, config, layer).
struct Image {
    index: (Digest, Vec<u8>),
    per_platform: Vec<[(Digest, Vec<u8>); 3]>,
}

fn json(v: serde_json::Value) -> (Digest, Vec<u8>) {
    let b = v.to_string().into_bytes();
    (Digest::of(&b), b)
}

fn image() -> Image {
    let mut per_platform = Vec::new();
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = json(serde_json::json!({"architecture": arch, "os": "linux"}));
        let layer_bytes = format!("the {arch} layer, gzip or not").into_bytes();
        let layer = (Digest::of(&layer_bytes), layer_bytes);
        let manifest = json(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::MEDIA_OCI_MANIFEST,
            "config": {"mediaType": oci::MEDIA_OCI_CONFIG, "digest": config.0.to_string(), "size": config.1.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.0.to_string(), "size": layer.1.len()}],
        }));
        entries.push(serde_json::json!({
            "mediaType": oci::MEDIA_OCI_MANIFEST,
            "digest": manifest.0.to_string(),
            "size": manifest.1.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
        per_platform.push([manifest, config, layer]);
    }
    let index = json(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_OCI_INDEX,
        "manifests": entries,
    }));
    Image {
        index,
        per_platform,
    }
}

/// The files of `image` as `repo` on a registry (`tag` resolving to the index).
fn files(image: &Image, repo: &str, tag: &str) -> HashMap<String, (String, Vec<u8>)> {
    let mut f = HashMap::new();
    let m = |d: &Digest| format!("/v2/{repo}/manifests/{d}");
    let index = (oci::MEDIA_OCI_INDEX.to_string(), image.index.1.clone());
    f.insert(format!("/v2/{repo}/manifests/{tag}"), index.clone());
    f.insert(m(&image.index.0), index);
    for [manifest, config, layer] in &image.per_platform {
        f.insert(
            m(&manifest.0),
            (oci::MEDIA_OCI_MANIFEST.to_string(), manifest.1.clone()),
        );
        for (d, b) in [config, layer] {
            f.insert(
                format!("/v2/{repo}/blobs/{d}"),
                ("application/octet-stream".to_string(), b.clone()),
            );
        }
    }
    f
}

fn hosts_dir(dir: &Path, registry: &str, urls: &[String]) {
    let mut text = String::new();
    for u in urls {
        text.push_str(&format!(
            "[host.\"{u}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"2s\"\n"
        ));
    }
    std::fs::create_dir_all(dir.join(registry)).unwrap();
    std::fs::write(dir.join(registry).join("hosts.toml"), text).unwrap();
}

/// `registry`'s hosts.toml naming `server` as the registry (no mirror, no upstream besides).
fn only(dir: &Path, registry: &str, server: &str) {
    std::fs::create_dir_all(dir.join(registry)).unwrap();
    std::fs::write(
        dir.join(registry).join("hosts.toml"),
        format!("server = \"{server}\"\n"),
    )
    .unwrap();
}

fn request(reference: &str, dir: &Path, platforms: Vec<Platform>) -> Pull {
    Pull {
        reference: reference.into(),
        hosts_dir: Some(dir.to_path_buf()),
        labels: Labels::from([("airlift.io/pinned".to_string(), "true".to_string())]),
        platforms,
        from: None,
        plain_http: false,
    }
}

async fn leased(fake: &Fake) -> Client {
    let c = fake.client();
    c.create_lease("L", Labels::new(), None).await.unwrap();
    c.with_lease(Some("L"))
}

fn labels_of(fake: &Fake, d: &Digest) -> HashMap<String, String> {
    fake.state().blobs[d].labels.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_the_wanted_platform_through_a_mirror_with_a_token() {
    let img = image();
    let mirror = start(Content {
        files: files(&img, "library/app", "1.0"),
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    hosts_dir(
        dir.path(),
        "docker.io",
        &[format!("http://{}", mirror.addr)],
    );
    let fake = Fake::new();
    let client = leased(&fake).await;
    let amd64 = Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        ..Default::default()
    };
    pull(
        &client,
        &request("docker.io/library/app:1.0", dir.path(), vec![amd64]),
    )
    .await
    .unwrap();

    let record = fake.image("docker.io/library/app:1.0").expect("the image");
    assert_eq!(record.digest, img.index.0.to_string());
    assert_eq!(record.media_type, oci::MEDIA_OCI_INDEX);
    assert_eq!(record.labels["airlift.io/pinned"], "true");
    let [manifest, config, layer] = &img.per_platform[0];
    let source = "containerd.io/distribution.source.docker.io";
    let index_labels = labels_of(&fake, &img.index.0);
    assert_eq!(
        index_labels.get("containerd.io/gc.ref.content.m.0"),
        Some(&manifest.0.to_string())
    );
    assert!(
        !index_labels.contains_key("containerd.io/gc.ref.content.m.1"),
        "the arm64 manifest is not pulled, so not referenced: {index_labels:?}"
    );
    let manifest_labels = labels_of(&fake, &manifest.0);
    assert_eq!(
        manifest_labels["containerd.io/gc.ref.content.config"],
        config.0.to_string()
    );
    assert_eq!(
        manifest_labels["containerd.io/gc.ref.content.l.0"],
        layer.0.to_string()
    );
    for (d, b) in [&img.index, manifest, config, layer] {
        let blob = &fake.state().blobs[d];
        assert_eq!(&blob.data, b);
        assert_eq!(blob.labels[source], "library/app");
    }
    for (d, _) in &img.per_platform[1] {
        assert!(!fake.state().blobs.contains_key(d), "arm64 content fetched");
    }
    let held = client.lease_content("L").await.unwrap();
    assert_eq!(held.len(), 4, "the lease holds what was pulled: {held:?}");
    assert!(fake.state().ingests.is_empty());

    let asked = mirror.asked();
    assert!(
        asked
            .iter()
            .filter(|a| a.starts_with("/v2/"))
            .all(|a| a.ends_with("?ns=docker.io")),
        "a mirror is told the registry: {asked:?}"
    );
    assert_eq!(
        asked.iter().filter(|a| a.starts_with("/token")).count(),
        1,
        "one token for the repository: {asked:?}"
    );

    // Again, for all platforms: what the namespace has is not fetched again, and the
    // index now refers to both manifests.
    let before = mirror.asked().len();
    pull(
        &client,
        &request("docker.io/library/app:1.0", dir.path(), Vec::new()),
    )
    .await
    .unwrap();
    let again: Vec<String> = mirror.asked()[before..].to_vec();
    for (d, _) in [config, layer] {
        assert!(
            !again.iter().any(|a| a.contains(&d.to_string())),
            "{d} fetched again: {again:?}"
        );
    }
    let index_labels = labels_of(&fake, &img.index.0);
    assert!(index_labels.contains_key("containerd.io/gc.ref.content.m.1"));
    for (d, _) in &img.per_platform[1] {
        assert!(fake.state().blobs.contains_key(d));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_tried_in_order_and_failures_leave_nothing() {
    let img = image();
    let empty = start(Content::default()).await;
    // The full registry serves under `/mirror`: an API root with /v2 appended.
    let mut moved = HashMap::new();
    for (k, v) in files(&img, "org/app", "v1") {
        moved.insert(k.replacen("/v2/", "/mirror/v2/", 1), v);
    }
    let full = start(Content {
        files: moved,
        ..Default::default()
    })
    .await;
    // Nothing listens on `closed`.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    hosts_dir(
        dir.path(),
        "quay.io",
        &[
            format!("http://{closed}"),
            format!("http://{}", empty.addr),
            format!("http://{}/mirror", full.addr),
        ],
    );
    let fake = Fake::new();
    let client = leased(&fake).await;
    pull(
        &client,
        &request("quay.io/org/app:v1", dir.path(), Vec::new()),
    )
    .await
    .unwrap();
    assert!(fake.image("quay.io/org/app:v1").is_some());
    assert!(
        !empty.asked().is_empty(),
        "the empty mirror was asked first"
    );

    // A layer no host has: the pull fails naming it and every host, and leaves no image.
    let [_, _, layer] = &img.per_platform[1];
    let mut files_without = files(&img, "org/app", "v2");
    files_without.retain(|k, _| !k.ends_with(&layer.0.to_string()));
    let partial = start(Content {
        files: files_without,
        ..Default::default()
    })
    .await;
    // The registry itself (`server`): no upstream after it.
    only(dir.path(), "quay.io", &format!("http://{}", partial.addr));
    let fake = Fake::new();
    let client = leased(&fake).await;
    let e = pull(
        &client,
        &request("quay.io/org/app:v2", dir.path(), Vec::new()),
    )
    .await
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&layer.0.to_string()) && msg.contains(&partial.addr.to_string()),
        "{msg}"
    );
    assert!(msg.contains("404"), "{msg}");
    assert_eq!(e.class(), Class::NotFound);
    assert!(fake.image("quay.io/org/app:v2").is_none());
    assert!(fake.state().ingests.is_empty());

    // Content that is not what its descriptor says: refused at commit, nothing kept.
    let mut wrong = files(&img, "org/app", "v3");
    for (k, v) in wrong.iter_mut() {
        if k.ends_with(&layer.0.to_string()) {
            v.1 = vec![b'x'; v.1.len()];
        }
    }
    let liar = start(Content {
        files: wrong,
        ..Default::default()
    })
    .await;
    only(dir.path(), "quay.io", &format!("http://{}", liar.addr));
    let fake = Fake::new();
    let client = leased(&fake).await;
    let e = pull(
        &client,
        &request("quay.io/org/app:v3", dir.path(), Vec::new()),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains(&layer.0.to_string()), "{e}");
    assert!(fake.image("quay.io/org/app:v3").is_none());
    assert!(!fake.state().blobs.contains_key(&layer.0));
    assert!(fake.state().ingests.is_empty(), "the ingest is aborted");

    // Unreachable everywhere: unavailable, so the daemon tries again later.
    only(dir.path(), "quay.io", &format!("http://{closed}"));
    let e = pull(
        &client,
        &request("quay.io/org/app:v1", dir.path(), Vec::new()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.class(), Class::Unavailable, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_peer_by_digest_over_plain_http() {
    let img = image();
    // A peer's endpoint names other registries in the path: quay.io/org/app.
    let peer = start(Content {
        files: files(&img, "quay.io/org/app", "v1"),
        ..Default::default()
    })
    .await;
    let fake = Fake::new();
    let client = leased(&fake).await;
    let reference = format!("quay.io/org/app@{}", img.index.0);
    let p = Pull {
        reference: reference.clone(),
        hosts_dir: None,
        labels: Labels::new(),
        platforms: Vec::new(),
        from: Some(format!("{}/quay.io/org/app@{}", peer.addr, img.index.0)),
        plain_http: true,
    };
    pull(&client, &p).await.unwrap();
    let record = fake.image(&reference).unwrap();
    assert_eq!(record.digest, img.index.0.to_string());
    assert!(
        peer.asked().iter().all(|a| !a.contains("ns=")),
        "the peer is the source itself"
    );
    // The label names the image's registry, not the peer.
    assert_eq!(
        labels_of(&fake, &img.index.0)["containerd.io/distribution.source.quay.io"],
        "org/app"
    );
}

/// What a registry serving a signed and an unsigned image holds: the signed index's digest,
/// its `.sig` tag and manifest digest, the unsigned index's digest.
struct SignedRegistry {
    registry: TestRegistry,
    signed: Digest,
    tag: String,
    signature: Digest,
    unsigned: Digest,
}

/// A registry serving `signed` (with cosign's `.sig`, signed by the site key for `identity`)
/// and `unsigned`, repositories as their paths on it.
async fn signed_registry(signed_repo: &str, unsigned_repo: &str, identity: &str) -> SignedRegistry {
    use crate::verify::signature::{testkit, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
    use base64::Engine;
    let (signed, unsigned) = (image(), {
        let mut i = image();
        i.index = json(
            serde_json::json!({"schemaVersion": 2, "mediaType": oci::MEDIA_OCI_INDEX,
            "manifests": [], "annotations": {"other": "yes"}}),
        );
        i
    });
    let mut served = files(&signed, signed_repo, "1");
    served.extend(files(&unsigned, unsigned_repo, "1"));
    let p = testkit::payload(&signed.index.0, identity);
    let sig = base64::engine::general_purpose::STANDARD.encode(testkit::sign("site.p8", &p));
    let config = json(serde_json::json!({}));
    let manifest = json(
        serde_json::json!({"schemaVersion": 2, "mediaType": oci::MEDIA_OCI_MANIFEST,
        "config": {"mediaType": oci::MEDIA_OCI_CONFIG, "digest": config.0.to_string(), "size": config.1.len()},
        "layers": [{"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "digest": Digest::of(&p).to_string(),
            "size": p.len(), "annotations": {SIGNATURE_ANNOTATION: sig}}]}),
    );
    let tag = format!("sha256-{}.sig", signed.index.0.hex());
    let blob = |d: &Digest, b: &[u8]| {
        (
            format!("/v2/{signed_repo}/blobs/{d}"),
            ("application/octet-stream".to_string(), b.to_vec()),
        )
    };
    for object in [tag.clone(), manifest.0.to_string()] {
        served.insert(
            format!("/v2/{signed_repo}/manifests/{object}"),
            (oci::MEDIA_OCI_MANIFEST.to_string(), manifest.1.clone()),
        );
    }
    served.extend([blob(&config.0, &config.1), blob(&Digest::of(&p), &p)]);
    // Its referrers tag too (an index listing none), as registries without the referrers API
    // keep it.
    let referrers = json(
        serde_json::json!({"schemaVersion": 2, "mediaType": oci::MEDIA_OCI_INDEX,
        "manifests": []}),
    );
    for object in [
        format!("sha256-{}", signed.index.0.hex()),
        referrers.0.to_string(),
    ] {
        served.insert(
            format!("/v2/{signed_repo}/manifests/{object}"),
            (oci::MEDIA_OCI_INDEX.to_string(), referrers.1.clone()),
        );
    }
    let registry = start(Content {
        files: served,
        ..Default::default()
    })
    .await;
    SignedRegistry {
        registry,
        signed: signed.index.0,
        tag,
        signature: manifest.0,
        unsigned: unsigned.index.0,
    }
}

/// Import options verifying against a policy that wants the site key for `scope` and rejects
/// the rest; pulls through `hosts`.
fn verifying(dir: &Path, scope: &str, hosts: Option<PathBuf>) -> crate::import::ImportOptions {
    use crate::verify::signature::testkit;
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {
            scope: [{"type": "sigstoreSigned", "keyPath": testkit::path("site.pub"),
                "signedIdentity": {"type": "matchRepository"}}]}}})
        .to_string(),
    )
    .unwrap();
    crate::service::options::Asked {
        platforms: vec!["all".into()],
        hosts_dir: hosts,
        verify: crate::verify::Settings {
            policy: Some(policy),
            ..Default::default()
        },
        ..Default::default()
    }
    .options()
    .unwrap()
}

/// A pull list under a policy: the signed image is pulled, verified by the `.sig` fetched from
/// the same registry, pinned with its signature; the unsigned one is refused, unpinned and gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_list_pins_only_what_the_policy_allows() {
    let sr = signed_registry("team/app", "team/other", "registry.example.com/team/app").await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("certs.d");
    only(
        &hosts,
        "registry.example.com",
        &format!("http://{}", sr.registry.addr),
    );
    let opts = verifying(dir.path(), "registry.example.com", Some(hosts));
    let list = dir.path().join("images.txt");
    std::fs::write(
        &list,
        "registry.example.com/team/app:1\nregistry.example.com/team/other:1\n",
    )
    .unwrap();
    let fake = Fake::new();
    // containerd 1.7: airlift's own client pulls, so the test registry serves the images too.
    fake.state().version = "1.7.24".into();
    let r = list::run(&fake.client(), &list, &opts, &crate::import::Alone)
        .await
        .unwrap();
    let app = fake.image("registry.example.com/team/app:1").unwrap();
    assert_eq!(app.labels[crate::labels::CRI_PINNED], "pinned");
    assert!(app.labels[crate::verify::gate::VERIFIED_LABEL].contains("signed by"));
    let sig = fake
        .image(&format!("registry.example.com/team/app:{}", sr.tag))
        .unwrap();
    assert_eq!(sig.digest, sr.signature.to_string());
    assert_eq!(sig.labels[crate::labels::CRI_PINNED], "pinned");
    assert_eq!(sig.labels[crate::labels::SUBJECT], sr.signed.to_string());
    // The referrers tag, fetched after the `.sig`, names the image too.
    let referrers = fake
        .image(&format!(
            "registry.example.com/team/app:sha256-{}",
            sr.signed.hex()
        ))
        .unwrap();
    assert_eq!(
        referrers.labels[crate::labels::SUBJECT],
        sr.signed.to_string()
    );
    // The unsigned one was pulled, refused, and taken back: no record, a failure saying why.
    assert!(fake.image("registry.example.com/team/other:1").is_none());
    let why = &r.refused["registry.example.com/team/other:1"];
    assert!(why.contains("A signature was required"), "{why}");
    assert!(
        r.failed
            .iter()
            .any(|f| f.contains("line 2") && f.contains("refused")),
        "{:?}",
        r.failed
    );
    assert!(sr.registry.asked().iter().any(|a| a.contains(&format!(
        "team/other/manifests/sha256-{}",
        sr.unsigned.hex()
    ))));
}

/// A follower verifies what it pulls from a peer's endpoint: the signature comes from the peer
/// too, under the image's path there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_verifies_what_it_pulls_from_the_peer() {
    let sr = signed_registry("library/app", "library/other", "docker.io/library/app").await;
    let dir = tempfile::tempdir().unwrap();
    let opts = verifying(dir.path(), "docker.io", None);
    let list = dir.path().join("peer.txt");
    let text = follow::render(
        &format!("http://{}", sr.registry.addr),
        &[
            "docker.io/library/app:1".into(),
            "docker.io/library/other:1".into(),
        ],
    );
    std::fs::write(&list, text).unwrap();
    let fake = Fake::new();
    fake.state().version = "1.7.24".into();
    let r = list::run(&fake.client(), &list, &opts, &crate::import::Alone)
        .await
        .unwrap();
    assert!(r.verified.contains_key("docker.io/library/app:1"), "{r:?}");
    assert!(fake
        .image(&format!("docker.io/library/app:{}", sr.tag))
        .is_some());
    assert!(r.refused.contains_key("docker.io/library/other:1"), "{r:?}");
    assert!(fake.image("docker.io/library/other:1").is_none());
    assert!(sr
        .registry
        .asked()
        .iter()
        .any(|a| a.starts_with(&format!("/v2/library/app/manifests/{}", sr.tag))));
}
