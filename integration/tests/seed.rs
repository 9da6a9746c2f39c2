//! End-to-end: a seed node of a mixed-architecture cluster on real containerd 2.x and 1.7.
//! `airlift serve` with `serve_platforms` (the other architecture than the machine's) and
//! `unpack = "overlayfs"` imports the multi-arch bundle: the served platform's manifest, config
//! and layers are in containerd's content store, labelled with their distribution source and
//! held by the archive's lease, the image record is the archive's index and pinned, only the
//! machine's platform is unpacked (`ctr snapshots`), an image of the served platform alone is
//! pinned but never ready for `airlift wait --image` (CRI lists it all the same when it is one
//! manifest, not when it is an index), `airlift verify --serve-platform` passes (and names a
//! served manifest an archive lacks), another containerd pulls the served platform through the
//! daemon's registry endpoint (`ctr images pull --platform`, and `skopeo copy
//! --override-arch`), and the served content leaves the lease when the archive goes or is no
//! longer served, and is collected once the images go.

mod common;

use airlift_integration::{fixtures_dir, Containerd, Version};
use common::daemon::Daemon;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

const BUSYBOX: &str = "docker.io/library/busybox:1.35";
const INDEX: &str = "sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd";
/// The bundle's arm64-only image (a Docker manifest, `sha256:5142…`).
const ARM64_ONLY: &str = "registry.example.com/tools/busybox:1.35-arm64";
/// An index of the served platform alone, made from the multi-arch fixture.
const ONLY: &str = "example.com/seed/only:1";

/// The architecture of this machine (as OCI names it) and the other one of the bundle, which
/// the seed serves; `None` on a machine that is neither amd64 nor arm64.
fn architectures() -> Option<(&'static str, &'static str)> {
    match std::env::consts::ARCH {
        "x86_64" => Some(("amd64", "arm64")),
        "aarch64" => Some(("arm64", "amd64")),
        _ => None,
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The manifest of `arch` the index lists, read from containerd: (manifest, config, layers).
fn platform_content(
    rt: &tokio::runtime::Runtime,
    ctd: &Containerd,
    arch: &str,
) -> (String, String, Vec<String>) {
    let c = client(rt, ctd, "k8s.io");
    let read = |d: &str| rt.block_on(c.read(&d.parse().unwrap(), 0, 0)).unwrap();
    let index: airlift::oci::Index = serde_json::from_slice(&read(INDEX)).unwrap();
    let entry = index
        .manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| p.architecture == arch))
        .unwrap_or_else(|| panic!("the index lists no {arch} manifest"));
    let manifest: airlift::oci::Manifest =
        serde_json::from_slice(&read(&entry.digest.to_string())).unwrap();
    (
        entry.digest.to_string(),
        manifest.config.digest.to_string(),
        manifest
            .layers
            .iter()
            .map(|l| l.digest.to_string())
            .collect(),
    )
}

fn airlift(args: &[&str]) -> std::process::Output {
    Command::new(airlift_bin()).args(args).output().unwrap()
}

