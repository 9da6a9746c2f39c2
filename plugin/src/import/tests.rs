//! The import on the containerd fake: what it records, in which order, and what every failure
//! leaves behind (nothing half-done).

use super::*;
use crate::digest::Digest;
use crate::error::Class;
use crate::store::layout::ContentRoot;
use crate::testing::{all_platforms, fixture};
use crate::testkit::fake::{Call, Fake};
use std::sync::atomic::AtomicU64;

fn import(fake: &Fake, placement: &Placement, name: &str) -> Result<Report, ImportError> {
    let rt = crate::testing::runtime();
    let client = fake.client();
    rt.block_on(run(
        &client,
        placement,
        &Source::File(fixture(name)),
        &all_platforms(),
        Arc::new(AtomicU64::new(0)),
        &Alone,
    ))
}

/// The blob digests an image's content tree reaches in the fake (through GC labels).
fn tree(fake: &Fake, target: &str) -> BTreeSet<String> {
    let s = fake.state();
    let mut todo = vec![target.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        if let Some(b) = d.parse().ok().and_then(|d: Digest| s.blobs.get(&d)) {
            todo.extend(
                b.labels
                    .iter()
                    .filter(|(k, _)| k.starts_with("containerd.io/gc.ref.content"))
                    .map(|(_, v)| v.clone()),
            );
        }
    }
    seen
}

/// Every image's content tree is present in the fake.
fn complete(fake: &Fake) -> Result<(), String> {
    let images: Vec<_> = fake.state().images.values().cloned().collect();
    for i in images {
        for d in tree(fake, &i.digest) {
            let digest: Digest = d.parse().unwrap();
            if !fake.state().blobs.contains_key(&digest) {
                return Err(format!("image {} lacks {d}", i.name));
            }
        }
    }
    Ok(())
}

fn position(calls: &[Call], f: impl Fn(&Call) -> bool) -> Vec<usize> {
    calls
        .iter()
        .enumerate()
        .filter(|(_, c)| f(c))
        .map(|(i, _)| i)
        .collect()
}

/// Content first, images last, the temporary lease released at the very end — checked on the
/// call log, with the garbage collector running before every call.
fn check_order(fake: &Fake, report: &Report) {
    let calls = fake.calls();
    let images = position(&calls, |c| c.op == "put_image");
    let content = position(&calls, |c| {
        matches!(
            c.op,
            "write" | "claim" | "set_blob_labels" | "lease_resource"
        )
    });
    assert!(!images.is_empty() && !content.is_empty());
    assert!(
        content.iter().max() < images.iter().min(),
        "an image record was written before its content was done: {calls:#?}"
    );
    let last = calls.last().unwrap();
    assert_eq!(last.op, "delete_lease", "{calls:#?}");
    assert!(last.subject.starts_with(labels::IMPORT_LEASE_PREFIX));
    // Image records are made under the import lease; so is every stored blob.
    assert!(calls.iter().filter(|c| c.op == "put_image").all(|c| c
        .lease
        .as_deref()
        .is_some_and(|l| l.starts_with(labels::IMPORT_LEASE_PREFIX))));
    complete(fake).unwrap();
    // The archive lease holds every blob the images use, and nothing else is left leased.
    let s = fake.state();
    let lease = report.lease.as_ref().expect("an archive lease");
    let held: Vec<String> = s.leases[lease].content.iter().cloned().collect();
    let mut blobs = report.blobs.clone();
    blobs.sort();
    assert_eq!(held, blobs);
    assert_eq!(
        s.leases.len(),
        1,
        "only the archive lease remains: {:?}",
        s.leases.keys()
    );
    assert!(s.ingests.is_empty(), "ingests left: {:?}", s.ingests.keys());
}

