//! End-to-end: `airlift serve`'s registry endpoint, with real clients — skopeo (`inspect`,
//! `copy` of single- and multi-arch images to an OCI layout and a directory, every blob hashed,
//! the manifest digests compared with containerd's targets), containerd itself pulling through a
//! `hosts.toml` mirror (`ctr images pull --hosts-dir`, so requests carry `?ns=`) on 2.x and 1.7,
//! bad and hostile requests (names with `..`, malformed digests, impossible ranges, writes, a
//! blob containerd holds that no served image reaches, 200 connections at once, slow clients),
//! ranges, TLS with client certificates, `serve = "all"`, blobs from airlift's own store in content
//! proxy mode and through the Content API when containerd's content root is not on the daemon's
//! filesystem, the counters in `/metrics`, and signatures: cosign's `.sig` tag and the referrers
//! tag recorded beside an image, served as tags and through `GET /v2/<name>/referrers/<digest>`
//! (and, when cosign is installed, `cosign verify` against the endpoint).

mod common;

use airlift_integration::{fixtures_dir, Containerd, Version};
use common::daemon::Daemon;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BUSYBOX: &str = "docker.io/library/busybox:1.35";
const TOOLS: &str = "registry.example.com/tools/busybox:latest";
const INDEX_2D8E: &str = "sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd";
const DOCKER_5142: &str = "sha256:5142ba3ef0ec91d16e239b22f1964d43c420f200f2c1a1eb34ba9cceb487fc76";

/// A free port on the loopback interface.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A daemon over `ctd` importing the multi-image bundle (all platforms), serving the registry
/// endpoint at the returned address with `extra` more `[registry]` keys; it logs every request.
fn serving(ctd: &Containerd, extra: &str) -> (Daemon, SocketAddr) {
    let addr = free_port();
    let mut d = Daemon::new(
        ctd,
        &format!(
            "platforms = [\"all\"]\nmetrics_address = \"{}\"\n[registry]\naddress = \"{addr}\"\n{extra}",
            free_port()
        ),
    );
    std::fs::copy(
        fixtures_dir().join("bundle-ctr-export.tar"),
        d.images().join("bundle.tar"),
    )
    .unwrap();
    d.env
        .push(("AIRLIFT_LOG".into(), "info,airlift::registry=debug".into()));
    d.start();
    d.wait();
    (d, addr)
}

/// A response: status, headers (names lowercased), body.
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

/// Sends `raw` as it is (no client normalises the path) and reads the response to the end.
fn send(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn parse(data: &[u8]) -> Got {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(data)));
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
    Got {
        status,
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect(),
        body: data[end + 4..].to_vec(),
    }
}

fn request(addr: SocketAddr, method: &str, target: &str, headers: &[&str]) -> Got {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    parse(&send(addr, text.as_bytes()))
}

fn get(addr: SocketAddr, target: &str) -> Got {
    request(addr, "GET", target, &[])
}

/// Runs a command; its stdout, or a panic with its stderr and the daemon's log.
fn run(cmd: &mut Command, d: &Daemon) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        d.log()
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.env("HOME", std::env::temp_dir()).arg("--insecure-policy");
    c
}

fn sha256(data: &[u8]) -> String {
    airlift::digest::Digest::of(data).to_string()
}

/// Every blob of a directory of blobs named by their hex digest hashes to its name; how many.
fn blobs_hash_to_their_names(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.len() != 64 {
            continue;
        }
        assert_eq!(
            sha256(&std::fs::read(&p).unwrap()),
            format!("sha256:{name}")
        );
        n += 1;
    }
    n
}

#[test]
fn skopeo_inspects_and_copies_single_and_multi_arch_images() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let (d, addr) = serving(&ctd, "");
    let target = |name: &str| {
        rt.block_on(client(&rt, &ctd, "k8s.io").get_image(name))
            .unwrap()
            .unwrap()
            .digest
    };
    assert_eq!(target(BUSYBOX), INDEX_2D8E);

    // inspect: the index by tag (raw: byte for byte what containerd holds), and the image of a
    // platform from it.
    let raw = run(
        skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{addr}/library/busybox:1.35")),
        &d,
    );
    assert_eq!(sha256(raw.as_bytes()), INDEX_2D8E);
    let inspect: serde_json::Value = serde_json::from_str(&run(
        skopeo()
            .args(["inspect", "--tls-verify=false", "--override-arch", "arm64"])
            .arg(format!("docker://{addr}/library/busybox:1.35")),
        &d,
    ))
    .unwrap();
    assert_eq!(inspect["Architecture"], "arm64", "{inspect}");
    // A registry other than docker.io, by its host-prefixed name.
    let raw = run(
        skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!(
                "docker://{addr}/registry.example.com/tools/busybox:latest"
            )),
        &d,
    );
    assert_eq!(sha256(raw.as_bytes()), target(TOOLS));

    // copy, every platform of the index, to an OCI layout.
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    run(
        skopeo()
            .args(["copy", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://{addr}/library/busybox:1.35"))
            .arg(format!("oci:{}:1.35", layout.display())),
        &d,
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], INDEX_2D8E, "{index}");
    let copied = blobs_hash_to_their_names(&layout.join("blobs/sha256"));
    // The index, its nested index, two manifests, two configs, two layers.
    assert!(copied >= 7, "{copied} blobs copied");
    // A Docker schema 2 image, kept as it is (a `dir:` copy does not convert manifests).
    let dir = out.path().join("dir");
    run(
        skopeo()
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!(
                "docker://{addr}/registry.example.com/tools/busybox:latest"
            ))
            .arg(format!("dir:{}", dir.display())),
        &d,
    );
    assert_eq!(
        sha256(&std::fs::read(dir.join("manifest.json")).unwrap()),
        DOCKER_5142
    );
    assert_eq!(blobs_hash_to_their_names(&dir), 2, "config and layer");
    // The catalog lists what a client uses, and tags/list the tags.
    let catalog: serde_json::Value =
        serde_json::from_slice(&get(addr, "/v2/_catalog").body).unwrap();
    assert_eq!(
        catalog,
        serde_json::json!({"repositories": ["library/busybox", "registry.example.com/tools/busybox"]})
    );
    let tags = run(
        skopeo()
            .args(["list-tags", "--tls-verify=false"])
            .arg(format!(
                "docker://{addr}/registry.example.com/tools/busybox"
            )),
        &d,
    );
    let tags: serde_json::Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1.35-arm64", "latest"]));
}

