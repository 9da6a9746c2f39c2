//! Unpacking on the containerd fake: overlap with the import (checked on the call log), shared
//! chains once, only the chosen platforms, failures that leave the import standing and no
//! extraction snapshot behind, the leases and labels that let garbage collection take every
//! snapshot once the images and leases go, and the retry from containerd's content.

use super::*;
use crate::containerd::SnapshotKind;
use crate::error::Class;
use crate::import::{self, Alone, ImportOptions, Placement, Source};
use crate::labels;
use crate::oci;
use crate::platform::Platform;
use crate::testing::tar;
use crate::testkit::fake::Fake;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicU64;

const SN: &str = "overlayfs";

/// Bytes of a made-up layer: not JSON, not compressed (the fake's differ only hashes them).
fn layer_bytes(name: &str, size: usize) -> Vec<u8> {
    let mut v = format!("layer {name}\n").into_bytes();
    let mut x: u64 = name
        .bytes()
        .fold(7, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

fn config(arch: &str, diff_ids: &[Digest]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
    }))
    .unwrap()
}

/// The entries of a docker-save archive: `layers` by name, and images (tag, architecture,
/// layer names). Layers come first, then each config, then `manifest.json`.
fn docker_save(
    layers: &[(&str, Vec<u8>)],
    images: &[(&str, &str, &[&str])],
) -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<(String, Vec<u8>)> = layers
        .iter()
        .map(|(n, b)| (format!("{n}/layer.tar"), b.clone()))
        .collect();
    let mut manifest = Vec::new();
    for (tag, arch, names) in images {
        let diff_ids: Vec<Digest> = names
            .iter()
            .map(|n| Digest::of(&layers.iter().find(|(l, _)| l == n).unwrap().1))
            .collect();
        let c = config(arch, &diff_ids);
        let name = format!("{}.json", Digest::of(&c).hex());
        entries.push((name.clone(), c));
        manifest.push(serde_json::json!({
            "Config": name,
            "RepoTags": [tag],
            "Layers": names.iter().map(|n| format!("{n}/layer.tar")).collect::<Vec<_>>(),
        }));
    }
    entries.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    entries
}

fn host() -> String {
    Platform::host().architecture
}

fn opts(platforms: PlatformPolicy) -> ImportOptions {
    ImportOptions {
        plan: crate::archive::understand::PlanOptions {
            platforms,
            ..Default::default()
        },
        unpack: Some(SN.into()),
        pipes: true,
        ..Default::default()
    }
}

fn import_file(fake: &Fake, path: &Path, opts: &ImportOptions) -> import::Report {
    let rt = crate::testing::runtime();
    rt.block_on(import::run(
        &fake.client(),
        &Placement::Remote("test".into()),
        &Source::File(path.to_path_buf()),
        opts,
        Arc::new(AtomicU64::new(0)),
        &Alone,
    ))
    .unwrap()
}

fn import_entries(
    fake: &Fake,
    entries: &[(String, Vec<u8>)],
    opts: &ImportOptions,
) -> import::Report {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar");
    std::fs::write(&path, tar(entries)).unwrap();
    import_file(fake, &path, opts)
}

/// The committed snapshots, and every snapshot that is not.
fn snapshots(fake: &Fake) -> (BTreeMap<String, crate::testkit::fake::Snapshot>, usize) {
    let active = fake
        .state()
        .snapshots
        .values()
        .filter(|s| s.kind != SnapshotKind::Committed)
        .count();
    (fake.committed(SN), active)
}

