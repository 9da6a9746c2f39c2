//! containerd's leases service: what keeps content and snapshots from the garbage collector
//! while airlift works with them, and what holds an archive's blobs for as long as it is kept.

use super::{Labels, Result};
use std::time::Duration;

/// The lease resource type of snapshots of `snapshotter`.
pub fn snapshot_resource(snapshotter: &str) -> String {
    format!("snapshots/{snapshotter}")
}

/// The leases service. A lease holds the blobs and snapshots added to it (and, through their
/// `containerd.io/gc.ref.*` labels and parents, what they refer to) until it is deleted or its
/// `containerd.io/gc.expire` time has passed.
#[async_trait::async_trait]
pub trait Leases: Send + Sync {
    /// Creates a lease (one that exists is fine); `expire` sets `containerd.io/gc.expire`.
    async fn create_lease(&self, id: &str, labels: Labels, expire: Option<Duration>) -> Result<()>;

    /// Deletes a lease (one that is not there is fine); with `sync`, containerd's garbage
    /// collection runs to its end before this returns (what only the lease held is gone).
    async fn delete_lease(&self, id: &str, sync: bool) -> Result<()>;

    /// The ids of the leases matching a filter (`id==x`, `id~=^airlift-`).
    async fn list_leases(&self, filter: &str) -> Result<Vec<String>>;

    /// The blob digests a lease holds.
    async fn lease_content(&self, id: &str) -> Result<Vec<String>>;

    /// Adds (`add`) or removes a blob from a lease.
    async fn lease_resource(&self, id: &str, digest: &str, add: bool) -> Result<()>;

    /// The snapshots of `snapshotter` a lease holds.
    async fn lease_snapshots(&self, id: &str, snapshotter: &str) -> Result<Vec<String>>;

    /// Adds (`add`) or removes a snapshot of `snapshotter` from a lease.
    async fn lease_snapshot(&self, id: &str, snapshotter: &str, key: &str, add: bool)
        -> Result<()>;
}