#[test]
fn stream_mode_records_content_before_images_and_survives_any_gc() {
    let fake = Fake::new();
    fake.state().gc_before_every_call = true;
    let r = import(
        &fake,
        &Placement::Remote("test".into()),
        "bundle-ctr-export.tar",
    )
    .unwrap();
    assert_eq!(r.mode, Some(StoreKind::Stream));
    assert_eq!(r.outcome, Outcome::Imported);
    assert_eq!(r.images.len(), 3);
    check_order(&fake, &r);
    // Labels as containerd's importer sets them, distribution sources among them.
    let s = fake.state();
    let index: Digest = r
        .images
        .iter()
        .find(|i| i.name == "docker.io/library/busybox:1.35")
        .unwrap()
        .digest
        .parse()
        .unwrap();
    let labels = &s.blobs[&index].labels;
    assert!(
        labels.contains_key("containerd.io/gc.ref.content.m.0"),
        "{labels:?}"
    );
    assert_eq!(
        labels
            .get("containerd.io/distribution.source.docker.io")
            .map(String::as_str),
        Some("library/busybox")
    );
    let img = &s.images["docker.io/library/busybox:1.35"];
    assert_eq!(img.labels[labels::CRI_PINNED], "pinned");
    assert_eq!(
        img.labels[labels::ARCHIVE],
        fixture("bundle-ctr-export.tar")
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
    );
}

#[test]
fn direct_mode_claims_by_digest_and_sends_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new().with_content_root(dir.path());
    fake.state().gc_before_every_call = true;
    let placement = Placement::Local(ContentRoot::new(dir.path()));
    let r = import(&fake, &placement, "busybox-multiarch-oci.tar").unwrap();
    assert_eq!(r.mode, Some(StoreKind::Direct));
    check_order(&fake, &r);
    assert_eq!(fake.count("write"), 0, "direct mode streamed data");
    assert_eq!(fake.count("claim") as u64, r.blobs_written);
    // Claims carry their labels: no separate label call for a claimed blob.
    assert_eq!(fake.count("set_blob_labels"), 0);
    // A second import finds everything present and writes nothing.
    let again = import(&fake, &placement, "busybox-multiarch-oci.tar").unwrap();
    assert_eq!(again.blobs_written, 0, "{again:?}");
}

#[test]
fn the_archive_lease_follows_what_the_archive_needs() {
    let fake = Fake::new();
    let placement = Placement::Remote("test".into());
    let r = import(&fake, &placement, "busybox-docker.tar").unwrap();
    let lease = r.lease.clone().unwrap();
    // A stale entry (a blob the archive no longer needs) leaves the lease on the next import.
    let stale = fake.add_blob(b"old layer", &[]);
    fake.state()
        .leases
        .get_mut(&lease)
        .unwrap()
        .content
        .insert(stale.to_string());
    import(&fake, &placement, "busybox-docker.tar").unwrap();
    assert!(!fake.state().leases[&lease]
        .content
        .contains(&stale.to_string()));
}

#[test]
fn every_failing_call_leaves_nothing_half_done() {
    let ops = [
        "create_lease",
        "content_root",
        "info",
        "write",
        "lease_content",
        "lease_resource",
        "set_blob_labels",
        "put_image",
    ];
    for op in ops {
        let fake = Fake::new();
        fake.fail(op, None, Class::Unavailable);
        let result = import(
            &fake,
            &Placement::Remote("test".into()),
            "bundle-ctr-export.tar",
        );
        if op == "content_root" {
            // The import does not ask: the placement is decided before it.
            result.unwrap();
            continue;
        }
        let err = result.expect_err(op);
        assert!(err.is_containerd_fault(), "{op}: {err}");
        assert!(
            err.to_string().contains("bundle-ctr-export.tar"),
            "{op}: {err}"
        );
        fake.heal();
        // No image refers to missing content, no ingest or import lease is left behind.
        fake.collect_garbage();
        complete(&fake).unwrap_or_else(|e| panic!("{op}: {e}"));
        let s = fake.state();
        assert!(s.ingests.is_empty(), "{op}: ingests left");
        assert!(
            s.leases
                .keys()
                .all(|l| !l.starts_with(labels::IMPORT_LEASE_PREFIX)),
            "{op}: the import lease was left"
        );
        if op != "put_image" {
            assert!(s.images.is_empty(), "{op}: images recorded after a failure");
        }
    }
}