/// Layers by name, and an archive's files (path, bytes).
type Bundle = (Vec<(&'static str, Vec<u8>)>, Vec<(String, Vec<u8>)>);

/// A bundle of three images sharing a base, two of them sharing a second layer too.
fn bundle() -> Bundle {
    let layers = vec![
        ("base", layer_bytes("base", 5000)),
        ("mid", layer_bytes("mid", 3000)),
        ("a", layer_bytes("a", 2000)),
        ("b", layer_bytes("b", 2000)),
        ("c", layer_bytes("c", 2000)),
    ];
    let arch = host();
    let entries = docker_save(
        &layers,
        &[
            ("example.com/a:1", &arch, &["base", "mid", "a"]),
            ("example.com/b:1", &arch, &["base", "mid", "b"]),
            ("example.com/c:1", &arch, &["base", "c"]),
        ],
    );
    (layers, entries)
}

#[test]
fn shared_chains_are_applied_once_labelled_and_held() {
    let fake = Fake::new();
    fake.state().gc_before_every_call = true;
    let (layers, entries) = bundle();
    let r = import_entries(&fake, &entries, &opts(PlatformPolicy::Host));
    assert_eq!(r.images.len(), 3);
    let u = r.unpack.clone().expect("an unpack report");
    assert!(u.ok(), "{u:?}");
    assert_eq!(u.images.len(), 3);
    // base, base+mid, base+mid+a, base+mid+b, base+c: five chains, each applied once.
    assert_eq!(fake.count("apply_diff"), 5, "{:#?}", fake.calls());
    assert_eq!((u.layers_applied, u.layers_present), (5, 0));
    let (committed, active) = snapshots(&fake);
    assert_eq!((committed.len(), active), (5, 0));
    let d = |n: &str| Digest::of(&layers.iter().find(|(l, _)| *l == n).unwrap().1);
    let top_a = chain::top(&[d("base"), d("mid"), d("a")]).unwrap();
    let mid = chain::top(&[d("base"), d("mid")]).unwrap();
    let s = &committed[&top_a.to_string()];
    assert_eq!(s.parent, mid.to_string());
    assert_eq!(s.labels[apply::SNAPSHOT_REF], top_a.to_string());
    assert_eq!(s.labels[apply::SNAPSHOT_DIFF_ID], d("a").to_string());
    assert_eq!(s.labels[apply::SNAPSHOT_PARENT], mid.to_string());
    // Each config names its top chain; uncompressed layers get no `uncompressed` label.
    let state = fake.state();
    let configs: Vec<&crate::testkit::fake::Blob> = state
        .blobs
        .values()
        .filter(|b| b.labels.contains_key(&gc_label(SN)))
        .collect();
    assert_eq!(configs.len(), 3);
    assert!(configs
        .iter()
        .any(|b| b.labels[&gc_label(SN)] == top_a.to_string()));
    assert!(state
        .blobs
        .values()
        .all(|b| !b.labels.contains_key(UNCOMPRESSED)));
    // The archive's lease holds the three top chains; the import's lease is gone.
    let lease = &state.leases[r.lease.as_ref().unwrap()];
    assert_eq!(lease.snapshots.len(), 3);
    assert_eq!(state.leases.len(), 1);
    let mut tops = u.chains.clone();
    tops.sort();
    let held: Vec<String> = lease.snapshots.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(held, tops);
}

#[test]
fn garbage_collection_takes_every_snapshot_once_images_and_leases_go() {
    let fake = Fake::new();
    let (_, entries) = bundle();
    import_entries(&fake, &entries, &opts(PlatformPolicy::Host));
    assert_eq!(fake.committed(SN).len(), 5);
    // The images go, the archive's lease stays: nothing is collected.
    fake.state().images.clear();
    fake.collect_garbage();
    assert_eq!(fake.committed(SN).len(), 5);
    // The lease goes too: every snapshot goes with the content.
    fake.state().leases.clear();
    fake.collect_garbage();
    assert!(fake.state().snapshots.is_empty());
    assert!(fake.state().blobs.is_empty());
}

#[test]
fn only_the_chosen_platforms_are_unpacked() {
    let other = if host() == "amd64" { "arm64" } else { "amd64" };
    let layers = vec![
        ("base", layer_bytes("base", 1000)),
        ("mine", layer_bytes("mine", 1000)),
        ("theirs", layer_bytes("theirs", 1000)),
    ];
    let arch = host();
    let entries = docker_save(
        &layers,
        &[
            ("example.com/x:mine", &arch, &["base", "mine"]),
            ("example.com/x:theirs", other, &["base", "theirs"]),
        ],
    );
    // Every platform imported: the host's unpacked.
    let fake = Fake::new();
    let r = import_entries(&fake, &entries, &opts(PlatformPolicy::All));
    assert_eq!(r.images.len(), 2);
    let u = r.unpack.unwrap();
    assert_eq!(u.images, vec!["example.com/x:mine".to_string()]);
    assert_eq!(fake.committed(SN).len(), 2);
    // Both chosen: both unpacked, the base once.
    let fake = Fake::new();
    let both = PlatformPolicy::Only(vec![
        Platform::new("linux", &arch, ""),
        Platform::new("linux", other, ""),
    ]);
    let r = import_entries(&fake, &entries, &opts(both));
    assert_eq!(r.unpack.unwrap().images.len(), 2);
    assert_eq!(fake.committed(SN).len(), 3);
    assert_eq!(fake.count("apply_diff"), 3);
}

/// An OCI layout with one gzip-compressed layer whose config lists `diff_id`.
fn oci_gzip(plain: &[u8], diff_id: &Digest) -> Vec<(String, Vec<u8>)> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(plain).unwrap();
    let gz = gz.finish().unwrap();
    let c = config(&host(), std::slice::from_ref(diff_id));
    let layer = oci::Descriptor::new(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Digest::of(&gz),
        gz.len() as u64,
    );
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_OCI_MANIFEST,
        "config": oci::Descriptor::new(oci::MEDIA_OCI_CONFIG, Digest::of(&c), c.len() as u64),
        "layers": [layer],
    }))
    .unwrap();
    let mut entry = oci::Descriptor::new(
        oci::MEDIA_OCI_MANIFEST,
        Digest::of(&manifest),
        manifest.len() as u64,
    );
    entry
        .annotations
        .insert(oci::ANNOTATION_IMAGE_NAME.into(), "example.com/gz:1".into());
    let index =
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [entry]})).unwrap();
    let blob = |b: &[u8]| (format!("blobs/sha256/{}", Digest::of(b).hex()), b.to_vec());
    vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        blob(&gz),
        blob(&c),
        blob(&manifest),
        ("index.json".into(), index),
    ]
}

