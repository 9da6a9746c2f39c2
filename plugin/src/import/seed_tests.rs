//! Serving platforms the node does not run (`serve_platforms`), on the containerd fake with the
//! real multi-arch fixtures: the served platform's manifest, config and layers stored, claimed,
//! labelled and held by the archive's lease, the image record unchanged, only the run platform
//! unpacked, images of served platforms alone told apart, and what is no longer served let go.

use super::*;
use crate::digest::Digest;
use crate::platform::{Platform, PlatformPolicy};
use crate::store::layout::ContentRoot;
use crate::testing::fixture;
use crate::testkit::fake::Fake;
use std::sync::atomic::AtomicU64;

const BUSYBOX: &str = "docker.io/library/busybox:1.35";
/// The multi-arch index of busybox 1.35 (linux/amd64 and linux/arm64/v8) in the fixtures.
const INDEX: &str = "sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd";
/// The arm64-only image of `bundle-ctr-export.tar`.
const ARM64_ONLY: &str = "registry.example.com/tools/busybox:1.35-arm64";
const SN: &str = "overlayfs";

/// Runs amd64 (whatever the machine), serves `serve`, unpacks into overlayfs.
fn options(serve: &[&str]) -> ImportOptions {
    ImportOptions {
        plan: PlanOptions {
            platforms: PlatformPolicy::Only(vec![Platform::new("linux", "amd64", "")]),
            serve: PlatformPolicy::parse_served(serve).unwrap(),
            ..PlanOptions::default()
        },
        unpack: Some(SN.into()),
        ..ImportOptions::default()
    }
}

fn import_path(fake: &Fake, path: &Path, opts: &ImportOptions) -> Report {
    import_placed(fake, &Placement::Remote("test".into()), path, opts)
}

fn import_placed(fake: &Fake, placement: &Placement, path: &Path, opts: &ImportOptions) -> Report {
    crate::testing::runtime()
        .block_on(run(
            &fake.client(),
            placement,
            &Source::File(path.to_path_buf()),
            opts,
            Arc::new(AtomicU64::new(0)),
            &Alone,
        ))
        .unwrap_or_else(|e| panic!("importing {}: {e}", path.display()))
}

/// A fresh fake with the fixture `name` imported into it, serving `serve`.
fn imported(name: &str, serve: &[&str]) -> (Fake, Report) {
    let fake = Fake::new();
    let r = import_path(&fake, &fixture(name), &options(serve));
    (fake, r)
}

/// The manifest of `platform` (`amd64`, `arm64`) an index of the fake lists, with its config and
/// layers: (manifest, config, layers).
fn platform_content(fake: &Fake, index: &str, arch: &str) -> (Digest, Digest, Vec<Digest>) {
    let s = fake.state();
    let index: Digest = index.parse().unwrap();
    let blob = |d: &Digest| {
        let b = s
            .blobs
            .get(d)
            .unwrap_or_else(|| panic!("the fake has no blob {d}"));
        b.data.clone()
    };
    let index: crate::oci::Index = serde_json::from_slice(&blob(&index)).unwrap();
    let entry = index
        .manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| p.architecture == arch))
        .unwrap_or_else(|| panic!("the index lists no {arch} manifest"));
    let digest = entry.digest.clone();
    let (config, layers) = match s.blobs.get(&digest) {
        Some(b) => {
            let m: crate::oci::Manifest = serde_json::from_slice(&b.data).unwrap();
            (
                m.config.digest,
                m.layers.into_iter().map(|l| l.digest).collect(),
            )
        }
        None => (Digest::of(b""), Vec::new()),
    };
    (digest, config, layers)
}

/// The blobs the archive's lease holds.
fn leased(fake: &Fake, report: &Report) -> BTreeSet<String> {
    let lease = report.lease.as_ref().expect("the archive has a lease");
    fake.state().leases[lease].content.clone()
}