#[test]
fn a_broken_image_fails_alone() {
    // The docker-save fixture with one byte of its layer flipped: that image fails, the report
    // names the archive and the entry, and nothing is recorded for it.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.tar");
    let mut out = tar::Builder::new(std::fs::File::create(&broken).unwrap());
    let mut input = tar::Archive::new(std::fs::File::open(fixture("busybox-docker.tar")).unwrap());
    for e in input.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if h.path().unwrap().to_string_lossy().ends_with(".tar") && data.len() > 600 {
            data[600] ^= 0xff;
        }
        out.append_data(&mut h, e.path().unwrap(), &data[..])
            .unwrap();
    }
    out.finish().unwrap();
    drop(out);
    let fake = Fake::new();
    let rt = crate::testing::runtime();
    let r = rt
        .block_on(run(
            &fake.client(),
            &Placement::Remote("test".into()),
            &Source::File(broken.clone()),
            &all_platforms(),
            Arc::new(AtomicU64::new(0)),
            &Alone,
        ))
        .unwrap();
    assert_eq!(r.outcome, Outcome::Partial);
    assert!(r.images.is_empty());
    let msg = &r.failed[0];
    assert!(
        msg.contains("broken.tar") && msg.contains("entry \"89af0ba5"),
        "{msg}"
    );
    assert!(msg.contains("content hashes to"), "{msg}");
    assert!(fake.state().images.is_empty());
}

/// An OCI layout whose manifest has a present layer and a layer of `foreign_type`, whose blob
/// is left out of the archive.
fn with_absent_layer(dir: &std::path::Path, foreign_type: &str) -> std::path::PathBuf {
    use sha2::Digest as _;
    let sha = |b: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)));
    let layer = b"present layer bytes".to_vec();
    let absent = b"never in the archive".to_vec();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer), sha(&absent)]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(&config), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar",
             "digest": sha(&layer), "size": layer.len()},
            {"mediaType": foreign_type, "digest": sha(&absent), "size": absent.len(),
             "urls": ["https://example.com/layer"]},
        ],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sha(&manifest), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": "example.com/foreign:1"}}],
    }))
    .unwrap();
    let path = dir.join("foreign.tar");
    let mut out = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |name: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    for blob in [&config, &layer, &manifest] {
        let name = format!("blobs/sha256/{}", &sha(blob)[7..]);
        add(name, blob);
    }
    out.finish().unwrap();
    path
}

#[test]
fn foreign_layers_may_be_absent() {
    let dir = tempfile::tempdir().unwrap();
    for media_type in [
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ] {
        let path = with_absent_layer(dir.path(), media_type);
        let fake = Fake::new();
        let r = crate::testing::runtime()
            .block_on(run(
                &fake.client(),
                &Placement::Remote("test".into()),
                &Source::File(path),
                &all_platforms(),
                Arc::new(AtomicU64::new(0)),
                &Alone,
            ))
            .unwrap_or_else(|e| panic!("{media_type}: {e}"));
        assert_eq!(r.outcome, Outcome::Imported, "{media_type}");
        let s = fake.state();
        assert!(
            s.images.contains_key("example.com/foreign:1"),
            "{media_type}"
        );
        // The config, the present layer and the manifest; the foreign layer is not stored.
        assert_eq!(s.blobs.len(), 3, "{media_type}");
    }
}

#[test]
fn an_absent_ordinary_layer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_absent_layer(dir.path(), "application/vnd.oci.image.layer.v1.tar+gzip");
    let fake = Fake::new();
    let r = crate::testing::runtime().block_on(run(
        &fake.client(),
        &Placement::Remote("test".into()),
        &Source::File(path),
        &all_platforms(),
        Arc::new(AtomicU64::new(0)),
        &Alone,
    ));
    let msg = match r {
        Ok(r) => r.failed.join("\n"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("missing from the archive"), "{msg}");
    assert!(fake.state().images.is_empty());
}
