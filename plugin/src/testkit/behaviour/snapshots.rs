//! Snapshots and the differ: what unpacking relies on.

use super::{fails_with, label_map, labels, write, Subject};
use crate::containerd::{Descriptor, Labels, SnapshotKind};
use crate::digest::Digest;
use crate::error::Class;
use std::io::Write;

/// Snapshots prepared and committed under a lease are held by it (a committed one's parent
/// with it) until it goes; a committed snapshot has the labels of its commit, not those of its
/// prepare; a prepare on a missing parent, a key used twice and a name committed
/// twice are refused, as is removing a snapshot with a child; removing a snapshot, or one that
/// is not there, is fine.
pub async fn leases_hold_snapshots(s: &Subject<'_>) {
    let n = &s.name;
    let sn = &s.snapshotter;
    let (lease, leased) = s.lease("snapshots").await;
    let prepared = labels(&[("example.com/layer", "1")]);

    let key = s.unique("active");
    let mounts = leased
        .prepare_snapshot(sn, &key, "", &prepared)
        .await
        .unwrap();
    assert!(!mounts.is_empty(), "{n}: a prepared snapshot has no mounts");
    let info = s.snapshot(&key).await.expect("a prepared snapshot");
    assert_eq!(
        (info.kind, info.parent.as_str()),
        (SnapshotKind::Active, ""),
        "{n}"
    );
    assert_eq!(info.labels, label_map(&[("example.com/layer", "1")]), "{n}");
    let held = s.client.lease_snapshots(&lease, sn).await.unwrap();
    assert_eq!(
        held,
        vec![key.clone()],
        "{n}: a snapshot prepared under a lease"
    );

    let bottom = s.unique("bottom");
    let committed = labels(&[("example.com/committed", "2")]);
    leased
        .commit_snapshot(sn, &bottom, &key, &committed)
        .await
        .unwrap();
    assert!(
        s.snapshot(&key).await.is_none(),
        "{n}: the active snapshot outlived its commit"
    );
    let info = s.snapshot(&bottom).await.expect("a committed snapshot");
    assert_eq!(info.kind, SnapshotKind::Committed, "{n}");
    assert_eq!(info.name, bottom, "{n}");
    assert_eq!(
        info.labels,
        label_map(&[("example.com/committed", "2")]),
        "{n}: a committed snapshot has its commit's labels only"
    );
    let held = s.client.lease_snapshots(&lease, sn).await.unwrap();
    assert_eq!(
        held,
        vec![bottom.clone()],
        "{n}: what the lease holds once committed"
    );

    let key = s.unique("active");
    leased
        .prepare_snapshot(sn, &key, &bottom, &Labels::new())
        .await
        .unwrap();
    let r = leased
        .prepare_snapshot(sn, &key, &bottom, &Labels::new())
        .await;
    fails_with(
        r,
        Class::AlreadyExists,
        &format!("{n}: a key prepared twice"),
    );
    let top = s.unique("top");
    leased
        .commit_snapshot(sn, &top, &key, &Labels::new())
        .await
        .unwrap();
    let info = s.snapshot(&top).await.expect("a committed snapshot");
    assert_eq!(info.parent, bottom, "{n}: a committed snapshot's parent");

    let key = s.unique("active");
    leased
        .prepare_snapshot(sn, &key, "", &Labels::new())
        .await
        .unwrap();
    let r = leased.commit_snapshot(sn, &top, &key, &Labels::new()).await;
    fails_with(
        r,
        Class::AlreadyExists,
        &format!("{n}: a name committed twice"),
    );
    s.client.remove_snapshot(sn, &key).await.unwrap();
    assert!(s.snapshot(&key).await.is_none(), "{n}: a removed snapshot");
    s.client.remove_snapshot(sn, &key).await.unwrap();
    let r = leased
        .prepare_snapshot(
            sn,
            &s.unique("active"),
            &s.unique("missing"),
            &Labels::new(),
        )
        .await;
    fails_with(
        r,
        Class::NotFound,
        &format!("{n}: a prepare on a missing parent"),
    );

    let r = s.client.remove_snapshot(sn, &bottom).await;
    fails_with(
        r,
        Class::FailedPrecondition,
        &format!("{n}: removing a parent"),
    );

    // The parent of a held snapshot is held with it.
    s.client
        .lease_snapshot(&lease, sn, &bottom, false)
        .await
        .unwrap();
    s.collect().await;
    let stat = |name: String| async move { s.snapshot(&name).await };
    assert!(
        stat(bottom.clone()).await.is_some(),
        "{n}: the parent of a leased snapshot was collected"
    );
    assert!(stat(top.clone()).await.is_some(), "{n}");
    s.client.delete_lease(&lease, true).await.unwrap();
    assert!(
        stat(top).await.is_none(),
        "{n}: a snapshot outlived its lease"
    );
    assert!(
        stat(bottom).await.is_none(),
        "{n}: a parent outlived its child's lease"
    );
}

