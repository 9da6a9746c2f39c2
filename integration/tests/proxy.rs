//! End-to-end: airlift as containerd's content store. containerd 2.x and 1.7 run with the
//! built-in content plugin disabled and a `[proxy_plugins.airlift]` entry of type `content`
//! pointing at `airlift serve --content-proxy-root`.

mod common;

use airlift::digest::Digest;
use airlift::store::layout::ContentRoot;
use airlift::store::{direct::DirectStore, stream::StreamStore, ContentStore};
use airlift::testkit::conformance;
use airlift_integration::archives::{one_image, MIB};
use airlift_integration::{fixtures_dir, Containerd, Options, Version};
use common::daemon::Daemon;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// containerd with airlift as its content store.
struct Proxied {
    ctd: Containerd,
    daemon: Daemon,
    root: PathBuf,
}

/// Starts containerd configured with airlift's socket as its content proxy, then airlift.
fn start(version: Version, cri: bool) -> Proxied {
    let (mut daemon, root) = Daemon::content_proxy();
    let ctd = daemon.serve_as_content_proxy(
        version,
        Options {
            cri,
            ..Options::default()
        },
    );
    Proxied { ctd, daemon, root }
}

/// The digests of the blobs in a content root's `blobs/sha256`.
fn blob_files(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("blobs/sha256"))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every blob of the store, read back through containerd (first, so the page cache is as the
/// caller left it), and on disk, hashes to its name; returns how many containerd served.
fn served_blobs_verify(rt: &tokio::runtime::Runtime, p: &Proxied, namespace: &str) -> usize {
    let c = client(rt, &p.ctd, namespace);
    let stream = StreamStore::new(c, rt.handle().clone(), "verify".into());
    let mut served = 0;
    for hex in blob_files(&p.root) {
        let d = Digest::from_hex(&hex).unwrap();
        // Blobs of other namespaces are not served here.
        if let Ok(data) = stream.read(&d) {
            assert_eq!(Digest::of(&data), d, "containerd served a corrupt blob");
            served += 1;
        }
        // containerd's garbage collector may remove unreferenced blobs meanwhile.
        if let Ok(on_disk) = std::fs::read(p.root.join("blobs/sha256").join(&hex)) {
            assert_eq!(Digest::of(&on_disk), d, "corrupt blob on disk");
        }
    }
    served
}

fn ctr_ok(ctd: &Containerd, args: &[&str]) -> String {
    ctd.ctr_output(args)
        .unwrap_or_else(|e| panic!("ctr {args:?}: {e}\n{}", ctd.log_tail(30)))
}

/// `ctr images import` of every fixture containerd can read, `ctr images export` of the result,
/// and `ctr images rm` with garbage collection emptying airlift's store.
fn ctr_through_airlift(version: Version) {
    let p = start(version, version == Version::V2);
    let rt = rt();
    let mut names = Vec::new();
    for f in fixtures() {
        let file = f.file_name().unwrap().to_string_lossy().into_owned();
        // ctr 2.x reads gzip and zstd; ctr 1.7 plain tar only.
        let readable = match version {
            Version::V2 => !file.ends_with(".lz4") && !file.ends_with(".bz2"),
            Version::V17 => file.ends_with(".tar"),
        };
        if !readable {
            continue;
        }
        // containerd needs every manifest of the index with --all-platforms; this fixture has
        // only amd64's.
        let mut args = vec!["-n", "ctr", "images", "import"];
        if !file.starts_with("busybox-amd64-only") {
            args.push("--all-platforms");
        }
        args.push(f.to_str().unwrap());
        ctr_ok(&p.ctd, &args);
        // ctr invents dated names for images an archive names by tag only.
        if base_name(&file).is_none() {
            names.extend(expected(&file).into_iter().map(|(n, _)| n));
        }
    }
    names.sort();
    names.dedup();
    let listed = ctr_ok(&p.ctd, &["-n", "ctr", "images", "ls", "-q"]);
    for n in &names {
        assert!(listed.lines().any(|l| l == n), "{n} missing from {listed}");
    }
    let stored = blob_files(&p.root);
    assert!(stored.len() >= 10, "{stored:?}");
    assert!(served_blobs_verify(&rt, &p, "ctr") >= 10);

    // Export: the archive's blobs are the store's, byte for byte.
    let out = p.daemon.dir.path().join("export.tar");
    let mut args = vec!["-n", "ctr", "images", "export", out.to_str().unwrap()];
    args.extend(names.iter().map(String::as_str));
    ctr_ok(&p.ctd, &args);
    let mut exported = 0;
    let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) else {
            continue;
        };
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        assert_eq!(Digest::of(&data).hex(), hex, "exported blob {path}");
        assert!(stored.iter().any(|s| s == hex), "{hex} not in the store");
        exported += 1;
    }
    assert!(exported >= 5, "{exported} blobs exported");

    // Removing the images and collecting garbage removes the blobs from airlift's directory.
    let all: Vec<String> = ctr_ok(&p.ctd, &["-n", "ctr", "images", "ls", "-q"])
        .lines()
        .map(String::from)
        .collect();
    let mut args = vec!["-n", "ctr", "images", "rm", "--sync"];
    args.extend(all.iter().map(String::as_str));
    ctr_ok(&p.ctd, &args);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !blob_files(&p.root).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        blob_files(&p.root),
        Vec::<String>::new(),
        "garbage collection left blobs in airlift's store\n{}",
        p.ctd.log_tail(30)
    );
}

