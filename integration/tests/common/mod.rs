//! Shared pieces of the end-to-end tests: running the `airlift` binary, querying containerd
//! through airlift's client, and making broken archives from the fixtures.

#![allow(dead_code)]

pub use airlift::containerd::Containerd as _;
use airlift::containerd::{BlobInfo, Client, Grpc, ImageRecord};
use airlift::digest::Digest;
use airlift_integration::{fixtures_dir, repo_root, Containerd};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub mod daemon;

/// What containerd's own importer makes of each fixture (`--all-platforms`): name → target.
pub const INDEX_2D8E: &str =
    "sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd";
/// The arm64 docker manifest containerd synthesises.
pub const ARM64_5142: &str =
    "sha256:5142ba3ef0ec91d16e239b22f1964d43c420f200f2c1a1eb34ba9cceb487fc76";
/// The amd64 docker manifest containerd synthesises.
pub const DOCKER_9C0B: &str =
    "sha256:9c0b0fd8eabfb086e699955045c31650c8620d9ca78ca73e69f772cb3b74a7af";

/// Expected `(name, target digest)` pairs for a fixture file, sorted.
pub fn expected(fixture: &str) -> Vec<(String, String)> {
    let stem = fixture.split('.').next().unwrap();
    let v: Vec<(&str, &str)> = match stem {
        "bundle-ctr-export" => vec![
            ("docker.io/library/busybox:1.35", INDEX_2D8E),
            ("registry.example.com/tools/busybox:1.35-arm64", ARM64_5142),
            ("registry.example.com/tools/busybox:latest", ARM64_5142),
        ],
        "busybox-arm64-multitag-docker" => vec![
            ("docker.io/library/busybox:stable", ARM64_5142),
            ("registry.example.com/tools/busybox:1.35-arm64", ARM64_5142),
            ("registry.example.com/tools/busybox:latest", ARM64_5142),
        ],
        "busybox-docker" | "busybox-docker-long31" => {
            vec![("docker.io/library/busybox:1.35", DOCKER_9C0B)]
        }
        "busybox-multiarch-oci" | "busybox-amd64-only-ctr-export" => {
            vec![("docker.io/library/busybox:1.35", INDEX_2D8E)]
        }
        "busybox-oci-tagonly" => vec![(
            "example.com/base:1.35",
            "sha256:e9b6f6016ae73f57bba8637ec8268512a0b29a978df796cbbdeeaf7b98517d43",
        )],
        "busybox-umoci-layout" => vec![(
            "example.com/base:v1",
            "sha256:6ae9ea8dc90d9387c906f7f6cfc439a21663ae1dcab4fe279dc1bf2d8a0d4555",
        )],
        other => panic!("no expectation for {other}"),
    };
    let mut v: Vec<(String, String)> = v.into_iter().map(|(a, b)| (a.into(), b.into())).collect();
    v.sort();
    v
}

/// Every fixture archive.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.contains(".t") && !n.ends_with(".md")
        })
        .collect();
    v.sort();
    v
}

/// The `airlift` binary built by `cargo build`.
pub fn airlift_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug").join("airlift");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// Runs `airlift import` against `ctd` with extra arguments.
pub fn import(ctd: &Containerd, namespace: &str, args: &[&str]) -> Output {
    let out = Command::new(airlift_bin())
        .arg("import")
        .arg("--address")
        .arg(ctd.address())
        .arg("--namespace")
        .arg(namespace)
        .arg("--state-dir")
        .arg(ctd.dir().join("airlift-state"))
        .args(args)
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE")
        .output()
        .unwrap();
    out
}

/// Runs `airlift import --json` and returns the parsed report; panics unless it succeeded.
pub fn import_ok(ctd: &Containerd, namespace: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = import(ctd, namespace, &all);
    assert!(
        out.status.success(),
        "airlift import {args:?} failed: {}\n{}\ncontainerd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        ctd.log_tail(30)
    );
    // Direct mode claims blobs by digest; falling back to streaming them would be a regression.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("streaming it instead"),
        "direct claim fell back to streaming: {stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A tokio runtime for client calls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A client of `ctd`'s CRI image service.
pub fn cri(
    rt: &tokio::runtime::Runtime,
    ctd: &Containerd,
) -> k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel> {
    let address = ctd.cri_address().to_path_buf();
    let channel = rt
        .block_on(
            tonic::transport::Endpoint::try_from("http://localhost")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let address = address.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(address).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                })),
        )
        .unwrap();
    k8s_cri::v1::image_service_client::ImageServiceClient::new(channel)
}

