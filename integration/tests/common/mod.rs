//! Shared pieces of the end-to-end tests: the fixtures and the golden table of what containerd
//! makes of them, running the `airlift` binary, and querying containerd through airlift's
//! client. Made-up and broken archives come from [`airlift_integration::archives`].

#![allow(dead_code)]

// The service traits, for calls on a `Grpc` handle (each test uses some of them).
use airlift::containerd::{BlobInfo, Client, Grpc, ImageRecord};
#[allow(unused_imports)]
pub use airlift::containerd::{
    Containerd as _, Content as _, Images as _, Introspection as _, Leases as _, Snapshots as _,
    Subscriber as _, Transfer as _,
};
use airlift::digest::Digest;
use airlift_integration::{fixtures_dir, repo_root, Containerd};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub mod cluster;
pub mod daemon;
pub mod signed;

#[allow(unused_imports)]
pub use airlift_integration::golden::*;

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

/// The entries of a plain-tar fixture, to rewrite into a broken variant.
pub fn fixture_entries(fixture: &str) -> Vec<airlift_integration::archives::Entry> {
    airlift_integration::archives::read_entries(&fixtures_dir().join(fixture))
        .unwrap_or_else(|e| panic!("{fixture}: {e}"))
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

/// One `#[test]` per line, each calling the test function with that line's arguments (a
/// containerd version, a mode, ...):
///
/// ```ignore
/// on_containerd!(fixtures_match_containerd {
///     fixtures_containerd_2_direct: Version::V2, "direct";
///     fixtures_containerd_17_direct: Version::V17, "direct";
/// });
/// ```
#[macro_export]
macro_rules! on_containerd {
    ($f:ident { $($name:ident: $($arg:expr),+;)+ }) => {
        $(
            #[test]
            fn $name() {
                $f($($arg),+)
            }
        )+
    };
}

/// `openssl` with arguments, in `dir`.
#[allow(dead_code)]
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
#[allow(dead_code)]
pub fn certificates(dir: &Path) {
    certificates_for(dir, "127.0.0.1")
}

/// A CA (`ca.crt`), a server certificate for the address `ip` (`server.crt`, `server.key`) and a
/// client certificate (`client.crt`, `client.key`), in `dir`.
#[allow(dead_code)]
pub fn certificates_for(dir: &Path, ip: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=airlift test CA",
        ],
    );
    for (name, ext) in [
        (
            "server",
            &format!(
                "subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE"
            ),
        ),
        (
            "client",
            &"extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE".to_string(),
        ),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.crt"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

/// Asserts that `ctd` lists each image (in `k8s.io`) with its target digest.
#[allow(dead_code)]
pub fn assert_listed(ctd: &Containerd, images: &[(&str, &str)]) {
    let listed = ctd.ctr_output(&["-n", "k8s.io", "images", "ls"]).unwrap();
    for (name, digest) in images {
        let line = listed
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not there:\n{listed}"));
        assert!(line.contains(digest), "{line}");
    }
}

/// A command running `program` through `wrapper` (`ip netns exec NS`), or directly when it is
/// empty.
#[allow(dead_code)]
pub fn wrapped(wrapper: &[String], program: impl AsRef<std::ffi::OsStr>) -> Command {
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// `ctr images pull --all-platforms --hosts-dir DIR NAME` into `k8s.io` (with `--plain-http`
/// when `plain_http`: the registries of the hosts directory speak HTTP).
#[allow(dead_code)]
pub fn ctr_pull(
    ctd: &Containerd,
    hosts_dir: &str,
    name: &str,
    plain_http: bool,
) -> anyhow::Result<String> {
    let mut args = vec!["-n", "k8s.io", "images", "pull"];
    if plain_http {
        args.push("--plain-http");
    }
    args.extend(["--all-platforms", "--hosts-dir", hosts_dir, name]);
    ctd.ctr_output(&args)
}

/// `ctr snapshots ls` of `overlayfs` (a header line, then one line a snapshot).
#[allow(dead_code)]
pub fn snapshot_list(ctd: &Containerd) -> String {
    ctd.ctr_output(&[
        "-n",
        "k8s.io",
        "snapshots",
        "--snapshotter",
        "overlayfs",
        "ls",
    ])
    .unwrap()
}

/// The committed snapshots of `overlayfs`, by key.
#[allow(dead_code)]
pub fn committed(ctd: &Containerd) -> Vec<String> {
    let out = snapshot_list(ctd);
    out.lines()
        .skip(1)
        .filter(|l| l.contains("Committed"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Asserts that `image` carries CRI's pin, naming it and its labels otherwise.
#[allow(dead_code)]
pub fn assert_pinned(image: &ImageRecord) {
    assert_eq!(
        image
            .labels
            .get("io.cri-containerd.pinned")
            .map(String::as_str),
        Some("pinned"),
        "{} not pinned: {:?}",
        image.name,
        sorted(&image.labels)
    );
}