#[test]
fn a_served_platform_is_stored_held_and_labelled_but_not_unpacked() {
    // Direct mode, with the garbage collector before every call: nothing is left unprotected.
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new().with_content_root(dir.path());
    fake.state().gc_before_every_call = true;
    let placement = Placement::Local(ContentRoot::new(dir.path()));
    let r = import_placed(
        &fake,
        &placement,
        &fixture("busybox-multiarch-oci.tar"),
        &options(&["linux/arm64"]),
    );
    assert!(r.ok(), "{:?}", r.failed);
    assert_eq!(r.mode, Some(crate::store::StoreKind::Direct));
    fake.state().gc_before_every_call = false;
    let claimed: BTreeSet<String> = fake.subjects("claim").into_iter().collect();
    // The image record is the archive's index, as without serving.
    let image = fake.image(BUSYBOX).expect("the image is recorded");
    assert_eq!(image.digest, INDEX);
    assert_eq!(
        image
            .labels
            .get(crate::labels::CRI_PINNED)
            .map(String::as_str),
        Some("pinned")
    );
    assert!(
        r.served_only.is_empty(),
        "it has the node's platform: {:?}",
        r.served_only
    );
    // The arm64 manifest, config and layer: stored, claimed, labelled, in the lease, and
    // referred to by the index (so the image keeps them too).
    let (manifest, config, layers) = platform_content(&fake, INDEX, "arm64");
    assert_eq!(layers.len(), 1);
    let lease = leased(&fake, &r);
    let index_labels = fake.state().blobs[&INDEX.parse::<Digest>().unwrap()]
        .labels
        .clone();
    assert!(
        index_labels.values().any(|v| *v == manifest.to_string()),
        "the index's GC labels name the arm64 manifest: {index_labels:?}"
    );
    for d in std::iter::once(&manifest).chain([&config]).chain(&layers) {
        let s = fake.state();
        let blob = s
            .blobs
            .get(d)
            .unwrap_or_else(|| panic!("arm64 blob {d} is not in the content store"));
        assert_eq!(
            blob.labels
                .get("containerd.io/distribution.source.docker.io")
                .map(String::as_str),
            Some("library/busybox"),
            "arm64 blob {d} lacks its distribution source"
        );
        assert!(
            lease.contains(&d.to_string()),
            "arm64 blob {d} is not leased"
        );
        assert!(
            claimed.contains(&d.to_string()),
            "arm64 blob {d} was not claimed"
        );
        assert!(
            r.blobs.contains(&d.to_string()),
            "arm64 blob {d} not reported"
        );
    }
    // Garbage collection keeps them.
    fake.collect_garbage();
    assert!(fake.state().blobs.contains_key(&layers[0]));
    // Only amd64 is unpacked: one chain, applied from the amd64 layer alone.
    let (_, amd64_config, amd64_layers) = platform_content(&fake, INDEX, "amd64");
    let u = r.unpack.expect("unpacking was asked for");
    assert!(u.ok(), "{:?}", u.errors);
    assert_eq!(u.images, [BUSYBOX]);
    assert_eq!(fake.committed(SN).len(), 1);
    let applied = fake.subjects("apply_diff");
    assert_eq!(applied, [amd64_layers[0].to_string()]);
    let s = fake.state();
    let snapshot_label = crate::unpack::gc_label(SN);
    assert!(s.blobs[&amd64_config].labels.contains_key(&snapshot_label));
    assert!(!s.blobs[&config].labels.contains_key(&snapshot_label));
}

#[test]
fn without_serving_the_other_platform_is_left_out() {
    let (fake, r) = imported("busybox-multiarch-oci.tar", &[]);
    let (manifest, _, _) = platform_content(&fake, INDEX, "arm64");
    assert!(!fake.state().blobs.contains_key(&manifest));
    assert!(!leased(&fake, &r).contains(&manifest.to_string()));
    assert_eq!(fake.image(BUSYBOX).unwrap().digest, INDEX);
}

