//! What airlift relies on containerd to do, written once and run against every implementation
//! of [`crate::containerd::Containerd`]: the fake in the unit tests, airlift's gRPC client against real containerd
//! 2.x and 1.7 end to end (`integration/tests/behaviour.rs`). Where the fake models containerd,
//! this suite is the model's specification, so the fake cannot drift from the real thing.
//!
//! - [`content`] — blobs: verified commits, `AlreadyExists` for present blobs, reads, labels
//!   (an empty value removes one), abandoned ingests listed and aborted, and blobs on disk in the
//!   content root claimed into the namespace by digest alone;
//! - [`gc`] — the garbage collector: leases holding blobs (added, removed, expiring), image
//!   records holding their targets, `containerd.io/gc.ref.content.*` and
//!   `containerd.io/gc.ref.snapshot.<snapshotter>` labels holding what they name — and nothing
//!   holding what no lease, record or label reaches once a synchronous collection has run;
//! - [`snapshots`] — snapshots prepared on committed parents and committed under a name, held by
//!   the lease they were made under (and their parents with them), a committed target
//!   (`containerd.io/snapshot.ref`) joining the lease of whoever prepares it again, and the
//!   differ answering a layer's diff ID;
//! - [`images`] — image records created, pointed elsewhere and labelled, filtered, and the
//!   `/images/create`, `/images/update`, `/images/delete` events with their labels as
//!   [`crate::containerd::Subscriber::subscribe`] reports them; what containerd says of itself.
//!
//! Each check makes its own leases, blobs and images, under names no other check uses, in the
//! handle's namespace; a collection is forced by deleting a lease with `sync`. Pulls (the
//! transfer service) need a registry and are left to the end-to-end pull tests.

pub mod content;
pub mod gc;
pub mod images;
pub mod snapshots;

use crate::containerd::{
    Chunk, Client, ContainerdError, Content, Events, ImageRecord, Labels, SnapshotInfo, Written,
};
use crate::digest::Digest;
use crate::error::Class;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// What other clients of containerd do that airlift never does itself, for the checks that need
/// it done.
pub trait OtherClient: Send + Sync {
    /// Deletes an image record, as `ctr images rm` does.
    fn delete_image(&self, name: &str);
}

/// The implementation under test and what the checks share.
pub struct Subject<'a> {
    /// The handle, in a namespace of the suite's own, under no lease.
    pub client: Client,
    /// Another client of the same containerd.
    pub other: &'a dyn OtherClient,
    /// The snapshotter the snapshot checks use.
    pub snapshotter: String,
    /// What is under test, for messages (`fake`, `containerd 2.x`).
    pub name: String,
    /// Names of this run (lease ids, image names, refs) start with it.
    prefix: String,
    /// Numbers the names.
    counter: AtomicU64,
}

impl<'a> Subject<'a> {
    /// A subject: `client` (under no lease), `other`, the snapshotter, and a name for messages.
    pub fn new(
        client: Client,
        other: &'a dyn OtherClient,
        snapshotter: &str,
        name: &str,
    ) -> Subject<'a> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Subject {
            client: client.with_lease(None),
            other,
            snapshotter: snapshotter.to_string(),
            name: name.to_string(),
            prefix: format!("behaviour-{nanos:x}"),
            counter: AtomicU64::new(0),
        }
    }

    /// A name no other use in this run has: `behaviour-<run>-<what>-<n>`.
    pub fn unique(&self, what: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{what}-{n}", self.prefix)
    }

    /// Fresh bytes no other blob of this run has.
    pub fn bytes(&self, len: usize) -> Vec<u8> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut data = super::conformance::bytes(len, n ^ self.prefix.len() as u64);
        data.extend_from_slice(self.unique("blob").as_bytes());
        data
    }

    /// A new lease, and a handle of the same connection under it.
    pub async fn lease(&self, what: &str) -> (String, Client) {
        let id = self.unique(what);
        self.client
            .create_lease(&id, Default::default(), None)
            .await
            .unwrap_or_else(|e| panic!("{}: creating lease {id}: {e}", self.name));
        let leased = self.client.with_lease(Some(&id));
        (id, leased)
    }

    /// Runs containerd's garbage collection to its end (a lease created and deleted with `sync`).
    pub async fn collect(&self) {
        let id = self.unique("collect");
        let c = &self.client;
        c.create_lease(&id, Default::default(), None)
            .await
            .and(c.delete_lease(&id, true).await)
            .unwrap_or_else(|e| panic!("{}: collecting garbage: {e}", self.name));
    }

    /// The snapshot `key` of the suite's snapshotter, if there is one.
    pub async fn snapshot(&self, key: &str) -> Option<SnapshotInfo> {
        self.client
            .stat_snapshot(&self.snapshotter, key)
            .await
            .unwrap_or_else(|e| panic!("{}: stat snapshot {key}: {e}", self.name))
    }

    /// The image record `name`, if there is one.
    pub async fn image(&self, name: &str) -> Option<ImageRecord> {
        self.client
            .get_image(name)
            .await
            .unwrap_or_else(|e| panic!("{}: get image {name}: {e}", self.name))
    }

    /// Whether the namespace has the blob.
    pub async fn has_blob(&self, digest: &Digest) -> bool {
        self.client
            .info(digest)
            .await
            .unwrap_or_else(|e| panic!("{}: info {digest}: {e}", self.name))
            .is_some()
    }
}