/// containerd pulls from the endpoint as a mirror of docker.io and of registry.example.com.
fn containerd_pulls_through_a_mirror(version: Version) {
    let ctd = Containerd::start(version).unwrap();
    let (d, addr) = serving(&ctd, "");
    let node_b = Containerd::start(version).unwrap();
    let hosts = tempfile::tempdir().unwrap();
    for registry in ["docker.io", "registry.example.com"] {
        mirror_to(hosts.path(), registry, addr);
    }
    let hosts_dir = hosts.path().to_str().unwrap();
    for (name, digest) in [(BUSYBOX, INDEX_2D8E), (TOOLS, DOCKER_5142)] {
        ctr_pull(&node_b, hosts_dir, name, true)
            .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", d.log()));
        assert_listed(&node_b, &[(name, digest)]);
        node_b
            .ctr_output(&["-n", "k8s.io", "images", "check"])
            .unwrap();
    }
    // containerd's requests to the mirror carried the registry in ns=.
    let log = d.log();
    for ns in ["ns=docker.io", "ns=registry.example.com"] {
        assert!(log.contains(ns), "no request with {ns}:\n{log}");
    }
    let metrics = metrics(&d);
    assert!(
        metrics.contains(
            "airlift_registry_requests_total{route=\"blob\",method=\"GET\",status=\"200\"}"
        ),
        "{metrics}"
    );
}

on_containerd!(containerd_pulls_through_a_mirror {
    ctr_pulls_through_the_endpoint_containerd_2: Version::V2;
    ctr_pulls_through_the_endpoint_containerd_17: Version::V17;
});

/// The daemon's `/metrics` text.
fn metrics(d: &Daemon) -> String {
    let cfg = std::fs::read_to_string(d.dir.path().join("config.toml")).unwrap();
    let addr: SocketAddr = cfg
        .lines()
        .find_map(|l| l.strip_prefix("metrics_address = "))
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap();
    String::from_utf8(get(addr, "/metrics").body).unwrap()
}