on_containerd!(ctr_through_airlift {
    ctr_through_airlift_containerd_2: Version::V2;
    ctr_through_airlift_containerd_17: Version::V17;
});

/// The conformance suites against the proxy (directly and behind containerd), then
/// `airlift import` and the daemon in proxy mode: images land pinned, as in direct mode.
fn airlift_in_proxy_mode(version: Version) {
    let p = start(version, version == Version::V2);
    let rt = rt();
    let handle = rt.handle().clone();

    // The proxy itself, over its socket.
    let direct_api = grpc(&rt, &p.daemon.socket(), "conformance");
    rt.block_on(conformance::content_api::run(
        &direct_api,
        "airlift's socket",
    ));
    conformance::run(&StreamStore::new(
        Arc::new(direct_api),
        handle.clone(),
        "conf-proxy".into(),
    ));
    // containerd in front of it, everything under a lease (as in an import).
    let plain = client(&rt, &p.ctd, "conformance");
    rt.block_on(plain.create_lease("conformance", Default::default(), None))
        .unwrap();
    let c = grpc(&rt, p.ctd.address(), "conformance").leased("conformance");
    rt.block_on(conformance::content_api::run(&c, "containerd over airlift"));
    conformance::run(&StreamStore::new(
        Arc::new(c.clone()),
        handle.clone(),
        "conf-s".into(),
    ));
    let direct = DirectStore::open(
        &ContentRoot::new(&p.root),
        Arc::new(c),
        handle,
        "conf-d".into(),
    )
    .unwrap();
    conformance::run(&direct);
    drop(direct);

    // `airlift import` finds airlift's store through containerd's introspection and the
    // daemon's API, and writes there directly. The suites above deleted content: the collection
    // that schedules finishes first, so it cannot sweep a blob between its link and its claim.
    p.ctd.collect_garbage("conformance").unwrap();
    let bundle = fixtures_dir().join("bundle-ctr-export.tar.zst");
    let report = import_ok(
        &p.ctd,
        "k8s.io",
        &["--all-platforms", bundle.to_str().unwrap()],
    );
    assert_eq!(report["mode"], "direct", "{report}");
    assert_eq!(
        image_pairs(&rt, &p.ctd, "k8s.io"),
        expected("bundle-ctr-export.tar.zst")
    );
    for i in images(&rt, &p.ctd, "k8s.io") {
        assert_eq!(
            i.labels.get("io.cri-containerd.pinned").map(String::as_str),
            Some("pinned"),
            "{}",
            i.name
        );
    }

    // The daemon imports a dropped archive the same way.
    std::fs::copy(
        fixtures_dir().join("busybox-docker.tar"),
        p.daemon.images().join("busybox-docker.tar"),
    )
    .unwrap();
    p.daemon.until("the dropped archive imported", || {
        p.daemon
            .archive(&p.daemon.images().join("busybox-docker.tar"))
            .is_some_and(|a| a["state"] == "imported")
    });
    let docker = images(&rt, &p.ctd, "k8s.io")
        .into_iter()
        .find(|i| i.name == "docker.io/library/busybox:1.35")
        .expect("daemon-imported image");
    assert_eq!(
        docker.digest,
        expected_target("busybox-docker.tar", "docker.io/library/busybox:1.35")
    );
    assert_eq!(
        docker
            .labels
            .get("io.cri-containerd.pinned")
            .map(String::as_str),
        Some("pinned")
    );
    assert!(
        !p.daemon.log().contains("streaming it instead"),
        "{}",
        p.daemon.log()
    );
    assert!(served_blobs_verify(&rt, &p, "k8s.io") > 0);
    // Again with the blobs out of the page cache: reads that must wait for the disk are served
    // off the socket's thread, and still whole.
    for hex in blob_files(&p.root) {
        if let Ok(f) = std::fs::File::open(p.root.join("blobs/sha256").join(hex)) {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid descriptor; advice only.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
    assert!(served_blobs_verify(&rt, &p, "k8s.io") > 0);

    if version == Version::V2 {
        let image = cri_listed(&rt, &p.ctd, "docker.io/library/busybox:1.35")
            .expect("CRI lists the imported image");
        assert!(image.pinned, "{image:?}");
        assert!(
            cri_listed(&rt, &p.ctd, "registry.example.com/tools/busybox:latest").is_some(),
            "CRI lists the bundle's images"
        );
    }
}

on_containerd!(airlift_in_proxy_mode {
    airlift_in_proxy_mode_containerd_2: Version::V2;
    airlift_in_proxy_mode_containerd_17: Version::V17;
});

/// airlift killed while containerd writes through it, then restarted: containerd's next
/// attempt succeeds and no corrupt blob is ever served. containerd restarted while airlift
/// runs: nothing to do.
fn restarts(version: Version) {
    let mut p = start(version, false);
    let rt = rt();
    let big = p.daemon.dir.path().join("big.tar");
    one_image(&big, "example.com/big:1", 160 * MIB, 7).unwrap();
    let import = |ctd: &Containerd| {
        let mut cmd = ctd.ctr();
        cmd.args(["-n", "k8s.io", "images", "import", "--no-unpack"])
            .arg(&big);
        cmd
    };
    let child = import(&p.ctd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill airlift once containerd is well into writing the layer.
    let ingest = p.root.join("ingest");
    let deadline = Instant::now() + Duration::from_secs(60);
    let writing = || {
        std::fs::read_dir(&ingest).into_iter().flatten().any(|e| {
            std::fs::metadata(e.unwrap().path().join("data")).is_ok_and(|m| m.len() > 16 << 20)
        })
    };
    while !writing() {
        assert!(
            Instant::now() < deadline,
            "containerd never wrote through airlift"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    p.daemon.kill9();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the import should have failed with airlift gone"
    );
    // Whatever is in blobs/ is whole.
    for hex in blob_files(&p.root) {
        let data = std::fs::read(p.root.join("blobs/sha256").join(&hex)).unwrap();
        assert_eq!(Digest::of(&data).hex(), hex, "corrupt blob after kill -9");
    }

    p.daemon.start();
    p.daemon.wait();
    // containerd redials with a backoff of at most a few seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    while p
        .ctd
        .ctr_output(&["-n", "k8s.io", "content", "ls", "-q"])
        .is_err()
    {
        assert!(Instant::now() < deadline, "containerd never reconnected");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = import(&p.ctd).output().unwrap();
    assert!(
        out.status.success(),
        "the import after airlift's restart failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.ctd.log_tail(30)
    );
    assert!(served_blobs_verify(&rt, &p, "k8s.io") >= 3);

    // containerd restarted under a running airlift: everything keeps working.
    p.ctd.restart().unwrap();
    let listed = ctr_ok(&p.ctd, &["-n", "k8s.io", "images", "ls", "-q"]);
    assert!(listed.contains("example.com/big:1"), "{listed}");
    assert!(served_blobs_verify(&rt, &p, "k8s.io") >= 3);
    let docker = fixtures_dir().join("busybox-docker.tar");
    import_ok(&p.ctd, "k8s.io", &[docker.to_str().unwrap()]);
    let manifest = expected_target("busybox-docker.tar", "docker.io/library/busybox:1.35");
    assert!(image_pairs(&rt, &p.ctd, "k8s.io")
        .iter()
        .any(|(n, d)| n == "docker.io/library/busybox:1.35" && d == &manifest));
}

on_containerd!(restarts {
    restarts_containerd_2: Version::V2;
    restarts_containerd_17: Version::V17;
});

/// As a content proxy, airlift reports readiness once its store is served, before containerd
/// (which starts after it) answers; the startup import is still to come.
#[test]
fn ready_before_containerd() {
    let (mut daemon, root) = Daemon::content_proxy();
    daemon.address = daemon.dir.path().join("containerd-not-yet.sock");
    let notify = daemon.notify_socket();
    daemon.start();
    notify.expect_ready();
    // The store answers; the startup import waits for containerd.
    let rt = rt();
    let c = grpc(&rt, &daemon.socket(), "k8s.io");
    let absent = Digest::of(b"absent");
    assert_eq!(rt.block_on(c.info(&absent)).unwrap().map(|i| i.size), None);
    assert!(root.join("blobs/sha256").is_dir());
    let out = daemon.cli(&["wait", "--timeout", "1"]);
    assert!(
        !out.status.success(),
        "startup cannot be done without containerd"
    );
}

/// The proxy plugin's table as `config/containerd-content-proxy.toml` has it, with
/// `exports = { root = … }`: containerd's introspection lists the plugin under its key with
/// airlift's store as its `root` (where Spegel and other readers of the content directory look),
/// and airlift's own imports, finding the store there, write into it directly.
fn exports_root(version: Version) {
    let (mut daemon, root) = Daemon::content_proxy();
    let ctd = Containerd::start_with(
        version,
        Options {
            cri: false,
            content_proxy: Some(daemon.socket()),
            content_proxy_root: Some(root.clone()),
            ..Options::default()
        },
    )
    .unwrap();
    daemon.address = ctd.address().to_path_buf();
    daemon.start();
    daemon.wait();
    let listed = ctr_ok(&ctd, &["plugins", "ls", "--detailed", "id==airlift"]);
    assert!(
        listed.contains("io.containerd.content.v1")
            && listed.contains(&format!("{}", root.display())),
        "the proxy plugin's exports:\n{listed}"
    );
    let rt = rt();
    assert_eq!(
        rt.block_on(client(&rt, &ctd, "k8s.io").content_root())
            .unwrap(),
        Some(root.clone()),
        "containerd's introspection of its content plugin"
    );
    let bundle = fixtures_dir().join("bundle-ctr-export.tar");
    let report = import_ok(
        &ctd,
        "k8s.io",
        &["--all-platforms", bundle.to_str().unwrap()],
    );
    assert_eq!(report["mode"], "direct", "{report}");
    for (name, digest) in expected("bundle-ctr-export.tar") {
        let hex = digest.strip_prefix("sha256:").unwrap();
        assert!(
            root.join("blobs/sha256").join(hex).is_file(),
            "{name}: {digest} is not in airlift's store {}",
            root.display()
        );
    }
}

on_containerd!(exports_root {
    proxy_plugin_exports_its_root_containerd_2: Version::V2;
    proxy_plugin_exports_its_root_containerd_17: Version::V17;
});

/// A proxy plugin cannot take the ID `content` (what newer Spegel looks up when it is not told
/// the content directory): the built-in content plugin is registered under it whether or not it
/// is disabled, and containerd refuses the second registration at startup.
fn proxy_named_content_is_refused(version: Version) {
    let (daemon, root) = Daemon::content_proxy();
    let started = Containerd::start_with(
        version,
        Options {
            cri: false,
            extra_config: format!(
                "[proxy_plugins.content]\n  type = \"content\"\n  address = {:?}\n  exports = {{ root = {:?} }}\n",
                daemon.socket(),
                root
            ),
            ..Options::default()
        },
    );
    let err = format!(
        "{:#}",
        started.expect_err("containerd started with a proxy named content")
    );
    assert!(
        err.contains("io.containerd.content.v1.content: plugin: id already registered"),
        "{err}"
    );
}

on_containerd!(proxy_named_content_is_refused {
    a_proxy_plugin_named_content_is_refused_containerd_2: Version::V2;
    a_proxy_plugin_named_content_is_refused_containerd_17: Version::V17;
});
