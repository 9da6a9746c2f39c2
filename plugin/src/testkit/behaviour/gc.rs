//! The garbage collector: what leases, image records and `containerd.io/gc.ref.*` labels hold.

use super::{fails_with, labels, write, Subject};
use crate::containerd::{ImageTarget, Labels};
use crate::digest::Digest;
use crate::error::Class;
use std::time::Duration;

/// A blob written under `lease` (through `leased`).
async fn blob(s: &Subject<'_>, leased: &crate::containerd::Client, len: usize) -> Digest {
    let data = s.bytes(len);
    write(leased.as_ref(), &s.unique("ref"), &data).await;
    Digest::of(&data)
}

/// A lease holds what was written under it, and what was added to it, until it goes or the
/// blob is taken out of it; deleting another lease (with a synchronous collection) leaves it;
/// a blob nothing holds is gone after a collection.
pub async fn leases_hold_content(s: &Subject<'_>) {
    let n = &s.name;
    let (one, in_one) = s.lease("hold-one").await;
    let (two, in_two) = s.lease("hold-two").await;
    let a = blob(s, &in_one, 3000).await;
    let b = blob(s, &in_two, 3000).await;
    let loose = blob(s, &s.client, 3000).await;
    s.client.delete_lease(&two, true).await.unwrap();
    assert!(
        s.has_blob(&a).await,
        "{n}: deleting another lease took a leased blob"
    );
    assert!(!s.has_blob(&b).await, "{n}: a blob outlived its only lease");
    assert!(
        !s.has_blob(&loose).await,
        "{n}: a blob no lease held outlived a collection"
    );

    // Added to a lease while another holds it; taken out of the first.
    let (three, in_three) = s.lease("hold-three").await;
    let c = blob(s, &in_three, 3000).await;
    s.client
        .lease_resource(&one, &c.to_string(), true)
        .await
        .unwrap();
    s.client.delete_lease(&three, true).await.unwrap();
    assert!(
        s.has_blob(&c).await,
        "{n}: a blob added to a lease was collected"
    );
    s.client
        .lease_resource(&one, &a.to_string(), false)
        .await
        .unwrap();
    s.collect().await;
    assert!(
        !s.has_blob(&a).await,
        "{n}: a blob taken out of its lease outlived a collection"
    );
    assert!(s.has_blob(&c).await, "{n}");
    let held = s.client.lease_content(&one).await.unwrap();
    assert_eq!(held, vec![c.to_string()], "{n}: what the lease holds");

    // Listing and the idempotent calls.
    let listed = s.client.list_leases(&format!("id=={one}")).await.unwrap();
    assert_eq!(listed, vec![one.clone()], "{n}");
    let listed = s
        .client
        .list_leases(&format!("id~=^{}-hold-", s.prefix))
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![one.clone()],
        "{n}: leases by a regular expression"
    );
    s.client
        .create_lease(&one, Default::default(), None)
        .await
        .unwrap();
    assert!(
        s.has_blob(&c).await,
        "{n}: creating a lease again emptied it"
    );
    s.client.delete_lease(&one, true).await.unwrap();
    s.client.delete_lease(&one, true).await.unwrap();
    assert!(!s.has_blob(&c).await, "{n}: a blob outlived its lease");
    fails_with(
        s.client.lease_content(&one).await,
        Class::NotFound,
        &format!("{n}: the blobs of a deleted lease"),
    );
    let r = s.client.lease_resource(&one, &c.to_string(), true).await;
    fails_with(
        r,
        Class::NotFound,
        &format!("{n}: a blob added to a deleted lease"),
    );
}

