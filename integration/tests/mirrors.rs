//! End-to-end: `airlift mirrors` writes containerd's hosts directory from a registries.yaml
//! whose `"*"` mirror is an empty distribution registry (`docker-registry`) and a peer (another
//! node's airlift registry endpoint), and containerd (2.x and 1.7, `ctr images pull
//! --hosts-dir`) then pulls an image only the peer has from the peer, and an image only the
//! image's own registry (an "upstream" `docker-registry` on loopback) has from that registry —
//! the fallback. The daemon's `[mirrors]` table writes the same files at start, and
//! `airlift mirrors --remove` takes them away.

mod common;

use airlift_integration::{fixtures_dir, Containerd, Version};
use common::daemon::Daemon;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BUSYBOX: &str = "docker.io/library/busybox:1.35";
const INDEX_2D8E: &str = "sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd";
const TOOLS: &str = "registry.example.com/tools/busybox:latest";
const DOCKER_5142: &str = "sha256:5142ba3ef0ec91d16e239b22f1964d43c420f200f2c1a1eb34ba9cceb487fc76";

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A `docker-registry` on loopback, killed when dropped.
struct Registry {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (bash integration/provision.sh installs it)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Registry {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn airlift_mirrors(args: &[&str]) -> String {
    let out = Command::new(airlift_bin())
        .arg("mirrors")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "airlift mirrors {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every file under `dir`, relative path → text.
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        for f in std::fs::read_dir(&p).unwrap() {
            let f = f.unwrap().path();
            out.push((
                f.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read_to_string(&f).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

/// `skopeo copy` of an image between two plain-HTTP registries, digests kept.
fn skopeo_copy(from: &str, to: &str) -> std::process::Output {
    Command::new("skopeo")
        .env("HOME", std::env::temp_dir())
        .args([
            "--insecure-policy",
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--preserve-digests",
        ])
        .arg(format!("docker://{from}"))
        .arg(format!("docker://{to}"))
        .output()
        .unwrap()
}

fn mirrors_keep_the_fallback(version: Version) {
    // Node A: airlift serving what it imported (every image: the names below are tags ctr adds).
    let peer_ctd = Containerd::start(version).unwrap();
    let peer_addr = free_port();
    let mut peer = Daemon::new(
        &peer_ctd,
        &format!("platforms = [\"all\"]\n[registry]\naddress = \"{peer_addr}\"\nserve = \"all\"\n"),
    );
    std::fs::copy(
        fixtures_dir().join("bundle-ctr-export.tar"),
        peer.images().join("bundle.tar"),
    )
    .unwrap();
    peer.env
        .push(("AIRLIFT_LOG".into(), "info,airlift::registry=debug".into()));
    peer.start();
    peer.wait();

    // The upstream (the images' own registry) and an empty mirror.
    let upstream = Registry::start();
    let mirror = Registry::start();
    let up = upstream.addr;
    // Image A: on the peer only. Image B: on the upstream only (copied there from the peer,
    // under a name the peer does not serve).
    let image_a = format!("{up}/peer-only/busybox:1.35");
    let image_b = format!("{up}/upstream-only/tools:latest");
    peer_ctd
        .ctr_output(&["-n", "k8s.io", "images", "tag", BUSYBOX, &image_a])
        .unwrap();
    let copied = skopeo_copy(&format!("{peer_addr}/{TOOLS}"), &image_b);
    assert!(
        copied.status.success(),
        "skopeo copy: {}\npeer log:\n{}",
        String::from_utf8_lossy(&copied.stderr),
        peer.log()
    );

    // airlift mirrors: "*" → the empty mirror, the peer first.
    let work = tempfile::tempdir().unwrap();
    let registries = work.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!(
            "mirrors:\n  \"*\":\n    endpoint:\n      - \"http://{}\"\n",
            mirror.addr
        ),
    )
    .unwrap();
    let hosts = work.path().join("certs.d");
    let peer_url = format!("http://{peer_addr}");
    let said = airlift_mirrors(&[
        "--registries",
        registries.to_str().unwrap(),
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--peer",
        &peer_url,
    ]);
    assert!(
        said.contains("created") && said.contains("_default/hosts.toml"),
        "{said}"
    );
    let written = std::fs::read_to_string(hosts.join("_default/hosts.toml")).unwrap();
    let peer_at = written.find(&format!("[host.\"{peer_url}\"]")).unwrap();
    let mirror_at = written
        .find(&format!("[host.\"http://{}\"]", mirror.addr))
        .unwrap();
    assert!(peer_at < mirror_at, "{written}");
    // Again: unchanged.
    let again = airlift_mirrors(&[
        "--registries",
        registries.to_str().unwrap(),
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--peer",
        &peer_url,
    ]);
    assert!(again.starts_with("unchanged"), "{again}");

    // Node B pulls A (from the peer) and B (from the upstream, past the peer and the mirror).
    let node = Containerd::start(version).unwrap();
    let hosts_dir = hosts.to_str().unwrap();
    for (name, digest) in [(&image_a, INDEX_2D8E), (&image_b, DOCKER_5142)] {
        node.ctr_output(&[
            "-n",
            "k8s.io",
            "images",
            "pull",
            "--plain-http",
            "--all-platforms",
            "--hosts-dir",
            hosts_dir,
            name,
        ])
        .unwrap_or_else(|e| panic!("pulling {name}: {e}\npeer log:\n{}", peer.log()));
        let listed = node.ctr_output(&["-n", "k8s.io", "images", "ls"]).unwrap();
        let line = listed
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not pulled:\n{listed}"));
        assert!(line.contains(digest), "{line}");
    }
    // The peer was asked for both, by the registry's name (ns=, its ':' escaped): A served,
    // B not found, so B came from the upstream.
    let log = peer.log();
    let ns = format!("ns={}%3A{}", up.ip(), up.port());
    for (repo, status) in [("peer-only/busybox", 200), ("upstream-only/tools", 404)] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("path=/v2/{repo}/manifests/"))
                    && l.contains(&ns)
                    && l.contains(&format!("status={status}"))),
            "no request for {repo} answered {status}:\n{log}"
        );
    }