fn a_seed_stores_and_serves_a_platform_it_does_not_run(version: Version) {
    let Some((runs, serves)) = architectures() else {
        println!("skipped: this machine is neither amd64 nor arm64");
        return;
    };
    let ctd = Containerd::start(version).unwrap();
    let rt = rt();
    let addr = free_port();
    let mut d = Daemon::new(
        &ctd,
        &format!(
            "serve_platforms = [\"linux/{serves}\"]\nunpack = \"overlayfs\"\n[registry]\naddress = \"{addr}\"\n"
        ),
    );
    let archive = d.images().join("bundle.tar");
    std::fs::copy(fixtures_dir().join("bundle-ctr-export.tar"), &archive).unwrap();
    let archive = archive.canonicalize().unwrap();
    d.env
        .push(("AIRLIFT_LOG".into(), "info,airlift::registry=debug".into()));
    d.start();
    d.wait();
    let c = client(&rt, &ctd, "k8s.io");

    // The image record is the archive's index, pinned.
    let image = rt.block_on(c.get_image(BUSYBOX)).unwrap().unwrap();
    assert_eq!(image.digest, INDEX);
    assert_pinned(&image);

    // The served platform's manifest, config and layers: in the content store, labelled with
    // their distribution source (Spegel advertises nothing without it), held by the lease.
    let (manifest, config, layers) = platform_content(&rt, &ctd, serves);
    let lease = airlift::labels::archive_lease(&archive);
    let leased = rt.block_on(c.lease_content(&lease)).unwrap();
    for d_ in std::iter::once(&manifest).chain([&config]).chain(&layers) {
        let info = blob(&rt, &ctd, "k8s.io", d_)
            .unwrap_or_else(|| panic!("{serves} blob {d_} is not in containerd's content store"));
        assert_eq!(
            info.labels
                .get("containerd.io/distribution.source.docker.io")
                .map(String::as_str),
            Some("library/busybox"),
            "{serves} blob {d_}: {:?}",
            info.labels
        );
        assert!(
            leased.contains(d_),
            "{serves} blob {d_} is not in lease {lease}"
        );
    }

    // Only the machine's platform is unpacked: one chain, busybox's of this architecture; the
    // served platform's config names no snapshot.
    let chains = committed(&ctd);
    assert_eq!(chains.len(), 1, "{chains:?}\n{}", d.log());
    let (_, run_config, _) = platform_content(&rt, &ctd, runs);
    let snapshot_label = "containerd.io/gc.ref.snapshot.overlayfs";
    assert!(blob(&rt, &ctd, "k8s.io", &run_config)
        .unwrap()
        .labels
        .contains_key(snapshot_label));
    assert!(!blob(&rt, &ctd, "k8s.io", &config)
        .unwrap()
        .labels
        .contains_key(snapshot_label));

    // The served-only image: recorded and pinned, listed as served only, never ready here.
    let entry = d.archive(&archive).unwrap();
    let served_only: Vec<&str> = entry["served_only"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    if serves == "arm64" {
        assert!(served_only.contains(&ARM64_ONLY), "{entry}");
        let image = rt.block_on(c.get_image(ARM64_ONLY)).unwrap().unwrap();
        assert_pinned(&image);
        let out = d.cli(&["wait", "--image", ARM64_ONLY, "--timeout", "1"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("only to serve other platforms"), "{err}");
        // CRI lists both: containerd checks the platform of an index's manifests, never that
        // of an image whose target is one manifest (what README says `crictl images` shows).
        assert!(cri_listed(&rt, &ctd, BUSYBOX).is_some());
        assert!(cri_listed(&rt, &ctd, ARM64_ONLY).is_some());
    }
    let out = d.cli(&["wait", "--image", BUSYBOX, "--timeout", "10"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // airlift verify, asked for the served platform, finds everything.
    let address = ctd.address().to_str().unwrap();
    let platform = format!("linux/{serves}");
    let out = airlift(&["verify", "-a", address, "--serve-platform", &platform]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if serves == "arm64" {
        assert!(text.contains(&format!("served   {ARM64_ONLY}")), "{text}");
    }

    // An index whose served manifest is absent (exported for one platform): what a node of the
    // served platform cannot pull from here is named.
    let partial = fixtures_dir().join("busybox-amd64-only-ctr-export.tar");
    import_ok(
        &ctd,
        "seed-partial",
        &["--platform", "linux/amd64", partial.to_str().unwrap()],
    );
    let out = airlift(&[
        "verify",
        "-a",
        address,
        "-n",
        "seed-partial",
        "--serve-platform",
        "linux/arm64",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("MISSING") && text.contains("linux/arm64"),
        "{text}"
    );

    an_index_of_served_platforms_alone(&d, &ctd, serves);
    pulls_through_the_endpoint(&d, addr, serves, &manifest, &layers);

    // Removing the archive: the lease goes, and with the images gone garbage collection takes
    // the served content.
    std::fs::remove_file(&archive).unwrap();
    d.until("the archive's lease deleted", || {
        d.archive(&archive).is_none() && !rt.block_on(c.list_leases("")).unwrap().contains(&lease)
    });
    for name in images(&rt, &ctd, "k8s.io").iter().map(|i| i.name.clone()) {
        ctd.ctr_output(&["-n", "k8s.io", "images", "rm", "--sync", &name])
            .unwrap();
    }
    for d_ in std::iter::once(&manifest).chain(&layers) {
        assert!(
            blob(&rt, &ctd, "k8s.io", d_).is_none(),
            "{serves} blob {d_} outlived its archive and images"
        );
    }

    // The archive back, then a restart serving nothing: imported again, and the served content
    // leaves the lease (the image stays pinned, its own platform unpacked).
    std::fs::copy(fixtures_dir().join("bundle-ctr-export.tar"), &archive).unwrap();
    let held = |digest: &str| {
        rt.block_on(c.lease_content(&lease))
            .unwrap_or_default()
            .iter()
            .any(|x| x == digest)
    };
    d.until("the archive imported again, its served layer held", || {
        held(&layers[0])
            && d.archive(&archive)
                .is_some_and(|a| a["state"] == "imported")
    });
    d.stop();
    d.config = "unpack = \"overlayfs\"\n".into();
    d.start();
    d.wait();
    assert!(
        d.log().contains("importing the archive again"),
        "{}",
        d.log()
    );
    assert!(held(&run_layer(&rt, &ctd, runs)), "{}", d.log());
    assert!(!held(&layers[0]) && !held(&manifest), "{}", d.log());
    let image = rt.block_on(c.get_image(BUSYBOX)).unwrap().unwrap();
    assert_eq!(image.digest, INDEX);
    assert_pinned(&image);
    assert_eq!(committed(&ctd).len(), 1);
    // The index still refers to the content no longer served (airlift only adds references,
    // as containerd does): once the image goes, garbage collection takes it.
    std::fs::remove_file(&archive).unwrap();
    d.until("the archive's lease deleted again", || {
        !rt.block_on(c.list_leases("")).unwrap().contains(&lease)
    });
    ctd.ctr_output(&["-n", "k8s.io", "images", "rm", BUSYBOX])
        .unwrap();
    collect_garbage(&ctd);
    assert!(blob(&rt, &ctd, "k8s.io", &layers[0]).is_none());
    assert!(blob(&rt, &ctd, "k8s.io", &manifest).is_none());
}

/// The first layer of the index's manifest of `arch`.
fn run_layer(rt: &tokio::runtime::Runtime, ctd: &Containerd, arch: &str) -> String {
    platform_content(rt, ctd, arch).2.remove(0)
}

/// A garbage collection now: a lease created and removed with `--sync`.
fn collect_garbage(ctd: &Containerd) {
    let id = format!("seed-gc-{}", std::process::id());
    ctd.ctr_output(&["-n", "k8s.io", "leases", "create", "--id", &id])
        .unwrap();
    ctd.ctr_output(&["-n", "k8s.io", "leases", "rm", "--sync", &id])
        .unwrap();
}

on_containerd!(a_seed_stores_and_serves_a_platform_it_does_not_run {
    seed_on_containerd_2: Version::V2;
    seed_on_containerd_17: Version::V17;
});

/// Another containerd pulls the served platform through the endpoint (a `hosts.toml` mirror for
/// docker.io pointing at it), and skopeo copies it: the blobs come from this node.
fn pulls_through_the_endpoint(
    d: &Daemon,
    addr: SocketAddr,
    serves: &str,
    manifest: &str,
    layers: &[String],
) {
    let peer = Containerd::start(Version::V2).unwrap();
    let hosts = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hosts.path().join("docker.io")).unwrap();
    std::fs::write(
        hosts.path().join("docker.io/hosts.toml"),
        format!("[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    )
    .unwrap();
    let platform = format!("linux/{serves}");
    peer.ctr_output(&[
        "-n",
        "k8s.io",
        "images",
        "pull",
        "--plain-http",
        "--platform",
        &platform,
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        BUSYBOX,
    ])
    .unwrap_or_else(|e| {
        panic!(
            "the peer's pull of {platform}: {e}\ndaemon log:\n{}",
            d.log()
        )
    });
    let rt = rt();
    for d_ in std::iter::once(manifest).chain(layers.iter().map(String::as_str)) {
        assert!(
            blob(&rt, &peer, "k8s.io", d_).is_some(),
            "the peer lacks {platform} blob {d_}"
        );
        assert!(
            d.log().contains(d_),
            "blob {d_} was not asked of the endpoint"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("skopeo")
        .env("HOME", std::env::temp_dir())
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .args(["--override-arch", serves])
        .arg(format!("docker://{addr}/library/busybox:1.35"))
        .arg(format!("dir:{}", dir.path().display()))
        .output();
    match out {
        Err(e) => println!("skopeo not run ({e}): the ctr pull above stands for it"),
        Ok(out) => {
            assert!(
                out.status.success(),
                "skopeo copy --override-arch {serves}: {}\ndaemon log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                d.log()
            );
            let copied = std::fs::read(dir.path().join("manifest.json")).unwrap();
            assert_eq!(airlift::digest::Digest::of(&copied).to_string(), manifest);
            let hex = layers[0].trim_start_matches("sha256:");
            assert!(Path::new(&dir.path().join(hex)).exists());
        }
    }
}

/// The multi-arch fixture rewritten so that its index lists the `arch` manifest alone, named
/// [`ONLY`].
fn index_of(arch: &str, path: &Path) {
    let mut entries = fixture_entries("busybox-multiarch-oci.tar");
    let blob = |entries: &[airlift_integration::archives::Entry], digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        entries
            .iter()
            .find(|e| e.path.ends_with(hex))
            .unwrap_or_else(|| panic!("the fixture has no blob {digest}"))
            .clone()
    };
    let mut index: serde_json::Value = serde_json::from_slice(&blob(&entries, INDEX).data).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["platform"]["architecture"] == arch);
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = airlift::digest::Digest::of(&bytes);
    let mut entry = blob(&entries, INDEX);
    entry.path = format!("blobs/sha256/{}", digest.hex());
    entry.header.set_path(&entry.path).unwrap();
    entry.data = bytes.clone();
    entries.push(entry);
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": digest.to_string(),
        "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": ONLY},
    }]});
    let index_json = entries.iter_mut().find(|e| e.path == "index.json").unwrap();
    index_json.data = serde_json::to_vec(&top).unwrap();
    airlift_integration::archives::write_entries(path, &entries).unwrap();
}

/// An index of the served platform alone: recorded and pinned, listed as served only, never
/// ready; CRI does not list it (it finds no manifest of this machine's platform in it).
fn an_index_of_served_platforms_alone(d: &Daemon, ctd: &Containerd, serves: &str) {
    let path = d.images().join("only.tar");
    let tmp = d.images().join(".only.tar.tmp");
    index_of(serves, &tmp);
    std::fs::rename(&tmp, &path).unwrap();
    let path = path.canonicalize().unwrap();
    d.until("the index of the served platform imported", || {
        d.archive(&path).is_some_and(|a| a["state"] == "imported")
    });
    let entry = d.archive(&path).unwrap();
    assert_eq!(entry["served_only"], serde_json::json!([ONLY]), "{entry}");
    let rt = rt();
    let image = rt
        .block_on(client(&rt, ctd, "k8s.io").get_image(ONLY))
        .unwrap()
        .unwrap();
    assert_pinned(&image);
    let out = d.cli(&["wait", "--image", ONLY, "--timeout", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("only to serve"),
        "{err}"
    );
    assert!(cri_listed(&rt, ctd, BUSYBOX).is_some());
    assert!(
        cri_listed(&rt, ctd, ONLY).is_none(),
        "CRI lists an index with no manifest of this machine's platform"
    );
    std::fs::remove_file(&path).unwrap();
    let lease = airlift::labels::archive_lease(&path);
    d.until("the index's archive released", || {
        !rt.block_on(client(&rt, ctd, "k8s.io").list_leases(""))
            .unwrap()
            .contains(&lease)
    });
}
