//! End-to-end: what a peer such as Spegel sees of airlift's imports, and `airlift verify`.
//!
//! Spegel advertises an image when containerd publishes its `/images/create` event and it can
//! walk the image's blobs, each labelled `containerd.io/distribution.source.<registry>` with its
//! repository (k3s shipped imports it could not share, and a live import shareable only after a
//! restart). Here a subscriber checks, at every `/images/create` of an import — from the command
//! line in direct and stream mode, and from the running daemon — that the image's content is all
//! there and labelled, on containerd 2.x and 1.7. Then `airlift verify` is run against what CRI
//! and the walk see: clean after an import, naming the blob and the image when a label or a pin
//! is taken away.

mod common;

use airlift::containerd::Event;
use airlift_integration::{fixtures_dir, Containerd, Version};
use common::daemon::Daemon;
use common::*;
use std::process::Command;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Subscribes to `/images/create` in k8s.io, runs `import`, and checks every image created
/// meanwhile the moment its event arrives; returns the names seen.
fn walk_at_every_create(ctd: &Containerd, expected: usize, import: impl FnOnce()) -> Vec<String> {
    let rt = rt();
    let c = client(&rt, ctd, "k8s.io");
    let mut events = rt.block_on(c.subscribe(&["/images/create"])).unwrap();
    import();
    let mut seen = Vec::new();
    rt.block_on(async {
        while seen.len() < expected {
            let next = tokio::time::timeout(Duration::from_secs(60), events.next())
                .await
                .expect("an /images/create event within 60 s")
                .expect("the subscription stays open")
                .unwrap();
            let Event::ImageCreated { name, .. } = next else {
                continue;
            };
            let image = c
                .get_image(&name)
                .await
                .unwrap()
                .expect("the image it announced");
            let problems = airlift::visibility::walk(c.as_ref(), &image).await;
            assert!(
                problems.is_empty(),
                "{name} at its /images/create: {problems:#?}"
            );
            seen.push(name);
        }
    });
    seen.sort();
    seen
}

fn shareable_at_create(version: Version) {
    let bundle = fixtures_dir().join("bundle-ctr-export.tar");
    let bundle = bundle.to_str().unwrap();
    for mode in ["direct", "stream"] {
        let ctd = Containerd::start(version).unwrap();
        let seen = walk_at_every_create(&ctd, 3, || {
            import_ok(&ctd, "k8s.io", &["--all-platforms", "--mode", mode, bundle]);
        });
        assert_eq!(seen.len(), 3, "{mode}: {seen:?}");
    }
    // A live import by the daemon: shareable at once, not after a restart.
    let ctd = Containerd::start(version).unwrap();
    let mut d = Daemon::new(&ctd, "platforms = [\"all\"]\n");
    d.start();
    d.wait();
    let seen = walk_at_every_create(&ctd, 3, || {
        let tmp = d.images().join(".bundle.tar.new");
        std::fs::copy(fixtures_dir().join("bundle-ctr-export.tar"), &tmp).unwrap();
        std::fs::rename(&tmp, d.images().join("bundle.tar")).unwrap();
    });
    assert_eq!(seen.len(), 3, "daemon: {seen:?}\n{}", d.log());
}

on_containerd!(shareable_at_create {
    every_image_is_shareable_at_its_create_event_containerd_2: Version::V2;
    every_image_is_shareable_at_its_create_event_containerd_17: Version::V17;
});

fn verify(ctd: &Containerd, args: &[&str]) -> (bool, String) {
    let out = Command::new(airlift_bin())
        .arg("verify")
        .arg("--address")
        .arg(ctd.address())
        .args(args)
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn verify_reports(version: Version) {
    let ctd = Containerd::start(version).unwrap();
    let bundle = fixtures_dir().join("bundle-ctr-export.tar");
    import_ok(
        &ctd,
        "k8s.io",
        &["--all-platforms", bundle.to_str().unwrap()],
    );
    let (ok, out) = verify(&ctd, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("3 image(s) checked (CRI and content), 0 with"),
        "{out}"
    );

    // Another image in the namespace, not airlift's: not checked unless named.
    let rt = rt();
    let c = client(&rt, &ctd, "k8s.io");
    let busybox = c.as_ref().get_image("docker.io/library/busybox:1.35");
    let busybox = rt.block_on(busybox).unwrap().unwrap();

    // A layer loses its distribution source, an image its CRI pin.
    let manifest_walk = rt.block_on(async {
        let data = c
            .read(&busybox.digest.parse().unwrap(), 0, busybox.size as u64)
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&data).unwrap()
    });
    let first_manifest = manifest_walk["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    ctd.ctr_output(&[
        "-n",
        "k8s.io",
        "content",
        "label",
        &first_manifest,
        "containerd.io/distribution.source.docker.io=",
    ])
    .unwrap();
    // CRI pins an image (by ID) while any of its names is pinned: both names lose the pin.
    for name in [
        "registry.example.com/tools/busybox:latest",
        "registry.example.com/tools/busybox:1.35-arm64",
    ] {
        ctd.ctr_output(&[
            "-n",
            "k8s.io",
            "images",
            "label",
            name,
            "io.cri-containerd.pinned=",
        ])
        .unwrap();
    }
    let (ok, out) = verify(&ctd, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "MISSING  docker.io/library/busybox:1.35: blob {first_manifest} has no"
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "MISSING  registry.example.com/tools/busybox:latest: CRI does not report it pinned"
        ),
        "{out}"
    );
    assert!(out.contains("3 with something missing"), "{out}");
    // Named images only; one containerd does not have.
    let (ok, out) = verify(&ctd, &["--json", "busybox:1.35", "example.com/none:1"]);
    assert!(!ok, "{out}");
    let findings: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(findings.as_array().unwrap().len(), 2, "{out}");
    assert!(
        findings[1]["problems"][0]
            .as_str()
            .unwrap()
            .contains("containerd has no image example.com/none:1"),
        "{out}"
    );

    // Imported again (labels and pins restored) with digest references: CRI now has repo
    // digests, and they name the targets.
    import_ok(
        &ctd,
        "k8s.io",
        &[
            "--all-platforms",
            "--force",
            "--digest-refs",
            bundle.to_str().unwrap(),
        ],
    );
    let (ok, out) = verify(&ctd, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("5 image(s) checked"), "{out}");
}

on_containerd!(verify_reports {
    verify_names_what_cri_and_peers_miss_containerd_2: Version::V2;
    verify_names_what_cri_and_peers_miss_containerd_17: Version::V17;
});