/// The image CRI lists under `tag`, waiting for it a while (CRI learns of images through
/// events, and answers only once its plugin has finished starting).
pub fn cri_listed(
    rt: &tokio::runtime::Runtime,
    ctd: &Containerd,
    tag: &str,
) -> Option<k8s_cri::v1::Image> {
    let mut cri = cri(rt, ctd);
    for _ in 0..100 {
        let list = rt
            .block_on(cri.list_images(k8s_cri::v1::ListImagesRequest { filter: None }))
            .map(|r| r.into_inner().images)
            .unwrap_or_default();
        if let Some(i) = list
            .into_iter()
            .find(|i| i.repo_tags.iter().any(|t| t == tag))
        {
            return Some(i);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// A client of `ctd` in `namespace`.
pub fn client(rt: &tokio::runtime::Runtime, ctd: &Containerd, namespace: &str) -> Client {
    grpc(rt, ctd.address(), namespace).with_lease(None)
}

/// The gRPC client of the socket at `address` in `namespace` (for checks of the wire protocol).
pub fn grpc(rt: &tokio::runtime::Runtime, address: &Path, namespace: &str) -> Grpc {
    rt.block_on(Grpc::connect(address, namespace, Duration::from_secs(10)))
        .unwrap()
}

/// The images of a namespace.
pub fn images(rt: &tokio::runtime::Runtime, ctd: &Containerd, namespace: &str) -> Vec<ImageRecord> {
    let mut v = rt
        .block_on(client(rt, ctd, namespace).list_images(vec![]))
        .unwrap();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// `(name, digest)` of the images of a namespace.
pub fn image_pairs(
    rt: &tokio::runtime::Runtime,
    ctd: &Containerd,
    namespace: &str,
) -> Vec<(String, String)> {
    images(rt, ctd, namespace)
        .into_iter()
        .map(|i| (i.name, i.digest))
        .collect()
}

/// A blob's info in a namespace.
pub fn blob(
    rt: &tokio::runtime::Runtime,
    ctd: &Containerd,
    namespace: &str,
    digest: &str,
) -> Option<BlobInfo> {
    rt.block_on(client(rt, ctd, namespace).info(&digest.parse::<Digest>().unwrap()))
        .unwrap()
}

/// Files left in airlift's temporary directory and containerd's ingest directory.
pub fn leftovers(ctd: &Containerd) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in [
        ctd.content_root().join(airlift::store::layout::TEMP_DIR),
        ctd.content_root().join("ingest"),
    ] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            // `<token>.lock` files mark live airlift processes; they are not import leftovers.
            v.extend(
                entries
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_none_or(|x| x != "lock")),
            );
        }
    }
    v
}

/// The blobs on disk in the content root.
pub fn blobs_on_disk(ctd: &Containerd) -> Vec<String> {
    let dir = ctd.content_root().join("blobs").join("sha256");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads a fixture tar (any compression) into a list of raw entries (header, data).
pub fn tar_entries(fixture: &str) -> Vec<(tar::Header, Vec<u8>)> {
    let data = std::fs::read(fixtures_dir().join(fixture)).unwrap();
    let mut archive = tar::Archive::new(&data[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            // Keep long names: rewrite the header's name from the full path.
            let path = e.path().unwrap().to_string_lossy().into_owned();
            if path.len() < 100 {
                h.set_path(&path).unwrap();
            }
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut buf).unwrap();
            (h, buf)
        })
        .collect()
}

/// Writes entries as a tar file.
pub fn write_tar(path: &Path, entries: &[(tar::Header, Vec<u8>)]) {
    let mut b = tar::Builder::new(Vec::new());
    for (h, data) in entries {
        let mut h = h.clone();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// A header for a hostile entry, written byte by byte so the tar crate's own checks don't stop it.
pub fn raw_header(name: &str, kind: tar::EntryType, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_mut_bytes()[157..157 + l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h
}

/// Labels as a sorted map.
pub fn sorted(labels: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    labels.clone().into_iter().collect()
}

/// Starts recording opens of files in `dir` (inotify IN_OPEN / IN_ACCESS); the returned function
/// stops and lists the names opened.
pub fn inotify_opens(dir: &Path) -> impl FnOnce() -> Vec<String> {
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK) };
    assert!(fd >= 0);
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) };
    assert!(wd >= 0);
    move || {
        let mut names = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            while off < n as usize {
                let ev = unsafe { &*(buf.as_ptr().add(off) as *const libc::inotify_event) };
                let len = ev.len as usize;
                let start = off + std::mem::size_of::<libc::inotify_event>();
                let name = &buf[start..start + len];
                let name = String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_string();
                if ev.mask & libc::IN_ISDIR == 0 && !name.is_empty() {
                    names.push(name);
                }
                off = start + len;
            }
        }
        unsafe { libc::close(fd) };
        names.sort();
        names.dedup();
        names
    }
}
