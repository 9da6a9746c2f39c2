//! The archive side against every real fixture, in every compression, with an in-memory store:
//! names and target digests must equal what containerd's own importer produces.

use airlift::archive::understand::{plan, Plan, PlanOptions, Problem};
use airlift::ingest::{ingest, Counters};
use airlift::platform::{Platform, PlatformPolicy};
use airlift::store::memory::MemoryStore;
use airlift::store::ContentStore;
use std::path::PathBuf;

const INDEX_2D8E: &str = "sha256:2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd";
const ARM64_5142: &str = "sha256:5142ba3ef0ec91d16e239b22f1964d43c420f200f2c1a1eb34ba9cceb487fc76";
const DOCKER_9C0B: &str = "sha256:9c0b0fd8eabfb086e699955045c31650c8620d9ca78ca73e69f772cb3b74a7af";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../integration/fixtures")
        .join(name)
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

#[test]
fn every_fixture_in_every_compression_matches_containerd() {
    let bundle = pairs(&[
        ("docker.io/library/busybox:1.35", INDEX_2D8E),
        ("registry.example.com/tools/busybox:1.35-arm64", ARM64_5142),
        ("registry.example.com/tools/busybox:latest", ARM64_5142),
    ]);
    let multitag = pairs(&[
        ("docker.io/library/busybox:stable", ARM64_5142),
        ("registry.example.com/tools/busybox:1.35-arm64", ARM64_5142),
        ("registry.example.com/tools/busybox:latest", ARM64_5142),
    ]);
    let docker = pairs(&[("docker.io/library/busybox:1.35", DOCKER_9C0B)]);
    let index = pairs(&[("docker.io/library/busybox:1.35", INDEX_2D8E)]);
    let cases: Vec<(&str, &Vec<(String, String)>)> = vec![
        ("bundle-ctr-export.tar", &bundle),
        ("bundle-ctr-export.tar.zst", &bundle),
        ("busybox-arm64-multitag-docker.tar", &multitag),
        ("busybox-arm64-multitag-docker.tar.lz4", &multitag),
        ("busybox-docker.tar", &docker),
        ("busybox-docker-long31.tar.zst", &docker),
        ("busybox-multiarch-oci.tar", &index),
        ("busybox-multiarch-oci.tgz", &index),
        ("busybox-amd64-only-ctr-export.tar", &index),
        ("busybox-amd64-only-ctr-export.tzst", &index),
    ];
    for (name, want) in cases {
        let (plan, store) = run(name, &all());
        assert_eq!(&images(&plan), want, "{name}");
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
    for (name, tag, digest) in [
        (
            "busybox-oci-tagonly.tar",
            "1.35",
            "sha256:e9b6f6016ae73f57bba8637ec8268512a0b29a978df796cbbdeeaf7b98517d43",
        ),
        (
            "busybox-oci-tagonly.tar.bz2",
            "1.35",
            "sha256:e9b6f6016ae73f57bba8637ec8268512a0b29a978df796cbbdeeaf7b98517d43",
        ),
        (
            "busybox-umoci-layout.tar",
            "v1",
            "sha256:6ae9ea8dc90d9387c906f7f6cfc439a21663ae1dcab4fe279dc1bf2d8a0d4555",
        ),
    ] {
        let (plan, _) = run(name, &all());
        assert!(plan.images.is_empty(), "{name}: {:?}", plan.images);
        assert!(
            matches!(&plan.problems[..], [Problem::Skipped { reason, informational: false, .. }] if reason.contains("--base-name")),
            "{name}: {:?}",
            plan.problems
        );
        let opts = PlanOptions {
            base_name: Some("registry.example.com/fixtures/busybox".into()),
            ..all()
        };
        let (plan, _) = run(name, &opts);
        assert_eq!(
            images(&plan),
            pairs(&[(
                &format!("registry.example.com/fixtures/busybox:{tag}"),
                digest
            )]),
            "{name}"
        );
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
    assert_eq!(
        images(&plan),
        pairs(&[("docker.io/library/busybox:1.35", INDEX_2D8E)])
    );
    let index_labels = &plan.labels[&INDEX_2D8E.parse().unwrap()];
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
    let names: Vec<String> = plan.images.iter().map(|i| i.name.clone()).collect();
    assert!(
        names.contains(&format!("docker.io/library/busybox@{DOCKER_9C0B}")),
        "{names:?}"
    );
    assert!(
        names.contains(&"example.com/bundle:all".to_string()),
        "{names:?}"
    );
    let manifest = &plan.labels[&DOCKER_9C0B.parse().unwrap()];
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
