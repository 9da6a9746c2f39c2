//! The fake's own semantics: leases, garbage collection, verified writes, claims, faults.
use super::*;
use crate::containerd::{Chunk, Written};
use std::collections::BTreeMap;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn leases_hold_content_and_gc_follows_labels() {
    let fake = Fake::new();
    let child = fake.add_blob(b"child", &[]);
    let parent = fake.add_blob(
        b"parent",
        &[("containerd.io/gc.ref.content.l.0", &child.to_string())],
    );
    let loose = fake.add_blob(b"loose", &[]);
    let c = fake.client();
    rt().block_on(async {
        c.create_lease("l", Default::default(), None).await.unwrap();
        c.lease_resource("l", &parent.to_string(), true)
            .await
            .unwrap();
    });
    assert_eq!(fake.collect_garbage(), vec![loose]);
    assert!(fake.state().blobs.contains_key(&child));
    rt().block_on(c.delete_lease("l", false)).unwrap();
    assert_eq!(fake.collect_garbage().len(), 2);
}

#[test]
fn writes_verify_and_claims_need_the_blob_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new().with_content_root(dir.path());
    let c = fake.client();
    let data = b"some bytes".to_vec();
    let d = Digest::of(&data);
    rt().block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Chunk::Data(data.clone())).await.unwrap();
        tx.send(Chunk::Commit(Digest::of(b"other"))).await.unwrap();
        let e = c.write("r", 10, None, rx).await.unwrap_err();
        assert_eq!(e.class(), Class::FailedPrecondition);
        // Not on disk: nothing to claim.
        let e = c.claim("r", &d, 10, &BTreeMap::new()).await.unwrap_err();
        assert_eq!(e.class(), Class::OutOfRange);
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(dir.path().join("blobs/sha256").join(d.hex()), &data).unwrap();
        assert!(c.claim("r", &d, 10, &BTreeMap::new()).await.unwrap());
        assert!(!c.claim("r", &d, 10, &BTreeMap::new()).await.unwrap());
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        assert_eq!(
            c.write("r2", 10, Some(&d), rx).await.unwrap(),
            Written::AlreadyExists
        );
    });
}

#[test]
fn faults_and_filters() {
    let fake = Fake::new();
    let c = fake.client();
    fake.fail_times("create_lease", 1, Class::Unavailable);
    rt().block_on(async {
        let e = c
            .create_lease("airlift-x", Default::default(), None)
            .await
            .unwrap_err();
        assert_eq!(e.class(), Class::Unavailable);
        c.create_lease("airlift-x", Default::default(), None)
            .await
            .unwrap();
        c.create_lease("other", Default::default(), None)
            .await
            .unwrap();
        assert_eq!(
            c.list_leases("id~=^airlift-").await.unwrap(),
            vec!["airlift-x"]
        );
        assert_eq!(c.list_leases("id==other").await.unwrap(), vec!["other"]);
    });
    assert_eq!(fake.count("create_lease"), 3);
}

#[test]
fn behaves_as_containerd() {
    use crate::testkit::behaviour::{run, Subject};
    let root = tempfile::tempdir().unwrap();
    let fake = Fake::new().with_content_root(root.path());
    let subject = Subject::new(fake.client(), &fake, "overlayfs", "the fake");
    crate::testing::runtime().block_on(run(&subject));
}