#[test]
fn bad_requests_get_4xx_and_never_stop_it() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let (d, addr) = serving(&ctd, "");
    let layer = {
        // The arm64 image's layer, from its manifest.
        let m = get(
            addr,
            &format!("/v2/registry.example.com/tools/busybox/manifests/{DOCKER_5142}"),
        );
        assert_eq!(m.status, 200, "{m:?}");
        let m: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_string()
    };
    // A blob containerd holds (on disk in its content root, in the namespace) that no served
    // image reaches.
    let stray = b"a blob in containerd that no image reaches";
    let stray_digest = sha256(stray);
    // Nothing holds it, so a garbage collection (the daemon's imports trigger them) may take
    // it before it is labelled a GC root: written again until it stays.
    for attempt in 0.. {
        let mut ingest = ctd.ctr();
        ingest
            .args(["-n", "k8s.io", "content", "ingest", "stray"])
            .stdin(std::process::Stdio::piped());
        let mut child = ingest.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stray).unwrap();
        assert!(child.wait().unwrap().success());
        let labelled = ctd
            .ctr()
            .args(["-n", "k8s.io", "content", "label", &stray_digest])
            .arg("containerd.io/gc.root=stray")
            .status()
            .unwrap()
            .success();
        if labelled && blob(&rt, &ctd, "k8s.io", &stray_digest).is_some() {
            break;
        }
        assert!(attempt < 5, "the stray blob never stayed");
    }
    // An image imported by someone else (ctr): not airlift's, so not served by default.
    ctd.ctr_output(&[
        "-n",
        "k8s.io",
        "images",
        "import",
        "--no-unpack",
        "--local",
        fixtures_dir().join("busybox-docker.tar").to_str().unwrap(),
    ])
    .unwrap();
    ctd.ctr_output(&[
        "-n",
        "k8s.io",
        "images",
        "tag",
        "docker.io/library/busybox:1.35",
        "docker.io/library/mine:1",
    ])
    .unwrap();

    let busybox_blob = |d: &str| format!("/v2/library/busybox/blobs/{d}");
    for (target, status, code) in [
        (
            "/v2/library/../../etc/passwd/manifests/1".to_string(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/../v2/library/busybox/manifests/1.35".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/library/%2e%2e/busybox/manifests/1.35".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/library/busybox/manifests/..".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/library/busybox/manifests/sha256:1234".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/busybox/blobs/sha256:../../../../etc/passwd".into(),
            404,
            "NOT_FOUND",
        ),
        (
            "/v2/library/busybox/blobs/sha256%3a..%2f..%2fx".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/busybox/manifests/9.9".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/library/busybox/manifests/{}", sha256(b"nothing")),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/library/nothing/manifests/1".into(),
            404,
            "NAME_UNKNOWN",
        ),
        ("/v2/library/nothing/tags/list".into(), 404, "NAME_UNKNOWN"),
        (busybox_blob(&sha256(b"nothing")), 404, "BLOB_UNKNOWN"),
        (busybox_blob(&stray_digest), 404, "BLOB_UNKNOWN"),
        // A served blob, but of another repository's image.
        (busybox_blob(&layer), 404, "BLOB_UNKNOWN"),
        ("/v2/library/mine/manifests/1".into(), 404, "NAME_UNKNOWN"),
        (
            "/v2/library/busybox/blobs/uploads/".into(),
            404,
            "NOT_FOUND",
        ),
        ("/v2/library/busybox/manifests/1.35?ns=".into(), 200, ""),
    ] {
        let r = get(addr, &target);
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{target}: {r:?}"
        );
    }
    for method in ["PUT", "POST", "PATCH", "DELETE"] {
        for target in [
            "/v2/library/busybox/manifests/1.35",
            "/v2/library/busybox/blobs/uploads/",
            &busybox_blob(&layer),
        ] {
            let r = request(addr, method, target, &["Content-Length: 2", "", "{}"]);
            assert_eq!(
                (r.status, r.code().as_str()),
                (405, "UNSUPPORTED"),
                "{method} {target}"
            );
        }
    }

    // Ranges: 206 with Content-Range, 416 with the size when unsatisfiable.
    let whole = get(
        addr,
        &format!("/v2/registry.example.com/tools/busybox/blobs/{layer}"),
    );
    assert_eq!(whole.status, 200);
    assert_eq!(sha256(&whole.body), layer);
    let size = whole.body.len();
    let tools_layer = format!("/v2/registry.example.com/tools/busybox/blobs/{layer}");
    let r = request(addr, "GET", &tools_layer, &["Range: bytes=100-199"]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-199/{size}").as_str())
    );
    assert_eq!(r.body, whole.body[100..200]);
    let r = request(addr, "GET", &tools_layer, &["Range: bytes=-7"]);
    assert_eq!(r.body, whole.body[size - 7..]);
    for bad in [
        format!("bytes={size}-"),
        "bytes=9-3".into(),
        "bytes=-0".into(),
        "bytes=x-".into(),
    ] {
        let r = request(addr, "GET", &tools_layer, &[&format!("Range: {bad}")]);
        assert_eq!(r.status, 416, "{bad}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{size}").as_str()),
            "{bad}"
        );
    }
    let r = request(addr, "HEAD", &tools_layer, &[]);
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(r.header("docker-content-digest"), Some(layer.as_str()));
    assert!(r.body.is_empty());

    // Hostile input: garbage, huge heads, 200 connections at once (half of them slow: a
    // partial head, never finished), then the endpoint still serves.
    let garbage: &[&[u8]] = &[
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /v2/ HTTP/9.9\r\n\r\n",
        b"GET  HTTP/1.1\r\n\r\n",
        b"\r\n\r\n\r\n",
    ];
    for g in garbage {
        let out = send(addr, g);
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 4"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }
    let huge = format!("GET /v2/ HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(100_000));
    assert!(send(addr, huge.as_bytes()).starts_with(b"HTTP/1.1 431"));
    let threads: Vec<_> = (0..200)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                if i % 2 == 0 {
                    let _ = s.write_all(
                        b"GET /v2/library/busybox/manifests/1.35 HTTP/1.1\r\nHost: x\r\n",
                    );
                } else {
                    let target = format!("/v2/library/n{i}/blobs/sha256:{i}");
                    let _ = s.write_all(
                        format!("GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
                    );
                }
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                out
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let out = t.join().unwrap();
        let text = String::from_utf8_lossy(&out);
        // A slow client is cut off after the head timeout (408); the others get a 4xx.
        assert!(
            text.starts_with("HTTP/1.1 4") || out.is_empty(),
            "{i}: {text}"
        );
    }
    let r = get(addr, "/v2/library/busybox/manifests/1.35");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(INDEX_2D8E));

    let m = metrics(&d);
    for line in [
        "airlift_registry_requests_total{route=\"blob\",method=\"GET\",status=\"206\"}",
        "airlift_registry_requests_total{route=\"blob\",method=\"GET\",status=\"416\"}",
        "airlift_registry_requests_total{route=\"manifest\",method=\"other\",status=\"405\"}",
        "airlift_registry_requests_total{route=\"blob\",method=\"GET\",status=\"404\"}",
        "airlift_registry_sent_bytes_total{route=\"blob\"}",
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }

    // `serve = "all"`: a second daemon on the namespace serves the image ctr imported.
    let all = free_port();
    let mut d2 = Daemon::new(
        &ctd,
        &format!("[registry]\naddress = \"{all}\"\nserve = \"all\"\n"),
    );
    d2.start();
    d2.wait();
    let r = get(all, "/v2/library/mine/manifests/1");
    assert_eq!(r.status, 200, "{r:?}\n{}", d2.log());
    let r = get(all, &busybox_blob(&stray_digest));
    assert_eq!(r.code(), "BLOB_UNKNOWN", "still only what images reach");
}