/// A prepare naming a target chain already committed (`containerd.io/snapshot.ref`) is
/// `AlreadyExists`, and the target joins the preparing lease all the same: what another import
/// committed is then held by this one's lease too. So does a commit under a name already
/// committed (`AlreadyExists`).
pub async fn targets_join_the_lease(s: &Subject<'_>) {
    let n = &s.name;
    let sn = &s.snapshotter;
    let (first, in_first) = s.lease("target-first").await;
    let chain = s.unique("chain");
    let key = s.unique("active");
    let target = labels(&[("containerd.io/snapshot.ref", &chain)]);
    in_first
        .prepare_snapshot(sn, &key, "", &target)
        .await
        .unwrap();
    in_first
        .commit_snapshot(sn, &chain, &key, &Labels::new())
        .await
        .unwrap();

    let (second, in_second) = s.lease("target-second").await;
    let r = in_second
        .prepare_snapshot(sn, &s.unique("active"), "", &target)
        .await;
    fails_with(
        r,
        Class::AlreadyExists,
        &format!("{n}: a prepare of a committed target"),
    );
    let held = s.client.lease_snapshots(&second, sn).await.unwrap();
    assert_eq!(
        held,
        vec![chain.clone()],
        "{n}: a committed target did not join the lease"
    );
    s.client.delete_lease(&first, true).await.unwrap();
    let kept = s.snapshot(&chain).await;
    assert!(
        kept.is_some(),
        "{n}: a target the second lease holds went with the first"
    );

    // A commit under that name again: `AlreadyExists`, and the name joins the lease.
    let (third, in_third) = s.lease("target-third").await;
    let key = s.unique("active");
    let none = Labels::new();
    in_third
        .prepare_snapshot(sn, &key, "", &none)
        .await
        .unwrap();
    let r = in_third.commit_snapshot(sn, &chain, &key, &none).await;
    fails_with(
        r,
        Class::AlreadyExists,
        &format!("{n}: a second commit of a name"),
    );
    let held = s.client.lease_snapshots(&third, sn).await.unwrap();
    assert!(
        held.contains(&chain),
        "{n}: a name committed again did not join the lease: {held:?}"
    );
    in_third.remove_snapshot(sn, &key).await.unwrap();

    // Taken out of a lease and added to another by hand.
    s.client
        .lease_snapshot(&second, sn, &chain, false)
        .await
        .unwrap();
    s.client
        .lease_snapshot(&third, sn, &chain, false)
        .await
        .unwrap();
    let (fourth, _) = s.lease("target-fourth").await;
    s.client
        .lease_snapshot(&fourth, sn, &chain, true)
        .await
        .unwrap();
    s.client.delete_lease(&second, true).await.unwrap();
    s.client.delete_lease(&third, true).await.unwrap();
    assert!(
        s.snapshot(&chain).await.is_some(),
        "{n}: a snapshot added to a lease was collected"
    );
    s.client.delete_lease(&fourth, true).await.unwrap();
    assert!(
        s.snapshot(&chain).await.is_none(),
        "{n}: a snapshot outlived its lease"
    );
}

/// A gzip layer of one file.
fn layer(s: &Subject<'_>) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let body = s.unique("file");
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "behaviour.txt", body.as_bytes())
        .unwrap();
    let plain = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    (gz.finish().unwrap(), Digest::of(&plain))
}

/// The differ applies a layer of the namespace onto an active snapshot's mounts and answers the
/// digest of its uncompressed tar (its diff ID); a layer the namespace lacks is `NotFound`.
pub async fn the_differ_answers_diff_ids(s: &Subject<'_>) {
    let n = &s.name;
    let sn = &s.snapshotter;
    let (lease, leased) = s.lease("differ").await;
    let (data, diff_id) = layer(s);
    write(leased.as_ref(), &s.unique("ref"), &data).await;
    let descriptor = Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: Digest::of(&data),
        size: data.len() as i64,
        annotations: Default::default(),
    };
    let key = s.unique("active");
    let mounts = leased
        .prepare_snapshot(sn, &key, "", &Labels::new())
        .await
        .unwrap();
    let applied = leased.apply_diff(&descriptor, &mounts).await.unwrap();
    assert_eq!(applied, diff_id, "{n}: the differ's diff ID");
    leased
        .commit_snapshot(sn, &diff_id.to_string(), &key, &Labels::new())
        .await
        .unwrap();

    let key = s.unique("active");
    let mounts = leased
        .prepare_snapshot(sn, &key, "", &Labels::new())
        .await
        .unwrap();
    let absent = Descriptor {
        digest: Digest::of(&s.bytes(100)),
        ..descriptor
    };
    let r = leased.apply_diff(&absent, &mounts).await;
    fails_with(
        r,
        Class::NotFound,
        &format!("{n}: a layer the namespace lacks"),
    );
    s.client.delete_lease(&lease, true).await.unwrap();
    let gone = s.snapshot(&diff_id.to_string()).await;
    assert!(gone.is_none(), "{n}: an unpacked layer outlived its lease");
}
