//! End-to-end: `airlift mirrors` writes containerd's hosts directory from a registries.yaml
//! whose `"*"` mirror is an empty distribution registry (`docker-registry`) and a peer (another
//! node's airlift registry endpoint), and containerd (2.x and 1.7, `ctr images pull
//! --hosts-dir`) then pulls an image only the peer has from the peer, and an image only the
//! image's own registry (an "upstream" `docker-registry` on loopback) has from that registry —
//! the fallback. The daemon's `[mirrors]` table writes the same files at start, and
//! `airlift mirrors --remove` takes them away.

mod common;

use airlift_integration::netns::Net;
use airlift_integration::{fixtures_dir, Containerd, Options, Version};
use common::daemon::Daemon;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
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

/// A `docker-registry` (on loopback, or in a network namespace), killed when dropped; its
/// access log in `log`.
struct Registry {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let r = Registry::start_at(free_port(), &[], None);
        for _ in 0..200 {
            if std::net::TcpStream::connect(r.addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        r
    }

    /// On `addr`, run through `wrapper` (`ip netns exec NS`), serving TLS with `tls`
    /// (certificate, key) if given; not waited for.
    fn start_at(addr: SocketAddr, wrapper: &[String], tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = tls {
            text.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.path().join("access.log")).unwrap();
        let mut cmd = wrapped(wrapper, "docker-registry");
        let child = cmd
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (bash integration/provision.sh installs it)");
        Registry { addr, child, dir }
    }

    /// The requests it was asked, as its access log has them.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
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
    skopeo_copy_via(&[], from, to)
}

/// [`skopeo_copy`] run through `wrapper` (`ip netns exec NS`).
fn skopeo_copy_via(wrapper: &[String], from: &str, to: &str) -> std::process::Output {
    let mut cmd = wrapped(wrapper, "skopeo");
    cmd.env("HOME", std::env::temp_dir())
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
        ctr_pull(&node, hosts_dir, name, true)
            .unwrap_or_else(|e| panic!("pulling {name}: {e}\npeer log:\n{}", peer.log()));
        assert_listed(&node, &[(name, digest)]);
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
        ctr_pull(&node, hosts_dir, name, true)
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
    ctr_pull(&node, hosts_dir, &image_c, true)
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

/// The same story with each node on a network of its own (`ip netns`, veth links): node A's
/// airlift serves on 10.201.1.1 in namespace A; the images' own registry and an empty mirror
/// are on 10.201.2.1 in namespace U; node B's containerd and airlift run in namespace B, the
/// only one linked to both. B's airlift writes B's hosts.toml from a registries.yaml with a
/// `"*"` mirror and A as peer, and pulls a pull list: A's image comes from A (the upstream is
/// never asked for it), the other from the upstream. Then A's link goes down (its packets
/// dropped, as when a node is powered off): containerd (`ctr images pull`) and airlift still
/// pull from the upstream, past the silent peer (its `dial_timeout`) and the empty mirror.
fn nodes_in_network_namespaces(version: Version) {
    if !Net::available() {
        eprintln!("skipped: no network namespaces here (root and iproute2 are needed); mirrors_keep_the_fallback covers the same on loopback");
        return;
    }
    let mut net = Net::new();
    let (ns_a, ns_b, ns_u) = (
        net.add("a").unwrap(),
        net.add("b").unwrap(),
        net.add("u").unwrap(),
    );
    let (dev_a, _) = net.link(&ns_a, "10.201.1.1", &ns_b, "10.201.1.2").unwrap();
    net.link(&ns_u, "10.201.2.1", &ns_b, "10.201.2.2").unwrap();
    let peer_addr: SocketAddr = "10.201.1.1:5000".parse().unwrap();
    let up: SocketAddr = "10.201.2.1:5000".parse().unwrap();
    let mirror_addr: SocketAddr = "10.201.2.1:5001".parse().unwrap();

    // Node A (its containerd is reached by its socket; its airlift serves in namespace A).
    let node_a = Containerd::start(version).unwrap();
    let mut peer = Daemon::new(
        &node_a,
        &format!("platforms = [\"all\"]\n[registry]\naddress = \"{peer_addr}\"\nserve = \"all\"\n"),
    );
    peer.wrapper = net.exec(&ns_a);
    peer.env
        .push(("AIRLIFT_LOG".into(), "info,airlift::registry=debug".into()));
    std::fs::copy(
        fixtures_dir().join("bundle-ctr-export.tar"),
        peer.images().join("bundle.tar"),
    )
    .unwrap();
    peer.start();
    peer.wait();
    net.wait_listening(&ns_b, peer_addr).unwrap();

    // The upstream serves HTTPS (a registry on another host does), with a CA of its own that
    // registries.yaml names; the empty mirror plain HTTP.
    let certs = tempfile::tempdir().unwrap();
    certificates_for(certs.path(), &up.ip().to_string());
    let upstream = Registry::start_at(
        up,
        &net.exec(&ns_u),
        Some((
            &certs.path().join("server.crt"),
            &certs.path().join("server.key"),
        )),
    );
    let _mirror = Registry::start_at(mirror_addr, &net.exec(&ns_u), None);
    net.wait_listening(&ns_b, up).unwrap();
    net.wait_listening(&ns_b, mirror_addr).unwrap();
    let image_a = format!("{up}/peer-only/busybox:1.35");
    let image_b = format!("{up}/upstream-only/tools:latest");
    node_a
        .ctr_output(&["-n", "k8s.io", "images", "tag", BUSYBOX, &image_a])
        .unwrap();
    let copied = skopeo_copy_via(&net.exec(&ns_b), &format!("{peer_addr}/{TOOLS}"), &image_b);
    assert!(
        copied.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&copied.stderr)
    );

    // Node B, in namespace B: its airlift writes the hosts directory and pulls a list.
    let node_b = Containerd::start_with(
        version,
        Options {
            netns: Some(ns_b.clone()),
            ..Options::default()
        },
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let registries = work.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!(
            "mirrors:\n  \"*\":\n    endpoint:\n      - \"http://{mirror_addr}\"\nconfigs:\n  \"{up}\":\n    tls:\n      ca_file: {:?}\n",
            certs.path().join("ca.crt")
        ),
    )
    .unwrap();
    let hosts = work.path().join("certs.d");
    let mut b = Daemon::new(
        &node_b,
        &format!(
            "platforms = [\"all\"]\n[mirrors]\nregistries = {registries:?}\nhosts_dir = {hosts:?}\npeers = [\"http://{peer_addr}\"]\n"
        ),
    );
    b.wrapper = net.exec(&ns_b);
    b.start();
    b.wait();
    let list = b.images().join("images.txt");
    let tmp = b.images().join(".images.txt.new");
    std::fs::write(&tmp, format!("{image_a}\n{image_b}\n")).unwrap();
    std::fs::rename(&tmp, &list).unwrap();
    b.until("B to pull its list", || {
        b.archive(&list).is_some_and(|s| s["state"] == "imported")
    });
    assert_listed(&node_b, &[(&image_a, INDEX_2D8E), (&image_b, DOCKER_5142)]);
    let ns = format!("ns={}%3A{}", up.ip(), up.port());
    assert!(
        peer.log()
            .lines()
            .any(|l| l.contains("path=/v2/peer-only/busybox/manifests/")
                && l.contains(&ns)
                && l.contains("status=200")),
        "A was not asked for its image:\n{}",
        peer.log()
    );
    let asked = upstream.log();
    assert!(
        !asked.contains("peer-only"),
        "the upstream was asked for A's image:\n{asked}"
    );
    assert!(asked.contains("upstream-only/tools"), "{asked}");

    // A's link goes down: its packets are dropped. containerd and airlift still pull from the
    // upstream.
    let image_c = format!("{up}/upstream-only/second:1");
    let copied = skopeo_copy_via(&net.exec(&ns_b), &image_b, &image_c);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    net.set(&ns_a, &dev_a, false).unwrap();
    let hosts_dir = hosts.to_str().unwrap();
    ctr_pull(&node_b, hosts_dir, &image_c, false)
        .unwrap_or_else(|e| panic!("pulling {image_c} with A down: {e}"));
    node_b
        .ctr_output(&["-n", "k8s.io", "images", "rm", &image_c])
        .unwrap();
    std::fs::write(&tmp, format!("{image_a}\n{image_b}\n{image_c}\n")).unwrap();
    std::fs::rename(&tmp, &list).unwrap();
    b.until("B to pull the new line with A down", || {
        b.archive(&list).is_some_and(|s| s["state"] == "imported")
            && node_b
                .ctr_output(&["-n", "k8s.io", "images", "ls", "-q"])
                .is_ok_and(|l| l.lines().any(|n| n == image_c))
    });
    // A's image, which only A has, is kept as pulled before (A cannot be asked again).
    assert!(
        b.log().contains("the image pulled before is kept"),
        "{}",
        b.log()
    );
    drop(b);
    drop(node_b);
    drop(peer);
}

on_containerd!(nodes_in_network_namespaces {
    nodes_in_network_namespaces_containerd_2: Version::V2;
    nodes_in_network_namespaces_containerd_17: Version::V17;
});
