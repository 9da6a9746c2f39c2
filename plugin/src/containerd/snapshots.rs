//! containerd's snapshots and diff services as unpacking uses them: snapshots prepared on a
//! committed parent, a layer applied into one by containerd's differ, committed under its chain
//! ID.

use super::{Labels, Result};
use crate::digest::Digest;
use std::collections::{BTreeMap, HashMap};

/// A content descriptor, as the differ is handed a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type (the differ decompresses by it).
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size.
    pub size: i64,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A mount a snapshotter answers for an active snapshot, handed back to the differ unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The filesystem type (`bind`, `overlay`, …).
    pub kind: String,
    /// The source.
    pub source: String,
    /// The target (usually empty).
    pub target: String,
    /// Mount options.
    pub options: Vec<String>,
}

/// Whether a snapshot can still be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// Prepared, being written (an extraction in progress, a container's root).
    Active,
    /// Committed: a layer chain, read-only.
    Committed,
    /// A read-only view, or a kind airlift does not know.
    Other,
}

/// A snapshot's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its name (a committed layer chain is named by its chain ID).
    pub name: String,
    /// Its parent's name, empty for none.
    pub parent: String,
    /// Active or committed.
    pub kind: SnapshotKind,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

/// The snapshots service of one snapshotter at a time, and the differ that applies layers into
/// its snapshots. Under a lease, what is prepared or committed joins it.
#[async_trait::async_trait]
pub trait Snapshots: Send + Sync {
    /// Prepares an active snapshot `key` on top of the committed `parent` (empty: none) in
    /// `snapshotter`, with `labels`, and returns its mounts. Under a lease the snapshot joins
    /// it. `AlreadyExists` when the key exists, or when `labels` name a target chain
    /// (`containerd.io/snapshot.ref`) that is committed already — which then joins the lease
    /// all the same.
    async fn prepare_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: &Labels,
    ) -> Result<Vec<Mount>>;

    /// Commits the active snapshot `key` as `name`, with `labels` (those `key` was prepared with
    /// are not kept); under a lease `name` joins it. `AlreadyExists` when `name` is committed
    /// already (it joins the lease all the same).
    async fn commit_snapshot(
        &self,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: &Labels,
    ) -> Result<()>;

    /// A snapshot's metadata, or `None` when `snapshotter` has no snapshot `key`.
    async fn stat_snapshot(&self, snapshotter: &str, key: &str) -> Result<Option<SnapshotInfo>>;

    /// Removes a snapshot (one that is not there is fine; one that is a parent is
    /// `FailedPrecondition`).
    async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()>;

    /// Has containerd's differ apply the layer `layer` (a blob of the namespace) onto `mounts`;
    /// returns the digest of the uncompressed tar it applied (the layer's diff ID).
    async fn apply_diff(&self, layer: &Descriptor, mounts: &[Mount]) -> Result<Digest>;
}