/// A lease whose `containerd.io/gc.expire` time has passed is deleted at the next collection,
/// and what it alone held goes with it.
pub async fn expired_leases_go(s: &Subject<'_>) {
    let n = &s.name;
    let id = s.unique("expiring");
    s.client
        .create_lease(&id, Default::default(), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let d = blob(s, &s.client.with_lease(Some(&id)), 2000).await;
    s.collect().await;
    assert!(
        s.has_blob(&d).await,
        "{n}: a lease that had not expired let its blob go"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    s.collect().await;
    let listed = s.client.list_leases(&format!("id=={id}")).await.unwrap();
    assert!(listed.is_empty(), "{n}: an expired lease is still listed");
    assert!(
        !s.has_blob(&d).await,
        "{n}: the blob of an expired lease outlived a collection"
    );
}

/// An image record holds its target; the target's `containerd.io/gc.ref.content.*` labels hold
/// the blobs they name and its `containerd.io/gc.ref.snapshot.<snapshotter>` label the snapshot
/// (and its parents); with a label removed, or the record deleted, what it held goes.
pub async fn labels_hold_what_they_name(s: &Subject<'_>) {
    let n = &s.name;
    let sn = &s.snapshotter;
    let (lease, leased) = s.lease("gc-labels").await;
    let child = blob(s, &leased, 2000).await;
    let other = blob(s, &leased, 2000).await;
    let data = s.bytes(500);
    write(leased.as_ref(), &s.unique("ref"), &data).await;
    let top = Digest::of(&data);
    let ref_child = "containerd.io/gc.ref.content.l.0";
    let ref_snapshot = format!("containerd.io/gc.ref.snapshot.{sn}");
    s.client
        .set_blob_labels(&top, &labels(&[(ref_child, &child.to_string())]))
        .await
        .unwrap();

    // A committed snapshot on a committed parent.
    let parent = s.unique("parent");
    let chain = s.unique("chain");
    for (name, below) in [(&parent, ""), (&chain, parent.as_str())] {
        let key = s.unique("active");
        leased
            .prepare_snapshot(sn, &key, below, &Labels::new())
            .await
            .unwrap();
        leased
            .commit_snapshot(sn, name, &key, &Labels::new())
            .await
            .unwrap();
    }
    s.client
        .set_blob_labels(&top, &labels(&[(&ref_snapshot, &chain)]))
        .await
        .unwrap();

    let image = ImageTarget {
        name: format!("example.com/{}:gc", s.unique("image")),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: top.to_string(),
        size: data.len() as i64,
        annotations: Default::default(),
    };
    s.client.put_image(&image, &Labels::new()).await.unwrap();
    s.client.delete_lease(&lease, true).await.unwrap();
    let committed = |name: String| async move { s.snapshot(&name).await.is_some() };
    assert!(
        s.has_blob(&top).await,
        "{n}: an image's target was collected"
    );
    assert!(
        s.has_blob(&child).await,
        "{n}: a blob a gc.ref.content label names was collected"
    );
    assert!(
        !s.has_blob(&other).await,
        "{n}: a blob nothing names outlived a collection"
    );
    assert!(
        committed(chain.clone()).await,
        "{n}: a snapshot a gc.ref.snapshot label names was collected"
    );
    assert!(
        committed(parent.clone()).await,
        "{n}: the parent of a held snapshot was collected"
    );

    s.client
        .set_blob_labels(&top, &labels(&[(ref_child, "")]))
        .await
        .unwrap();
    s.collect().await;
    assert!(
        !s.has_blob(&child).await,
        "{n}: a blob whose gc.ref label was removed outlived a collection"
    );
    assert!(committed(chain.clone()).await, "{n}");
    s.client
        .set_blob_labels(&top, &labels(&[(&ref_snapshot, "")]))
        .await
        .unwrap();
    s.collect().await;
    assert!(
        !committed(chain).await,
        "{n}: a snapshot whose gc.ref label was removed outlived a collection"
    );
    assert!(
        !committed(parent).await,
        "{n}: the parent of a collected snapshot outlived it"
    );

    s.other.delete_image(&image.name);
    s.collect().await;
    assert!(
        !s.has_blob(&top).await,
        "{n}: the target of a deleted image outlived a collection"
    );
}