#[test]
fn tls_lets_in_only_clients_with_a_certificate() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let (d, addr) = serving(
        &ctd,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\n",
            p("server.crt"),
            p("server.key"),
            p("ca.crt")
        ),
    );
    let url = format!("https://{addr}/v2/library/busybox/manifests/1.35");
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                &p("ca.crt"),
            ])
            .args(args)
            .arg(&url)
            .output()
            .unwrap()
    };
    let refused = curl(&[]);
    assert!(
        !refused.status.success(),
        "a client without a certificate got in"
    );
    // One with a certificate of another CA is refused too.
    let other = tempfile::tempdir().unwrap();
    certificates(other.path());
    let q = |f: &str| other.path().join(f).display().to_string();
    let refused = curl(&["--cert", &q("client.crt"), "--key", &q("client.key")]);
    assert!(
        !refused.status.success(),
        "a certificate of another CA got in"
    );
    let ok = curl(&["--cert", &p("client.crt"), "--key", &p("client.key")]);
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "200",
        "{}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        d.log()
    );
    // Plain HTTP on the TLS port gets nothing.
    let plain = send(addr, b"GET /v2/ HTTP/1.1\r\n\r\n");
    assert!(!plain.starts_with(b"HTTP/1.1 200"));

    // skopeo with a certificate directory (client.cert, client.key, ca.crt) copies the image.
    let cert_dir = tempfile::tempdir().unwrap();
    std::fs::copy(p("client.crt"), cert_dir.path().join("client.cert")).unwrap();
    std::fs::copy(p("client.key"), cert_dir.path().join("client.key")).unwrap();
    std::fs::copy(p("ca.crt"), cert_dir.path().join("ca.crt")).unwrap();
    let out = tempfile::tempdir().unwrap();
    run(
        skopeo()
            .args(["copy", "--all", "--src-cert-dir"])
            .arg(cert_dir.path())
            .arg(format!("docker://{addr}/library/busybox:1.35"))
            .arg(format!("oci:{}:1.35", out.path().join("l").display())),
        &d,
    );
    assert!(blobs_hash_to_their_names(&out.path().join("l/blobs/sha256")) >= 7);
}