/// Labels from `(key, value)` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Labels from `(key, value)` pairs, as a blob's, a record's or an event's info holds them.
pub fn label_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    labels(pairs).into_iter().collect()
}

/// Streams `data` into the namespace through `client` (under its lease), with its digest known
/// up front; returns how the write ended.
pub async fn write(client: &dyn Content, reference: &str, data: &[u8]) -> Written {
    let digest = Digest::of(data);
    try_write(client, reference, data, Some(&digest), &digest)
        .await
        .unwrap_or_else(|e| panic!("writing {digest}: {e}"))
}

/// Streams `data` in two chunks and commits it expecting `commit`, with `want` declared up front.
pub async fn try_write(
    client: &dyn Content,
    reference: &str,
    data: &[u8],
    want: Option<&Digest>,
    commit: &Digest,
) -> Result<Written, ContainerdError> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let half = data.len() / 2;
    for chunk in [
        Chunk::Data(data[..half].to_vec()),
        Chunk::Data(data[half..].to_vec()),
        Chunk::Commit(commit.clone()),
    ] {
        tx.send(chunk).await.expect("an open channel");
    }
    drop(tx);
    client.write(reference, data.len() as u64, want, rx).await
}

/// Asserts that `result` failed with `class`.
pub fn fails_with<T: std::fmt::Debug>(
    result: Result<T, ContainerdError>,
    class: Class,
    what: &str,
) {
    match result {
        Err(e) => assert_eq!(e.class(), class, "{what}: {e}"),
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected {class:?}"),
    }
}

/// Runs every check against `subject`.
pub async fn run(subject: &Subject<'_>) {
    images::introspection(subject).await;
    content::verified_writes(subject).await;
    content::blob_labels(subject).await;
    content::abandoned_ingests(subject).await;
    content::claims(subject).await;
    gc::leases_hold_content(subject).await;
    gc::expired_leases_go(subject).await;
    gc::labels_hold_what_they_name(subject).await;
    snapshots::leases_hold_snapshots(subject).await;
    snapshots::targets_join_the_lease(subject).await;
    snapshots::the_differ_answers_diff_ids(subject).await;
    images::records(subject).await;
    images::events(subject).await;
}

/// Subscribes and waits until the subscription is live: containerd registers it only on its
/// own time, and events published before are not delivered.
pub async fn live_subscription(subject: &Subject<'_>, topics: &[&str]) -> Events {
    use tokio_stream::StreamExt;
    let c = &subject.client;
    let mut events = c
        .subscribe(topics)
        .await
        .unwrap_or_else(|e| panic!("{}: subscribe: {e}", subject.name));
    let probe = subject.unique("probe");
    for _ in 0..100 {
        images::put(subject, &probe, &[]).await;
        let next = tokio::time::timeout(std::time::Duration::from_millis(200), events.next());
        if let Ok(Some(Ok(event))) = next.await {
            if event.image() == Some(probe.as_str()) {
                // Later events of the probe (sent before the subscription was seen live) are
                // skipped by the checks, which look for their own names.
                return events;
            }
        }
    }
    panic!(
        "{}: the subscription never delivered an event",
        subject.name
    );
}
