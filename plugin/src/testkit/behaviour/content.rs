//! The content service: verified commits, present blobs, reads, labels, ingests, claims.

use super::{fails_with, label_map, labels, try_write, write, Subject};
use crate::containerd::{Chunk, Labels, Written};
use crate::digest::Digest;
use crate::error::Class;
use crate::store::layout::ContentRoot;

/// A commit is verified against the digest and size; a blob present already is not written
/// again (`AlreadyExists`: declared up front, the blob joins the writer's lease; found at the
/// commit, it does not); reads honour offset and size; a write under a lease adds the blob to it.
pub async fn verified_writes(s: &Subject<'_>) {
    let n = &s.name;
    let (lease, leased) = s.lease("writes").await;
    let data = s.bytes(100_000);
    let d = Digest::of(&data);
    assert!(!s.has_blob(&d).await, "{n}: a fresh blob is present");

    let wrong = Digest::of(b"not these bytes");
    let r = try_write(leased.as_ref(), &s.unique("ref"), &data, None, &wrong).await;
    fails_with(
        r,
        Class::FailedPrecondition,
        &format!("{n}: a commit under the wrong digest"),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(Chunk::Data(data.clone())).await.unwrap();
    tx.send(Chunk::Commit(d.clone())).await.unwrap();
    drop(tx);
    let r = leased
        .write(&s.unique("ref"), data.len() as u64 + 1, None, rx)
        .await;
    fails_with(
        r,
        Class::FailedPrecondition,
        &format!("{n}: a commit short of its total"),
    );
    assert!(!s.has_blob(&d).await, "{n}: a refused commit left its blob");

    let written = write(leased.as_ref(), &s.unique("ref"), &data).await;
    assert_eq!(written, Written::Committed, "{n}");
    let info = s.client.info(&d).await.unwrap().expect("a committed blob");
    assert_eq!(
        info.size,
        data.len() as u64,
        "{n}: size of a committed blob"
    );
    assert_eq!(
        s.client.read(&d, 0, 0).await.unwrap(),
        data,
        "{n}: read back"
    );
    let part = s.client.read(&d, 1000, 5000).await.unwrap();
    assert_eq!(part, data[1000..6000], "{n}: a read at an offset");
    let held = s.client.lease_content(&lease).await.unwrap();
    assert!(
        held.contains(&d.to_string()),
        "{n}: a blob written under a lease is not in it"
    );

    // Present: `AlreadyExists`. Declared up front, the blob joins the writer's lease all the
    // same; found at the commit, it does not.
    for (declared, joins) in [(Some(&d), true), (None, false)] {
        let (other, in_other) = s.lease("writes-again").await;
        let again = try_write(in_other.as_ref(), &s.unique("ref"), &data, declared, &d).await;
        let when = if declared.is_some() {
            "declared"
        } else {
            "at commit"
        };
        assert_eq!(
            again.unwrap(),
            Written::AlreadyExists,
            "{n}: present, digest {when}"
        );
        let held = s.client.lease_content(&other).await.unwrap();
        assert_eq!(
            held.contains(&d.to_string()),
            joins,
            "{n}: a present blob written again (digest {when}) under a lease: {held:?}"
        );
        s.client.delete_lease(&other, false).await.unwrap();
    }

    let missing = Digest::of(&s.bytes(10));
    fails_with(
        s.client.read(&missing, 0, 0).await,
        Class::NotFound,
        &format!("{n}: a read of a missing blob"),
    );
    s.client.delete_lease(&lease, true).await.unwrap();
    assert!(
        !s.has_blob(&d).await,
        "{n}: a blob only a deleted lease held outlived a collection"
    );
}

/// `(key, value)` pairs.
type Pairs<'a> = &'a [(&'a str, &'a str)];

/// Labels are set key by key, the others kept; an empty value removes a label.
pub async fn blob_labels(s: &Subject<'_>) {
    let n = &s.name;
    let (lease, leased) = s.lease("labels").await;
    let data = s.bytes(1000);
    let d = Digest::of(&data);
    write(leased.as_ref(), &s.unique("ref"), &data).await;
    // What is set, and the labels then.
    let steps: [(Pairs, Pairs); 3] = [
        (
            &[("example.com/a", "1"), ("example.com/b", "2")],
            &[("example.com/a", "1"), ("example.com/b", "2")],
        ),
        (
            &[("example.com/b", "3")],
            &[("example.com/a", "1"), ("example.com/b", "3")],
        ),
        (&[("example.com/a", "")], &[("example.com/b", "3")]),
    ];
    for (set, then) in steps {
        s.client.set_blob_labels(&d, &labels(set)).await.unwrap();
        let found = s.client.info(&d).await.unwrap().expect("the blob").labels;
        assert_eq!(
            found,
            label_map(then),
            "{n}: the labels once {set:?} is set"
        );
    }
    let missing = Digest::of(&s.bytes(10));
    let r = s
        .client
        .set_blob_labels(&missing, &labels(&[("example.com/a", "1")]))
        .await;
    fails_with(
        r,
        Class::NotFound,
        &format!("{n}: labels of a missing blob"),
    );
    s.client.delete_lease(&lease, false).await.unwrap();
}

/// A write that stops before its commit leaves its ingest, listed by its `airlift-` ref until
/// it is aborted; aborting what is not there is fine.
pub async fn abandoned_ingests(s: &Subject<'_>) {
    let n = &s.name;
    let (lease, leased) = s.lease("ingests").await;
    let reference = format!("airlift-{}", s.unique("ingest"));
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(Chunk::Data(s.bytes(5000))).await.unwrap();
    drop(tx);
    let written = leased.write(&reference, 10_000, None, rx).await.unwrap();
    assert_eq!(written, Written::Abandoned, "{n}");
    let refs = s.client.ingest_refs().await.unwrap();
    assert!(
        refs.contains(&reference),
        "{n}: {reference} not among {refs:?}"
    );
    s.client.abort(&reference).await.unwrap();
    let refs = s.client.ingest_refs().await.unwrap();
    assert!(
        !refs.contains(&reference),
        "{n}: {reference} still among {refs:?} once aborted"
    );
    s.client.abort(&reference).await.unwrap();
    s.client.delete_lease(&lease, false).await.unwrap();
}

/// A blob on disk in the content root is claimed into the namespace by digest alone, with its
/// labels, joining the lease of the claim; claimed again it keeps its labels and joins the
/// second claim's lease; a blob that is not
/// on disk cannot be claimed (the commit at its size finds an empty ingest: `OutOfRange`).
pub async fn claims(s: &Subject<'_>) {
    let n = &s.name;
    let root = s.client.content_root().await.unwrap();
    let root = ContentRoot::new(root.unwrap_or_else(|| panic!("{n}: no content root")));
    let (lease, leased) = s.lease("claims").await;
    let data = s.bytes(70_000);
    let d = Digest::of(&data);
    std::fs::create_dir_all(root.blobs()).unwrap();
    std::fs::write(root.blob(&d), &data).unwrap();
    let claimed = labels(&[("example.com/claimed", "1")]);
    let size = data.len() as u64;
    let first = leased.claim(&s.unique("ref"), &d, size, &claimed).await;
    assert!(first.unwrap(), "{n}: a blob on disk was not claimed");
    let info = s.client.info(&d).await.unwrap().expect("a claimed blob");
    assert_eq!(info.size, size, "{n}");
    assert_eq!(
        info.labels.get("example.com/claimed").map(String::as_str),
        Some("1"),
        "{n}"
    );
    let held = s.client.lease_content(&lease).await.unwrap();
    assert!(
        held.contains(&d.to_string()),
        "{n}: a claimed blob is not in the claim's lease"
    );

    let other = labels(&[("example.com/claimed", "2")]);
    let (second, in_second) = s.lease("claims-again").await;
    let again = in_second.claim(&s.unique("ref"), &d, size, &other).await;
    assert!(!again.unwrap(), "{n}: a blob claimed twice");
    let held = s.client.lease_content(&second).await.unwrap();
    assert_eq!(
        held,
        vec![d.to_string()],
        "{n}: a blob claimed twice did not join the second lease"
    );
    let info = s.client.info(&d).await.unwrap().expect("a claimed blob");
    assert_eq!(
        info.labels.get("example.com/claimed").map(String::as_str),
        Some("1"),
        "{n}: a second claim changed the labels"
    );

    let absent = s.bytes(1000);
    let a = Digest::of(&absent);
    let r = leased
        .claim(&s.unique("ref"), &a, absent.len() as u64, &Labels::new())
        .await;
    fails_with(
        r,
        Class::OutOfRange,
        &format!("{n}: a claim of a blob not on disk"),
    );
    assert!(!s.has_blob(&a).await, "{n}");

    s.client.delete_lease(&lease, true).await.unwrap();
    assert!(
        s.has_blob(&d).await,
        "{n}: a blob the second claim's lease holds went with the first"
    );
    s.client.delete_lease(&second, true).await.unwrap();
    assert!(
        !s.has_blob(&d).await,
        "{n}: a claimed blob outlived its leases"
    );
}