    // The daemon's [mirrors] table writes the same files at start.
    let daemon_hosts = work.path().join("daemon-certs.d");
    let mut d = Daemon::new(
        &node,
        &format!(
            "[mirrors]\nregistries = {registries:?}\nhosts_dir = {daemon_hosts:?}\npeers = [\"{peer_url}\"]\n"
        ),
    );
    d.start();
    d.wait();
    assert_eq!(
        tree(&daemon_hosts),
        tree(&hosts),
        "daemon log:\n{}",
        d.log()
    );
    drop(d);

    // The upstream named in registries.yaml: a directory of its own, whose server is the
    // upstream itself (plain http: a loopback registry on a port); _default keeps the peer.
    std::fs::write(
        &registries,
        format!(
            "mirrors:\n  \"{up}\":\n    endpoint: [\"http://{}\"]\n",
            mirror.addr
        ),
    )
    .unwrap();
    let said = airlift_mirrors(&[
        "--registries",
        registries.to_str().unwrap(),
        "--hosts-dir",
        hosts_dir,
        "--peer",
        &peer_url,
    ]);
    let own = format!("{}_{}_/hosts.toml", up.ip(), up.port());
    assert!(
        said.contains(&format!("created {}", hosts.join(&own).display())),
        "{said}"
    );
    assert!(said.contains("updated"), "{said}");
    let written = std::fs::read_to_string(hosts.join(&own)).unwrap();
    assert!(
        written.contains(&format!("\nserver = \"http://{up}\"\n")),
        "{written}"
    );
    let asked = |log: &str| {
        log.matches("path=/v2/upstream-only/tools/manifests/")
            .count()
    };
    let before = asked(&peer.log());
    for name in [&image_a, &image_b] {
        node.ctr_output(&["-n", "k8s.io", "images", "rm", name])
            .unwrap();
        node.ctr_output(&[
            "-n",
            "k8s.io",
            "images",
            "pull",
            "--plain-http",
            "--all-platforms",
            "--hosts-dir",
            hosts_dir,
            name,
        ])
        .unwrap_or_else(|e| panic!("pulling {name} again: {e}\npeer log:\n{}", peer.log()));
    }
    assert!(asked(&peer.log()) > before, "the peer was not asked first");

    // The peer goes down: an image only the upstream has is still pulled, past a peer that
    // does not answer and the empty mirror.
    let image_c = format!("{up}/upstream-only/second:1");
    let copied = skopeo_copy(&image_b, &image_c);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    drop(peer);
    node.ctr_output(&[
        "-n",
        "k8s.io",
        "images",
        "pull",
        "--plain-http",
        "--all-platforms",
        "--hosts-dir",
        hosts_dir,
        &image_c,
    ])
    .unwrap_or_else(|e| panic!("pulling {image_c} with the peer down: {e}"));

    // --remove takes them away (they replaced nothing).
    let removed = airlift_mirrors(&["--remove", "--hosts-dir", hosts_dir]);
    assert!(removed.starts_with("removed"), "{removed}");
    assert!(tree(&hosts).is_empty());
}

on_containerd!(mirrors_keep_the_fallback {
    mirrors_keep_the_fallback_containerd_2: Version::V2;
    mirrors_keep_the_fallback_containerd_17: Version::V17;
});
