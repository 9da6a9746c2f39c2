//! The direct store against the containerd fake: conformance, claims, fallbacks, cleaning.

use super::*;
use crate::error::Class;
use crate::testkit::fake::Fake;
use std::collections::BTreeSet;

fn open(fake: &Fake, root: &ContentRoot, rt: &tokio::runtime::Runtime) -> DirectStore {
    DirectStore::open(root, fake.client(), rt.handle().clone(), "airlift-t".into()).unwrap()
}

fn blocking<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    rt.block_on(async { tokio::task::spawn_blocking(f).await.unwrap() })
}

#[test]
fn conforms_and_claims_only_what_is_needed() {
    let rt = crate::testing::runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = ContentRoot::new(dir.path().join("content"));
    std::fs::create_dir_all(root.path()).unwrap();
    let fake = Fake::new().with_content_root(root.path());
    let store = Arc::new(open(&fake, &root, &rt));
    let s = store.clone();
    blocking(&rt, move || crate::testkit::conformance::run(s.as_ref()));

    // Two staged blobs, one needed: only that one is linked and claimed, with its labels.
    let (a, b) = (b"needed blob".to_vec(), b"unused blob".to_vec());
    let (da, db) = (Digest::of(&a), Digest::of(&b));
    let s = store.clone();
    let (da2, db2) = (da.clone(), db.clone());
    let claimed = blocking(&rt, move || {
        s.put(&mut &a[..], a.len() as u64, Some(&da2)).unwrap();
        s.put(&mut &b[..], b.len() as u64, Some(&db2)).unwrap();
        let labels = BTreeMap::from([(
            da2.clone(),
            BTreeMap::from([("k".to_string(), "v".to_string())]),
        )]);
        let needed = BTreeSet::from([&da2]);
        s.claim_staged(s.shared.client.as_ref(), &labels, &needed)
            .unwrap()
    });
    assert!(claimed.contains(&da));
    assert!(root.blob(&da).exists());
    assert!(!root.blob(&db).exists(), "an unused blob was linked");
    assert_eq!(
        fake.state().blobs[&da].labels.get("k").map(String::as_str),
        Some("v")
    );
    assert!(!fake.state().blobs.contains_key(&db));
    drop(store);
    let left: Vec<_> = std::fs::read_dir(root.temp())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn a_failed_claim_falls_back_to_streaming() {
    let rt = crate::testing::runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = ContentRoot::new(dir.path());
    let fake = Fake::new().with_content_root(dir.path());
    fake.fail("claim", None, Class::FailedPrecondition);
    let store = Arc::new(open(&fake, &root, &rt));
    let data = vec![9u8; 100_000];
    let d = Digest::of(&data);
    let s = store.clone();
    let d2 = d.clone();
    let claimed = blocking(&rt, move || {
        s.put(&mut &data[..], data.len() as u64, Some(&d2)).unwrap();
        s.claim_staged(
            s.shared.client.as_ref(),
            &BTreeMap::new(),
            &BTreeSet::from([&d2]),
        )
        .unwrap()
    });
    assert!(
        claimed.is_empty(),
        "a streamed blob needs its labels set separately"
    );
    assert_eq!(fake.state().blobs[&d].data.len(), 100_000);
    assert_eq!(fake.count("write"), 1);
}

#[test]
fn failures_name_the_blob_and_the_path() {
    let rt = crate::testing::runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = ContentRoot::new(dir.path());
    let fake = Fake::new().with_content_root(dir.path());
    let store = Arc::new(open(&fake, &root, &rt));
    // The blobs directory is replaced by a file: the link fails.
    let data = b"abc".to_vec();
    let d = Digest::of(&data);
    let s = store.clone();
    let d2 = d.clone();
    let blobs = root.blobs();
    let err = blocking(&rt, move || {
        s.put(&mut &data[..], 3, Some(&d2)).unwrap();
        std::fs::remove_dir_all(&blobs).unwrap();
        std::fs::write(&blobs, b"not a directory").unwrap();
        s.claim_staged(
            s.shared.client.as_ref(),
            &BTreeMap::new(),
            &BTreeSet::from([&d2]),
        )
        .unwrap_err()
    });
    let msg = err.to_string();
    assert!(msg.contains(&d.to_string()), "{msg}");
    assert!(msg.contains("blobs/sha256"), "{msg}");
}

#[test]
fn only_dead_processes_files_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    crate::liveness::hold(dir.path()).unwrap();
    let mine = dir.path().join(format!("{}-7", crate::liveness::token()));
    let dead = dir.path().join("p1x1-7");
    let dead_lock = dir.path().join("p1x1.lock");
    let taking = dir.path().join("p2x2.lock.new");
    for p in [&mine, &dead, &dead_lock, &taking] {
        std::fs::write(p, b"").unwrap();
    }
    clean_stale(dir.path());
    assert!(mine.exists() && taking.exists());
    assert!(!dead.exists() && !dead_lock.exists());
}
