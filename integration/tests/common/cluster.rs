//! Nodes of a cluster in network namespaces, for `tests/cluster.rs`: each its own containerd
//! 2.x (in the namespace, its CRI reading the node's registry hosts directory), its own real
//! Spegel ([`airlift_integration::spegel`]) and its own `airlift serve`. The seed imports
//! archives; the others pull lists through their own Spegel, their `hosts.toml` written by
//! `airlift mirrors`. A node's processes stop when it is dropped.

use super::daemon::Daemon;
use super::{airlift_bin, images};
use airlift_integration::netns::Net;
use airlift_integration::spegel::{self, Spegel};
use airlift_integration::{Containerd, Options, Version};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One node's processes (dropped in this order: Spegel, airlift, containerd).
pub struct Node {
    pub tag: &'static str,
    pub spegel: Spegel,
    pub airlift: Daemon,
    pub ctd: Containerd,
    /// containerd's registry hosts directory (`config_path`), airlift's `hosts_dir`.
    pub hosts: PathBuf,
}

impl Node {
    /// The logs of the node's processes, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- node {} airlift ---\n{}\n--- node {} spegel ---\n{}\n--- node {} containerd ---\n{}",
            self.tag,
            tail(&self.airlift.log(), 40),
            self.tag,
            self.spegel.log_tail(30),
            self.tag,
            self.ctd.log_tail(20)
        )
    }

    /// The node's pull list.
    pub fn list(&self) -> PathBuf {
        self.airlift.images().join("images.txt")
    }

    /// Writes the pull list (atomically, as a user's `mv` does).
    pub fn write_list(&self, names: &[&str]) {
        let tmp = self.airlift.images().join(".images.txt.new");
        std::fs::write(&tmp, names.join("\n") + "\n").unwrap();
        std::fs::rename(&tmp, self.list()).unwrap();
    }

    /// Waits until every name has its expected target here, pinned.
    pub fn until_pinned(&self, rt: &tokio::runtime::Runtime, expected: &[(String, String)]) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let missing = missing_pins(rt, &self.ctd, expected);
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: {}\n{}",
                self.tag,
                missing.join("; "),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `airlift verify` against the node's containerd: every image airlift manages is pinned
    /// for CRI and whole, each blob labelled with its distribution source.
    pub fn verify(&self) {
        let out = Command::new(airlift_bin())
            .args(["verify", "--address"])
            .arg(self.ctd.address())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "node {}: airlift verify: {}{}\n{}",
            self.tag,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What of `expected` (name, target digest) is not here as it should be, pinned.
pub fn missing_pins(
    rt: &tokio::runtime::Runtime,
    ctd: &Containerd,
    expected: &[(String, String)],
) -> Vec<String> {
    let have = images(rt, ctd, "k8s.io");
    expected
        .iter()
        .filter_map(
            |(name, digest)| match have.iter().find(|i| &i.name == name) {
                None => Some(format!("{name} is not there")),
                Some(i) if &i.digest != digest => {
                    Some(format!("{name} is {} instead of {digest}", i.digest))
                }
                Some(i)
                    if i.labels.get("io.cri-containerd.pinned").map(String::as_str)
                        != Some("pinned") =>
                {
                    Some(format!("{name} is not pinned"))
                }
                Some(_) => None,
            },
        )
        .collect()
}

/// containerd 2.x in namespace `ns`, its CRI reading registry hosts from `hosts`.
pub fn containerd_options(ns: &str, hosts: &Path) -> Options {
    Options {
        netns: Some(ns.to_string()),
        extra_config: format!(
            "[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = {hosts:?}\n"
        ),
        ..Options::default()
    }
}

/// Spegel on the node at `ip` in `ns`, reading `ctd`'s images and the blobs in `content`,
/// bootstrapped from the node at `bootstrap`; once it serves.
pub fn spegel_on(
    bin: &Path,
    ns: &str,
    ip: IpAddr,
    ctd: &Containerd,
    content: &Path,
    bootstrap: IpAddr,
) -> Spegel {
    let mut spegel = Spegel::start(
        bin,
        spegel::Config {
            netns: ns.to_string(),
            ip,
            containerd: ctd.address().to_path_buf(),
            content_path: content.to_path_buf(),
            bootstrap,
        },
    )
    .unwrap();
    spegel.wait_serving(Duration::from_secs(30)).unwrap();
    spegel
}

/// Node A: `airlift serve` importing `archives` (as a sidecar, or as containerd's content
/// store when `proxy`), with `config` at the top of its configuration; its Spegel reads blobs
/// from wherever the node's content lives.
pub fn seed(
    net: &Net,
    ns: &str,
    ip: IpAddr,
    bin: &Path,
    proxy: bool,
    config: &str,
    archives: &[PathBuf],
) -> Node {
    let (mut airlift, store) = if proxy {
        let (d, root) = Daemon::content_proxy();
        (d, Some(root))
    } else {
        (Daemon::unbound(""), None)
    };
    airlift.config = format!("{config}\n{}", airlift.config);
    for a in archives {
        std::fs::copy(a, airlift.images().join(a.file_name().unwrap())).unwrap();
    }
    let hosts = airlift.dir.path().join("certs.d");
    let ctd = Containerd::start_with(
        Version::V2,
        Options {
            content_proxy: proxy.then(|| airlift.socket()),
            content_proxy_root: store.clone(),
            ..containerd_options(ns, &hosts)
        },
    )
    .unwrap();
    airlift.address = ctd.address().to_path_buf();
    airlift.wrapper = net.exec(ns);
    airlift.start();
    airlift.wait();
    let content = store.unwrap_or_else(|| ctd.content_root());
    let spegel = spegel_on(bin, ns, ip, &ctd, &content, ip);
    Node {
        tag: "A",
        spegel,
        airlift,
        ctd,
        hosts,
    }
}

/// Node B or C: containerd, Spegel bootstrapped from `seed_ip`, the hosts directory written by
/// `airlift mirrors` with its own Spegel as the peer, and `airlift serve` pulling `list`
/// through it once its Spegel finds every name of it.
pub fn peer(
    net: &Net,
    tag: &'static str,
    ns: &str,
    ip: IpAddr,
    bin: &Path,
    seed_ip: IpAddr,
    list: &[&str],
) -> Node {
    let mut airlift = Daemon::unbound("");
    let hosts = airlift.dir.path().join("certs.d");
    let ctd = Containerd::start_with(Version::V2, containerd_options(ns, &hosts)).unwrap();
    let spegel = spegel_on(bin, ns, ip, &ctd, &ctd.content_root(), seed_ip);
    let mirrors = Command::new(airlift_bin())
        .args(["mirrors", "--hosts-dir"])
        .arg(&hosts)
        .args(["--peer", &spegel.url()])
        .output()
        .unwrap();
    assert!(
        mirrors.status.success(),
        "node {tag}: airlift mirrors: {}",
        String::from_utf8_lossy(&mirrors.stderr)
    );
    let written = std::fs::read_to_string(hosts.join("_default/hosts.toml")).unwrap();
    assert!(
        written.contains("server = \"\"")
            && written.contains(&format!("[host.\"{}\"]", spegel.url())),
        "node {tag}: its own Spegel first, the images' own registries last:\n{written}"
    );
    // The router has found A, and A's keys, once B's Spegel resolves every name.
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in list {
        let path = manifest_path(name);
        while !spegel.get(&path).is_ok_and(|(code, _)| code == 200) {
            assert!(
                Instant::now() < deadline,
                "node {tag}: its Spegel never resolved {name} ({path}):\n{}",
                spegel.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    airlift.address = ctd.address().to_path_buf();
    airlift.config = format!("hosts_dir = {hosts:?}\n");
    airlift.wrapper = net.exec(ns);
    let mut node = Node {
        tag,
        spegel,
        airlift,
        ctd,
        hosts,
    };
    node.write_list(list);
    node.airlift.start();
    node.airlift.wait();
    node
}

/// The registry path containerd asks a mirror for `name`'s manifest (`?ns=` its registry).
pub fn manifest_path(name: &str) -> String {
    let (registry, rest) = name.split_once('/').unwrap();
    let (repo, tag) = rest.rsplit_once(':').unwrap();
    format!("/v2/{repo}/manifests/{tag}?ns={registry}")
}