#[test]
fn compressed_layers_get_their_uncompressed_label() {
    let fake = Fake::new();
    let plain = layer_bytes("plain", 4000);
    let r = import_entries(
        &fake,
        &oci_gzip(&plain, &Digest::of(&plain)),
        &opts(PlatformPolicy::Host),
    );
    let u = r.unpack.unwrap();
    assert!(u.ok(), "{u:?}");
    assert_eq!(u.images, vec!["example.com/gz:1".to_string()]);
    let s = fake.state();
    let labelled: Vec<&String> = s
        .blobs
        .values()
        .filter_map(|b| b.labels.get(UNCOMPRESSED))
        .collect();
    assert_eq!(labelled, vec![&Digest::of(&plain).to_string()]);
}

#[test]
fn a_wrong_diff_id_fails_the_unpack_cleanly_and_keeps_the_import() {
    let fake = Fake::new();
    let plain = layer_bytes("plain", 4000);
    let wrong = Digest::of(b"not the layer");
    let r = import_entries(
        &fake,
        &oci_gzip(&plain, &wrong),
        &opts(PlatformPolicy::Host),
    );
    assert!(r.ok(), "the import stands: {:?}", r.failed);
    assert!(fake.image("example.com/gz:1").is_some());
    let u = r.unpack.clone().unwrap();
    assert!(u.images.is_empty());
    let e = u.error().unwrap();
    assert!(
        e.contains("example.com/gz:1") && e.contains(&wrong.to_string()),
        "{e}"
    );
    assert!(r.unpack_error().is_some());
    // No extraction snapshot is left, nothing is committed, no config names a chain.
    let (committed, active) = snapshots(&fake);
    assert_eq!((committed.len(), active), (0, 0));
    assert!(fake
        .state()
        .blobs
        .values()
        .all(|b| !b.labels.contains_key(&gc_label(SN))));
}

#[test]
fn a_failing_differ_is_reported_and_the_retry_from_content_unpacks() {
    let fake = Fake::new();
    let (_, entries) = bundle();
    fake.fail("apply_diff", None, Class::Unavailable);
    let r = import_entries(&fake, &entries, &opts(PlatformPolicy::Host));
    assert!(r.ok());
    assert_eq!(fake.state().images.len(), 3);
    let u = r.unpack.clone().unwrap();
    assert_eq!(u.errors.len(), 3, "{u:?}");
    assert!(u.errors[0].contains("injected fault"), "{u:?}");
    let (committed, active) = snapshots(&fake);
    assert_eq!((committed.len(), active), (0, 0));
    // Verification later: from containerd's content alone.
    fake.heal();
    let rt = crate::testing::runtime();
    let client = fake.client();
    let u = rt.block_on(async {
        client
            .create_lease("airlift-import-retry", Default::default(), None)
            .await
            .unwrap();
        let leased = client.with_lease(Some("airlift-import-retry"));
        let options = Options {
            snapshotter: SN.into(),
            platforms: PlatformPolicy::Host,
        };
        let u = from_content(&client, &leased, &options, &r.images, r.lease.as_deref()).await;
        client
            .delete_lease("airlift-import-retry", true)
            .await
            .unwrap();
        u
    });
    assert!(u.ok(), "{u:?}");
    assert_eq!(u.images.len(), 3);
    assert_eq!(
        fake.committed(SN).len(),
        5,
        "kept after the retry's lease went"
    );
    assert!(rt
        .block_on(super::committed(client.as_ref(), SN, &u.chains))
        .unwrap());
}

