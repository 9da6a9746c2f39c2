//! The registries of S: what a registry lists (its images and their blobs, over HTTP with
//! `curl`), and the peer registry, `docker-registry` holding the same images.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A free loopback address.
pub fn loopback() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A whole HTTP GET of `url` (plain, no redirects, `Connection: close`): the body.
fn http_get(url: &str) -> Vec<u8> {
    let out = Command::new("curl").args(["-sSf", url]).output().unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The JSON document at `url`.
fn json(url: &str) -> serde_json::Value {
    serde_json::from_slice(&http_get(url)).unwrap()
}

/// The `(repository, digest, size)` of every blob of every image a registry at `base` lists
/// (each digest once), and the images as `repository:tag`.
pub fn blobs_of(base: &str) -> (Vec<(String, String, u64)>, Vec<String>) {
    let catalog = json(&format!("{base}/v2/_catalog"));
    let mut seen = std::collections::BTreeSet::new();
    let mut blobs = Vec::new();
    let mut images = Vec::new();
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags = json(&format!("{base}/v2/{repo}/tags/list"));
        for tag in tags["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            images.push(format!("{repo}:{tag}"));
            let m = json(&format!("{base}/v2/{repo}/manifests/{tag}"));
            let layers = m["layers"].as_array().unwrap().iter();
            for d in std::iter::once(&m["config"]).chain(layers) {
                let digest = d["digest"].as_str().unwrap().to_string();
                if seen.insert(digest.clone()) {
                    blobs.push((repo.to_string(), digest, d["size"].as_u64().unwrap()));
                }
            }
        }
    }
    (blobs, images)
}

/// `docker-registry` on `at`, its storage in `dir`, holding `images` (the same digests) copied
/// by skopeo from the registry at `from`.
pub fn docker_registry(dir: &Path, at: SocketAddr, from: SocketAddr, images: &[String]) -> Child {
    let reg_dir = dir.join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    let reg_config = reg_dir.join("config.yml");
    std::fs::write(
        &reg_config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  addr: {at}\n",
            reg_dir.join("data").display()
        ),
    )
    .unwrap();
    let registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&reg_config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (bash integration/provision.sh installs it)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(at).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for image in images {
        let ok = Command::new("skopeo")
            .env("HOME", dir)
            .args([
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--preserve-digests",
                "-q",
            ])
            .arg(format!("docker://{from}/{image}"))
            .arg(format!("docker://{at}/{image}"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "skopeo copy {image} into docker-registry");
    }
    registry
}
