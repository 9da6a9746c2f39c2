//! The archive side against every real fixture, in every compression, with an in-memory store
//! (no containerd needed):
//! names and targets must equal what containerd's own importer produces, as the golden table
//! `integration/fixtures/expected.tsv` records it (the end-to-end tests read the same table, and
//! check it against live containerd).

use airlift::archive::understand::{plan, Plan, PlanOptions, Problem};
use airlift::ingest::{ingest, Counters};
use airlift::platform::{Platform, PlatformPolicy};
use airlift::store::ContentStore;
use airlift::testkit::memory::MemoryStore;
use airlift_integration::{fixtures_dir, golden};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// Every fixture archive's file name, sorted.
fn fixture_files() -> Vec<String> {
    golden::fixtures()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The target digest the golden table gives image `name` of fixture `stem`.
fn target(stem: &str, name: &str) -> String {
    golden::expected_target(stem, name)
}

fn run(name: &str, opts: &PlanOptions) -> (Plan, MemoryStore) {
    let store = MemoryStore::default();
    let file = std::fs::File::open(fixture(name)).unwrap();
    let inv = ingest(
        file,
        &store,
        &std::env::temp_dir(),
        &mut Counters::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let plan = plan(&inv, opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    // Synthesised manifests are stored by the import; do it here so every blob can be checked.
    let deferred = inv.deferred.iter().map(|d| (d, &inv.json[d]));
    for (d, bytes) in plan.synthesized.iter().chain(deferred) {
        store
            .put(&mut &bytes[..], bytes.len() as u64, Some(d))
            .unwrap();
    }
    (plan, store)
}

fn all() -> PlanOptions {
    PlanOptions {
        platforms: PlatformPolicy::All,
        ..PlanOptions::default()
    }
}

fn images(plan: &Plan) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = plan
        .images
        .iter()
        .map(|i| (i.name.clone(), i.target.digest.to_string()))
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// `(name, target digest, target media type)` of the images of a plan, sorted.
fn images_typed(plan: &Plan) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = plan
        .images
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                i.target.digest.to_string(),
                i.target.media_type.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The golden rows as [`images_typed`] gives a plan's images.
fn typed(rows: &[golden::Expected]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|r| (r.name.clone(), r.digest.clone(), r.media_type.clone()))
        .collect()
}

#[test]
fn every_fixture_in_every_compression_matches_containerd() {
    let files: Vec<String> = fixture_files()
        .into_iter()
        .filter(|f| golden::golden_for(f)[0].base_name.is_none())
        .collect();
    assert!(files.len() >= 10, "{files:?}");
    for name in &files {
        let want = golden::golden_for(name);
        let (plan, store) = run(name, &all());
        assert_eq!(images_typed(&plan), typed(&want), "{name}");
        assert!(
            plan.problems
                .iter()
                .all(|p| !matches!(p, Problem::Failed { .. })),
            "{name}: {:?}",
            plan.problems
        );
        // Every blob an image needs is in the store, and hashes right.
        for image in &plan.images {
            for d in &image.blobs {
                let bytes = store.read(d).unwrap_or_else(|e| panic!("{name}: {d}: {e}"));
                assert_eq!(&airlift::digest::Digest::of(&bytes), d, "{name}");
            }
        }
    }
}

#[test]
fn tag_only_names_need_a_base_name() {
    let files: Vec<String> = fixture_files()
        .into_iter()
        .filter(|f| golden::golden_for(f)[0].base_name.is_some())
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    for name in &files {
        let want = golden::golden_for(name);
        let (plan, _) = run(name, &all());
        assert!(plan.images.is_empty(), "{name}: {:?}", plan.images);
        assert!(
            matches!(&plan.problems[..], [Problem::Skipped { reason, informational: false, .. }] if reason.contains("--base-name")),
            "{name}: {:?}",
            plan.problems
        );
        let opts = PlanOptions {
            base_name: want[0].base_name.clone(),
            ..all()
        };
        let (plan, _) = run(name, &opts);
        assert_eq!(images_typed(&plan), typed(&want), "{name}");
    }
}

#[test]
fn host_default_skips_other_architectures() {
    let host = Platform::host();
    let (plan, _) = run("busybox-arm64-multitag-docker.tar", &PlanOptions::default());
    if host.architecture == "arm64" {
        assert_eq!(plan.images.len(), 3);
    } else {
        assert!(plan.images.is_empty());
        assert!(
            plan.problems.iter().all(|p| matches!(
                p,
                Problem::Skipped {
                    informational: true,
                    ..
                }
            )),
            "{:?}",
            plan.problems
        );
    }
    // The multi-arch index is imported under the host default, labelled for the host's manifest only.
    let (plan, _) = run("busybox-multiarch-oci.tar", &PlanOptions::default());
    let index = target("busybox-multiarch-oci", "docker.io/library/busybox:1.35");
    assert_eq!(
        images(&plan),
        pairs(&[("docker.io/library/busybox:1.35", &index)])
    );
    let index_labels = &plan.labels[&index.parse().unwrap()];
    assert_eq!(
        index_labels
            .keys()
            .filter(|k| k.starts_with("containerd.io/gc.ref.content.m."))
            .count(),
        1
    );
    assert_eq!(
        plan.images[0].blobs.len(),
        4,
        "index, manifest, config, layer"
    );
}

#[test]
fn explicit_platform_selects() {
    let opts = PlanOptions {
        platforms: PlatformPolicy::Only(vec![Platform::parse("linux/arm64/v8").unwrap()]),
        ..PlanOptions::default()
    };
    let (plan, _) = run("busybox-multiarch-oci.tar", &opts);
    let blobs = &plan.images[0].blobs;
    assert!(blobs.contains(
        &"sha256:a49e55263e08f9f2102d84f6d88aecfd4da77a17b8382438e2a9ebc88ce4876b"
            .parse()
            .unwrap()
    ));
    assert!(!blobs.contains(
        &"sha256:e9b6f6016ae73f57bba8637ec8268512a0b29a978df796cbbdeeaf7b98517d43"
            .parse()
            .unwrap()
    ));
    // The amd64-only export under arm64: nothing of that platform is there: skipped, not failed.
    let (plan, _) = run("busybox-amd64-only-ctr-export.tar", &opts);
    assert!(plan.images.is_empty());
    assert!(
        matches!(&plan.problems[..], [Problem::Skipped { .. }]),
        "{:?}",
        plan.problems
    );
}

#[test]
fn docker_save_labels_and_digest_refs() {
    let opts = PlanOptions {
        digest_refs: true,
        index_name: Some("example.com/bundle:all".into()),
        ..all()
    };
    let (plan, _) = run("busybox-docker.tar", &opts);
    let docker = target("busybox-docker", "docker.io/library/busybox:1.35");
    let names: Vec<String> = plan.images.iter().map(|i| i.name.clone()).collect();
    assert!(
        names.contains(&format!("docker.io/library/busybox@{docker}")),
        "{names:?}"
    );
    assert!(
        names.contains(&"example.com/bundle:all".to_string()),
        "{names:?}"
    );
    let manifest = &plan.labels[&docker.parse().unwrap()];
    assert_eq!(
        manifest["containerd.io/gc.ref.content.config"],
        "sha256:3c63c9c166711109a348b05fd7860edf5355b932eac5e2835313507de144cf40"
    );
    assert_eq!(
        manifest["containerd.io/gc.ref.content.l.0"],
        "sha256:89af0ba52eb875ee0acd961cfbc8957307183a93e354fa482e56e751d46b0fbd"
    );
    assert_eq!(
        manifest["containerd.io/distribution.source.docker.io"],
        "library/busybox"
    );
}