#[test]
fn chains_committed_already_are_not_applied_again() {
    let fake = Fake::new();
    let (_, entries) = bundle();
    import_entries(&fake, &entries, &opts(PlatformPolicy::Host));
    let applied = fake.count("apply_diff");
    // A second archive with the same images: every chain is there.
    let r = import_entries(&fake, &entries, &opts(PlatformPolicy::Host));
    let u = r.unpack.unwrap();
    assert!(u.ok());
    assert_eq!(fake.count("apply_diff"), applied);
    assert_eq!(u.layers_applied, 0);
    assert!(u.layers_present >= 3, "{u:?}");
}

#[test]
fn layers_are_applied_while_the_archive_is_still_read() {
    // A FIFO the test writes the archive into: the first part holds the base layer and the
    // config; the rest is written only once a layer was applied — an unpacker waiting for the
    // end of the archive would wait forever (and the test fails on its timeout).
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("a.tar");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let arch = host();
    let layers = vec![
        ("base", layer_bytes("base", 1_500_000)),
        ("app", layer_bytes("app", 2_000_000)),
        ("late", layer_bytes("late", 2_000_000)),
    ];
    let mut entries = docker_save(
        &layers,
        &[("example.com/app:1", &arch, &["base", "app", "late"])],
    );
    // base, config, app, late, manifest.json.
    let cfg = entries.remove(3);
    entries.insert(1, cfg);
    let bytes = tar(&entries);
    let split = bytes.len() - 2_000_000; // within `late`
    let fake = Fake::new();
    let watcher = fake.clone();
    // Read-write: the FIFO has a writer before the import opens it, and ends when this closes.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let writer = std::thread::spawn(move || {
        f.write_all(&bytes[..split]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while watcher.count("apply_diff") == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no layer was applied while the archive was read"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let writes_before = watcher.count("write");
        f.write_all(&bytes[split..]).unwrap();
        writes_before
    });
    let r = import_file(
        &fake,
        &dir.path().join("a.tar"),
        &opts(PlatformPolicy::Host),
    );
    let writes_before = writer.join().unwrap();
    assert!(r.unpack.as_ref().unwrap().ok(), "{:?}", r.unpack);
    // From the call log: the first apply came before the archive's last blob was written.
    let calls = fake.calls();
    let first_apply = calls.iter().position(|c| c.op == "apply_diff").unwrap();
    let last_write = calls.iter().rposition(|c| c.op == "write").unwrap();
    assert!(first_apply < last_write, "{calls:#?}");
    assert!(writes_before < fake.count("write"));
}

#[test]
fn direct_mode_claims_layers_early_and_labels_them_in_the_record_step() {
    let rt = crate::testing::runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = crate::store::layout::ContentRoot::new(dir.path().join("content"));
    std::fs::create_dir_all(root.path()).unwrap();
    let fake = Fake::new().with_content_root(root.path());
    fake.state().gc_before_every_call = true;
    let (_, entries) = bundle();
    let path = dir.path().join("a.tar");
    std::fs::write(&path, tar(&entries)).unwrap();
    let r = rt
        .block_on(import::run(
            &fake.client(),
            &Placement::Local(root.clone()),
            &Source::File(path),
            &opts(PlatformPolicy::Host),
            Arc::new(AtomicU64::new(0)),
            &Alone,
        ))
        .unwrap();
    assert_eq!(r.mode, Some(crate::store::StoreKind::Direct));
    let u = r.unpack.clone().unwrap();
    assert!(u.ok(), "{u:?}");
    assert_eq!(u.images.len(), 3);
    // Every blob the images use carries its labels and is held, early claims or not.
    let s = fake.state();
    let lease = &s.leases[r.lease.as_ref().unwrap()];
    for b in &r.blobs {
        let d: Digest = b.parse().unwrap();
        assert!(lease.content.contains(b), "{b} is not held");
        assert!(
            s.blobs[&d]
                .labels
                .keys()
                .any(|k| k.starts_with("containerd.io/distribution.source.")),
            "{b} lacks its labels"
        );
    }
    assert!(s
        .leases
        .keys()
        .all(|l| !l.starts_with(labels::IMPORT_LEASE_PREFIX)));
    drop(s);
    assert_eq!(fake.committed(SN).len(), 5);
}

#[test]
fn unpacking_off_touches_no_snapshot() {
    let fake = Fake::new();
    let (_, entries) = bundle();
    let mut o = opts(PlatformPolicy::Host);
    o.unpack = None;
    let r = import_entries(&fake, &entries, &o);
    assert!(r.unpack.is_none());
    assert!(fake
        .calls()
        .iter()
        .all(|c| !c.op.contains("snapshot") && c.op != "apply_diff"));
}