#[test]
fn served_from_airlifts_own_store_in_proxy_mode() {
    let (mut d, root) = Daemon::content_proxy();
    let addr = free_port();
    // Top-level keys before the content proxy's table.
    d.config = format!(
        "platforms = [\"all\"]\n{}\n[registry]\naddress = \"{addr}\"\n",
        d.config
    );
    std::fs::copy(
        fixtures_dir().join("bundle-ctr-export.tar"),
        d.images().join("bundle.tar"),
    )
    .unwrap();
    let _ctd = d.serve_as_content_proxy(Version::V2, airlift_integration::Options::default());
    let out = tempfile::tempdir().unwrap();
    run(
        skopeo()
            .args(["copy", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://{addr}/library/busybox:1.35"))
            .arg(format!("oci:{}:1.35", out.path().join("l").display())),
        &d,
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("l/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], INDEX_2D8E);
    assert!(blobs_hash_to_their_names(&out.path().join("l/blobs/sha256")) >= 7);
    let log = d.log();
    let from = log
        .lines()
        .find(|l| l.contains("registry endpoint reads blobs from"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(from.contains(&root.display().to_string()), "{from}");
}

#[test]
fn served_through_the_content_api_when_the_content_root_is_elsewhere() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let addr = free_port();
    let mut d = Daemon::new(
        &ctd,
        &format!("platforms = [\"all\"]\n[registry]\naddress = \"{addr}\"\n"),
    );
    std::fs::copy(
        fixtures_dir().join("bundle-ctr-export.tar"),
        d.images().join("bundle.tar"),
    )
    .unwrap();
    // The daemon runs in a mount namespace where containerd's directory is an empty tmpfs: its
    // content root is not there (as for a containerd in another container), only its socket,
    // bound onto a path of the daemon's own.
    let socket = d.dir.path().join("containerd.sock");
    std::fs::write(&socket, b"").unwrap();
    d.address = socket.clone();
    d.wrapper = vec![
        "unshare".into(),
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        format!(
            "mount --bind {:?} {:?} && mount -t tmpfs tmpfs {:?} && exec \"$@\"",
            ctd.address(),
            socket,
            ctd.dir()
        ),
        "sh".into(),
    ];
    d.start();
    d.wait();
    let out = tempfile::tempdir().unwrap();
    run(
        skopeo()
            .args(["copy", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://{addr}/library/busybox:1.35"))
            .arg(format!("oci:{}:1.35", out.path().join("l").display())),
        &d,
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("l/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], INDEX_2D8E);
    assert!(blobs_hash_to_their_names(&out.path().join("l/blobs/sha256")) >= 7);
    let r = request(
        addr,
        "GET",
        &format!("/v2/registry.example.com/tools/busybox/manifests/{DOCKER_5142}"),
        &[],
    );
    let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let r = request(
        addr,
        "GET",
        &format!("/v2/registry.example.com/tools/busybox/blobs/{layer}"),
        &["Range: bytes=10-19"],
    );
    assert_eq!((r.status, r.body.len()), (206, 10));
    let log = d.log();
    assert!(
        log.contains("reads blobs from") && log.contains("containerd's Content API"),
        "{log}"
    );
}

/// Whether `name` is on `ctd` pinned by airlift with its archive label naming `list`.
fn pinned_by(ctd: &Containerd, name: &str, list: &Path) -> bool {
    let rt = rt();
    images(&rt, ctd, "k8s.io").into_iter().any(|i| {
        i.name == name
            && i.labels.get("io.cri-containerd.pinned").map(String::as_str) == Some("pinned")
            && i.labels.get("airlift.io/archive").map(String::as_str)
                == Some(airlift::escape::shown(list).to_string().as_str())
    })
}

/// Writes `DIR/<registry>/hosts.toml` sending `registry`'s pulls to `addr` over plain HTTP.
fn mirror_to(hosts: &Path, registry: &str, addr: SocketAddr) {
    std::fs::create_dir_all(hosts.join(registry)).unwrap();
    std::fs::write(
        hosts.join(registry).join("hosts.toml"),
        format!("[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    )
    .unwrap();
}

/// A `.txt` pull list on node B: containerd pulls its images (from node A's endpoint, through
/// the hosts directory B's daemon is given), B's airlift pins them with the list; a registry
/// that does not answer is tried again until it does; a line removed unpins its image. On 1.7
/// the pulls are airlift's own (its transfer service takes no hosts directory).
fn pull_lists(version: Version) {
    let node_a = Containerd::start(version).unwrap();
    let (a, addr) = serving(&node_a, "");
    let node_b = Containerd::start(version).unwrap();
    let hosts = tempfile::tempdir().unwrap();
    mirror_to(hosts.path(), "docker.io", addr);
    // registry.example.com does not answer yet (nothing listens there).
    mirror_to(hosts.path(), "registry.example.com", free_port());
    let mut b = Daemon::new(
        &node_b,
        &format!(
            "platforms = [\"all\"]\nhosts_dir = \"{}\"\n",
            hosts.path().display()
        ),
    );
    b.start();
    b.wait();
    let list = b.images().join("images.txt");
    let tmp = b.images().join(".images.txt.new");
    std::fs::write(&tmp, format!("# pre-pulled for B\n{BUSYBOX}\n\n{TOOLS}\n")).unwrap();
    std::fs::rename(&tmp, &list).unwrap();
    b.until("the list's first pulls", || {
        b.archive(&list).is_some_and(|s| s["state"] == "failed")
    });
    assert!(pinned_by(&node_b, BUSYBOX, &list), "{}", b.log());
    let error = b.archive(&list).unwrap()["last_error"].to_string();
    assert!(error.contains("line 4") && error.contains(TOOLS), "{error}");

    // The registry answers now: the daemon pulls again by itself.
    mirror_to(hosts.path(), "registry.example.com", addr);
    b.until("the failed pull to be tried again", || {
        b.archive(&list).is_some_and(|s| s["state"] == "imported")
    });
    assert!(pinned_by(&node_b, TOOLS, &list), "{}", b.log());
    assert_listed(&node_b, &[(BUSYBOX, INDEX_2D8E), (TOOLS, DOCKER_5142)]);
    let check = node_b
        .ctr_output(&["-n", "k8s.io", "images", "check"])
        .unwrap();
    assert!(!check.contains("incomplete"), "{check}");

    // A line goes: its image loses its pin, the other keeps it.
    std::fs::write(&tmp, format!("{BUSYBOX}\n")).unwrap();
    std::fs::rename(&tmp, &list).unwrap();
    b.until("the removed line's image to be unpinned", || {
        !pinned_by(&node_b, TOOLS, &list)
    });
    assert!(pinned_by(&node_b, BUSYBOX, &list), "{}", b.log());
    drop(a);
}

on_containerd!(pull_lists {
    pull_lists_containerd_2: Version::V2;
    pull_lists_containerd_17: Version::V17;
});

/// Node B follows node A's endpoint: what A serves is pulled from A and pinned on B; an archive
/// dropped on A appears on B; what A stops serving loses its pin on B after the grace period;
/// A going away changes nothing on B.
fn following_a_peer(version: Version) {
    let node_a = Containerd::start(version).unwrap();
    let (a, addr) = serving(&node_a, "");
    let node_b = Containerd::start(version).unwrap();
    let mut b = Daemon::new(
        &node_b,
        &format!(
            "platforms = [\"all\"]\nfollow = [\"http://{addr}\"]\nfollow_seconds = 1\nfollow_grace_seconds = 3\n"
        ),
    );
    b.start();
    b.wait();
    let list = b
        .state_dir()
        .join("follow")
        .join(format!("{}.txt", addr.to_string().replace(':', "_")));
    b.until("A's images to be pinned on B", || {
        pinned_by(&node_b, BUSYBOX, &list) && pinned_by(&node_b, TOOLS, &list)
    });
    let stable = "docker.io/library/busybox:stable";
    assert!(!pinned_by(&node_b, stable, &list));

    // A bundle dropped on A.
    let extra = a.images().join("extra.tar");
    let tmp = a.images().join(".extra.tar.new");
    std::fs::copy(
        fixtures_dir().join("busybox-arm64-multitag-docker.tar"),
        &tmp,
    )
    .unwrap();
    std::fs::rename(&tmp, &extra).unwrap();
    b.until("the new image to be pinned on B", || {
        pinned_by(&node_b, stable, &list)
    });
    // Removed from A: unpinned on B once the grace period is over, not before.
    std::fs::remove_file(&extra).unwrap();
    let gone = std::time::Instant::now();
    b.until("the image A stopped serving to be unpinned on B", || {
        !pinned_by(&node_b, stable, &list)
    });
    assert!(
        gone.elapsed() >= Duration::from_secs(2),
        "unpinned before the grace period"
    );
    assert!(pinned_by(&node_b, BUSYBOX, &list));

    // A goes away: B keeps everything.
    drop(a);
    std::thread::sleep(Duration::from_secs(5));
    assert!(pinned_by(&node_b, BUSYBOX, &list), "{}", b.log());
    assert!(pinned_by(&node_b, TOOLS, &list), "{}", b.log());
    assert!(
        b.log().contains("its images keep their pins"),
        "{}",
        b.log()
    );
}

on_containerd!(following_a_peer {
    following_a_peer_containerd_2: Version::V2;
    following_a_peer_containerd_17: Version::V17;
});

/// Following a peer over TLS with client certificates: B lists and pulls A's endpoint with the
/// CA and client certificate its hosts directory holds for A, in containerd's layout
/// (`<hosts dir>/<host>_<port>_/ca.crt`, `client.cert`, `client.key`), so that containerd's
/// own pulls from A (2.x) and airlift's (1.7) use the same keys. Without them A lets B in for
/// nothing; once they are in place B follows without a restart.
fn following_a_peer_over_tls(version: Version) {
    let node_a = Containerd::start(version).unwrap();
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let p = |f: &str| certs.path().join(f);
    let (a, addr) = serving(
        &node_a,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\n",
            p("server.crt"),
            p("server.key"),
            p("ca.crt")
        ),
    );
    let node_b = Containerd::start(version).unwrap();
    let hosts = tempfile::tempdir().unwrap();
    let mut b = Daemon::new(
        &node_b,
        &format!(
            "platforms = [\"all\"]\nhosts_dir = {:?}\nfollow = [\"https://{addr}\"]\nfollow_seconds = 1\n",
            hosts.path()
        ),
    );
    b.start();
    b.wait();
    b.until("B to fail listing A without a certificate", || {
        b.log().contains("cannot list the followed peer's images")
    });
    let list = b
        .state_dir()
        .join("follow")
        .join(format!("{}.txt", addr.to_string().replace(':', "_")));
    assert!(!pinned_by(&node_b, BUSYBOX, &list));

    let keys = hosts.path().join(format!("{}_{}_", addr.ip(), addr.port()));
    let tmp = hosts.path().join(".keys");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(p("ca.crt"), tmp.join("ca.crt")).unwrap();
    std::fs::copy(p("client.crt"), tmp.join("client.cert")).unwrap();
    std::fs::copy(p("client.key"), tmp.join("client.key")).unwrap();
    std::fs::rename(&tmp, &keys).unwrap();
    b.until("A's images to be pinned on B over TLS", || {
        pinned_by(&node_b, BUSYBOX, &list) && pinned_by(&node_b, TOOLS, &list)
    });
    let check = node_b
        .ctr_output(&["-n", "k8s.io", "images", "check"])
        .unwrap();
    assert!(!check.contains("incomplete"), "{check}");
    drop(a);
}

on_containerd!(following_a_peer_over_tls {
    following_a_peer_over_tls_containerd_2: Version::V2;
    following_a_peer_over_tls_containerd_17: Version::V17;
});

/// `airlift import LIST.txt --hosts-dir DIR`: the command line pulls a pull list's images as the
/// daemon does, and pins them with the list.
fn pull_list_from_the_command_line(version: Version) {
    let node_a = Containerd::start(version).unwrap();
    let (a, addr) = serving(&node_a, "");
    let node_b = Containerd::start(version).unwrap();
    let hosts = tempfile::tempdir().unwrap();
    mirror_to(hosts.path(), "docker.io", addr);
    let list = hosts.path().join("images.txt");
    std::fs::write(&list, format!("# one image\n{BUSYBOX}\n")).unwrap();
    let report = import_ok(
        &node_b,
        "k8s.io",
        &[
            "--all-platforms",
            "--hosts-dir",
            hosts.path().to_str().unwrap(),
            list.to_str().unwrap(),
        ],
    );
    assert_eq!(report["mode"], "pulled", "{report}");
    assert_eq!(report["images"][0]["digest"], INDEX_2D8E, "{report}");
    assert!(pinned_by(&node_b, BUSYBOX, &list), "{report}\n{}", a.log());
}

on_containerd!(pull_list_from_the_command_line {
    pull_list_from_the_command_line_containerd_2: Version::V2;
    pull_list_from_the_command_line_containerd_17: Version::V17;
});

const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Puts blobs into `ctd`'s `k8s.io` namespace under the lease `lease` (created here, so no
/// garbage collection takes them) with `put`, and records image names with `record`.
struct Recorder<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: airlift::containerd::Client,
    store: airlift::store::stream::StreamStore,
}

impl<'a> Recorder<'a> {
    fn new(rt: &'a tokio::runtime::Runtime, ctd: &Containerd, lease: &str) -> Recorder<'a> {
        let client = client(rt, ctd, "k8s.io");
        rt.block_on(client.create_lease(lease, Default::default(), None))
            .unwrap();
        let store = airlift::store::stream::StreamStore::new(
            client.with_lease(Some(lease)),
            rt.handle().clone(),
            lease.into(),
        );
        Recorder { rt, client, store }
    }

    /// Stores `data`; its digest and size.
    fn put(&self, data: &[u8]) -> (String, u64) {
        let put =
            airlift::store::ContentStore::put(&self.store, &mut &data[..], data.len() as u64, None)
                .unwrap();
        (put.digest.to_string(), put.size)
    }

    /// Records `name` → the manifest or index `data` (stored here) of `media_type`, labelled
    /// with the image it signs.
    fn record(&self, name: &str, media_type: &str, data: &[u8], subject: &str) -> String {
        let (digest, size) = self.put(data);
        let labels = std::collections::BTreeMap::from([(
            airlift::labels::SUBJECT.to_string(),
            subject.to_string(),
        )]);
        self.rt
            .block_on(self.client.put_image(
                &airlift::containerd::ImageTarget {
                    name: name.into(),
                    media_type: media_type.into(),
                    digest: digest.clone(),
                    size: size as i64,
                    annotations: Default::default(),
                },
                &labels,
            ))
            .unwrap();
        digest
    }
}

/// cosign's simple-signing payload for `subject` named `reference`.
fn sig_payload(reference: &str, subject: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"critical": {
        "identity": {"docker-reference": reference},
        "image": {"docker-manifest-digest": subject},
        "type": "cosign container image signature"}, "optional": null}))
    .unwrap()
}

/// A `.sig` manifest as cosign writes it, of `payload` signed `signature` (base64): its
/// payload's digest and the manifest.
fn sig_manifest(rec: &Recorder, payload: &[u8], signature: &str) -> (String, Vec<u8>) {
    let (payload_digest, payload_size) = rec.put(payload);
    let config = serde_json::json!({"architecture": "", "created": "0001-01-01T00:00:00Z",
        "os": "", "rootfs": {"type": "layers", "diff_ids": [payload_digest]}, "config": {}});
    let config = serde_json::to_vec(&config).unwrap();
    let (config_digest, config_size) = rec.put(&config);
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "size": config_size, "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "size": payload_size, "digest": payload_digest,
                    "annotations": {"dev.cosignproject.cosign/signature": signature}}]});
    (payload_digest, serde_json::to_vec(&manifest).unwrap())
}

#[test]
fn signatures_are_served_as_tags_and_referrers() {
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let (d, addr) = serving(&ctd, "");
    let subject = client(&rt, &ctd, "k8s.io");
    let subject = rt.block_on(subject.get_image(BUSYBOX)).unwrap().unwrap();
    assert_eq!(subject.digest, INDEX_2D8E);
    let hex = INDEX_2D8E.strip_prefix("sha256:").unwrap();
    let rec = Recorder::new(&rt, &ctd, "signatures-test");

    // A `.sig` manifest, under cosign's tag.
    let payload = sig_payload("docker.io/library/busybox", INDEX_2D8E);
    let (payload, sig) = sig_manifest(&rec, &payload, "MEUCIQ==");
    let sig_tag = format!("sha256-{hex}.sig");
    let sig_digest = rec.record(
        &format!("docker.io/library/busybox:{sig_tag}"),
        OCI_MANIFEST,
        &sig,
        INDEX_2D8E,
    );
    // A Sigstore bundle referring to the image, and the referrers tag's index listing it.
    let (empty, _) = rec.put(b"{}");
    let (layer, layer_size) =
        rec.put(br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#);
    let annotations = serde_json::json!({
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"});
    let bundle = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": OCI_MANIFEST, "artifactType": BUNDLE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": empty},
        "layers": [{"mediaType": BUNDLE, "size": layer_size, "digest": layer}],
        "annotations": annotations,
        "subject": {"mediaType": OCI_INDEX, "size": subject.size, "digest": INDEX_2D8E}}))
    .unwrap();
    let (bundle_digest, bundle_size) = rec.put(&bundle);
    let listed = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": bundle_digest,
        "size": bundle_size, "artifactType": BUNDLE, "annotations": annotations});
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [listed]});
    let referrers_tag = format!("sha256-{hex}");
    rec.record(
        &format!("docker.io/library/busybox:{referrers_tag}"),
        OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
        INDEX_2D8E,
    );

    // The `.sig` tag, as skopeo and any client fetch it; its payload; the tags.
    let raw = run(
        skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{addr}/library/busybox:{sig_tag}")),
        &d,
    );
    assert_eq!(raw.as_bytes(), sig.as_slice());
    let r = get(addr, &format!("/v2/library/busybox/manifests/{sig_tag}"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("docker-content-digest"), Some(sig_digest.as_str()));
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
    let r = get(addr, &format!("/v2/library/busybox/blobs/{payload}"));
    assert_eq!((r.status, sha256(&r.body)), (200, payload.clone()));
    let r = get(addr, "/v2/library/busybox/tags/list");
    let tags: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let tags: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    for tag in ["1.35", &referrers_tag, &sig_tag] {
        assert!(tags.contains(&tag), "{tag} not in {tags:?}");
    }

    // The referrers, unfiltered and filtered.
    let target = format!("/v2/library/busybox/referrers/{INDEX_2D8E}");
    let r = get(addr, &target);
    assert_eq!(r.status, 200, "{r:?}\n{}", d.log());
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.header("oci-filters-applied"), None);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, index);
    let r = get(
        addr,
        &format!("{target}?artifactType={}", BUNDLE.replace('+', "%2B")),
    );
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, index);
    let r = get(
        addr,
        &format!("{target}?artifactType=application/spdx%2Bjson"),
    );
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["manifests"], serde_json::json!([]));
    // What a client fetches next: the bundle manifest by digest, its layer.
    let r = get(
        addr,
        &format!("/v2/library/busybox/manifests/{bundle_digest}"),
    );
    assert_eq!((r.status, r.body.as_slice()), (200, bundle.as_slice()));
    let r = get(addr, &format!("/v2/library/busybox/blobs/{layer}"));
    assert_eq!((r.status, sha256(&r.body)), (200, layer.clone()));
    // Nothing refers to the layer; a malformed digest is refused.
    let r = get(addr, &format!("/v2/library/busybox/referrers/{layer}"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (r.status, &body["manifests"]),
        (200, &serde_json::json!([]))
    );
    let r = get(addr, "/v2/library/busybox/referrers/sha256:123");
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
}