#[test]
fn an_image_of_served_platforms_alone_is_recorded_but_told_apart() {
    let (fake, r) = imported("bundle-ctr-export.tar", &["linux/arm64"]);
    assert!(r.ok(), "{:?}", r.failed);
    let names: Vec<&str> = r.images.iter().map(|i| i.name.as_str()).collect();
    assert!(names.contains(&ARM64_ONLY), "{names:?}");
    assert!(
        r.served_only.iter().any(|n| n == ARM64_ONLY),
        "{:?}",
        r.served_only
    );
    assert!(
        !r.served_only.iter().any(|n| n == BUSYBOX),
        "{:?}",
        r.served_only
    );
    let image = fake.image(ARM64_ONLY).unwrap();
    assert_eq!(
        image
            .labels
            .get(crate::labels::CRI_PINNED)
            .map(String::as_str),
        Some("pinned")
    );
    // Its content is held, and none of it unpacked.
    let target: Digest = image.digest.parse().unwrap();
    assert!(leased(&fake, &r).contains(&target.to_string()));
    let u = r.unpack.unwrap();
    assert!(!u.images.iter().any(|n| n == ARM64_ONLY), "{:?}", u.images);
    assert!(u.ok(), "{:?}", u.errors);
    // Not serving arm64, the same archive leaves it out, as a platform not selected.
    let (fake, r) = imported("bundle-ctr-export.tar", &[]);
    assert!(fake.image(ARM64_ONLY).is_none());
    assert!(
        r.skipped.iter().any(|s| s.contains(ARM64_ONLY)),
        "{:?}",
        r.skipped
    );
}

#[test]
fn a_served_platform_the_archive_lacks_is_reported_not_failed() {
    let (fake, r) = imported(
        "busybox-amd64-only-ctr-export.tar",
        &["linux/arm64", "linux/s390x"],
    );
    assert!(r.ok(), "{:?}", r.failed);
    assert_eq!(fake.image(BUSYBOX).unwrap().digest, INDEX);
    assert_eq!(
        r.unserved,
        [format!("{BUSYBOX}: linux/arm64, linux/s390x")],
        "{:?}",
        r.unserved
    );
}

#[test]
fn serving_no_longer_lets_go_of_what_was_served() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busybox.tar");
    std::fs::copy(fixture("busybox-multiarch-oci.tar"), &path).unwrap();
    let served = import_path(&fake, &path, &options(&["linux/arm64"]));
    let (manifest, config, layers) = platform_content(&fake, INDEX, "arm64");
    assert!(leased(&fake, &served).contains(&layers[0].to_string()));
    let again = import_path(&fake, &path, &options(&[]));
    assert_eq!(again.lease, served.lease);
    let lease = leased(&fake, &again);
    for d in [&manifest, &config, &layers[0]] {
        assert!(!lease.contains(&d.to_string()), "{d} is still leased");
    }
    // The index still refers to it (references are only added, as containerd adds them, for
    // what another importer keeps): garbage collection takes it once the image goes.
    assert_eq!(fake.image(BUSYBOX).unwrap().digest, INDEX);
    fake.collect_garbage();
    assert!(fake.state().blobs.contains_key(&manifest));
}

#[test]
fn a_platform_run_and_served_is_run() {
    let (fake, r) = imported("bundle-ctr-export.tar", &["linux/amd64", "linux/arm64"]);
    assert!(
        r.served_only.iter().all(|n| n != BUSYBOX),
        "{:?}",
        r.served_only
    );
    assert_eq!(r.unpack.unwrap().images.len(), 1);
    assert_eq!(fake.committed(SN).len(), 1);
}

#[test]
fn a_docker_save_image_of_a_served_platform_is_served_only_and_never_applied() {
    let (fake, r) = imported("busybox-arm64-multitag-docker.tar", &["linux/arm64"]);
    assert!(r.ok(), "{:?}", r.failed);
    assert_eq!(r.images.len(), 3, "{:?}", r.images);
    assert_eq!(r.served_only.len(), 3, "{:?}", r.served_only);
    for i in &r.images {
        assert!(fake.image(&i.name).is_some(), "{} not recorded", i.name);
    }
    assert_eq!(fake.count("apply_diff"), 0);
    assert!(fake.committed(SN).is_empty());
}