/// Runs openssl in `dir`; its stdout.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    out.stdout
}

#[test]
fn cosign_verifies_a_signature_served_by_the_endpoint() {
    let Some(cosign) = common::signed::cosign_or_skip() else {
        return;
    };
    let ctd = Containerd::start(Version::V2).unwrap();
    let rt = rt();
    let (d, addr) = serving(&ctd, "");
    let hex = INDEX_2D8E.strip_prefix("sha256:").unwrap();
    // A key pair of openssl's, the payload signed as cosign signs it (ECDSA P-256, SHA-256,
    // DER, base64), the `.sig` manifest recorded beside the image.
    let keys = tempfile::tempdir().unwrap();
    for args in [
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "k.pem",
        ][..],
        &["ec", "-in", "k.pem", "-pubout", "-out", "k.pub"],
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "other.pem",
        ],
        &["ec", "-in", "other.pem", "-pubout", "-out", "other.pub"],
    ] {
        openssl(keys.path(), args);
    }
    let reference = format!("{addr}/library/busybox");
    let payload = sig_payload(&reference, INDEX_2D8E);
    std::fs::write(keys.path().join("payload"), &payload).unwrap();
    openssl(
        keys.path(),
        &[
            "dgst", "-sha256", "-sign", "k.pem", "-out", "sig", "payload",
        ],
    );
    let signature = openssl(keys.path(), &["base64", "-A", "-in", "sig"]);
    let signature = String::from_utf8(signature).unwrap();
    let rec = Recorder::new(&rt, &ctd, "cosign-test");
    let (_, sig) = sig_manifest(&rec, &payload, &signature);
    rec.record(
        &format!("docker.io/library/busybox:sha256-{hex}.sig"),
        OCI_MANIFEST,
        &sig,
        INDEX_2D8E,
    );

    let verify = |key: &str| {
        Command::new(&cosign)
            .env("HOME", keys.path())
            .args(["verify", "--key", key, "--insecure-ignore-tlog"])
            .args(["--allow-http-registry", "--allow-insecure-registry"])
            .arg(format!("{reference}@{INDEX_2D8E}"))
            .output()
            .unwrap()
    };
    let out = verify(&keys.path().join("k.pub").display().to_string());
    assert!(
        out.status.success(),
        "cosign verify: {}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        d.log()
    );
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        claims[0]["critical"]["image"]["docker-manifest-digest"], INDEX_2D8E,
        "{claims}"
    );
    // cosign asked the referrers API for bundles first (an empty list), then read the tag.
    let log = d.log();
    assert!(
        log.contains(&format!("/v2/library/busybox/referrers/{INDEX_2D8E}"))
            && log.contains(&format!("/v2/library/busybox/manifests/sha256-{hex}.sig")),
        "{log}"
    );
    // Another key does not verify it: cosign checked the signature it fetched.
    let out = verify(&keys.path().join("other.pub").display().to_string());
    assert!(!out.status.success(), "{out:?}");
}
