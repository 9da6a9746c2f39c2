//! containerd: the operations airlift asks of containerd — leases, images, blob labels, claims,
//! streamed writes, introspection — as one trait, with two implementations: [`grpc::Grpc`], the
//! client of containerd's API socket, and [`fake::Fake`], an in-memory containerd that records
//! every call (and can be told to fail some), for unit tests of everything above it.
//!
//! Every call is made in one namespace and, when the handle carries one, under one lease (what
//! containerd's clients send as `containerd-namespace` and `containerd-lease`):
//! [`Containerd::with_lease`] gives a handle of the same connection under another lease.

pub mod fake;
pub mod grpc;

use crate::digest::Digest;
use crate::error::Class;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use grpc::Grpc;

/// A handle on containerd: one connection (or fake), one namespace, optionally one lease.
pub type Client = Arc<dyn Containerd>;

/// A failed containerd call.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// The socket could not be reached.
    #[error("containerd is not reachable at {address}: {cause}")]
    Unreachable {
        /// The socket.
        address: PathBuf,
        /// Why, each cause said once.
        cause: String,
    },
    /// A call failed.
    #[error("containerd {op}: {message}")]
    Call {
        /// What airlift asked for (and of what).
        op: String,
        /// containerd's error class.
        class: Class,
        /// containerd's message.
        message: String,
    },
}

impl ContainerdError {
    /// A failed call of class `class`.
    pub fn call(
        op: impl Into<String>,
        class: Class,
        message: impl Into<String>,
    ) -> ContainerdError {
        ContainerdError::Call {
            op: op.into(),
            class,
            message: message.into(),
        }
    }

    /// A failed call, from the gRPC status containerd answered.
    pub fn from_status(op: impl Into<String>, status: &tonic::Status) -> ContainerdError {
        ContainerdError::call(op, Class::of_status(status), status.message())
    }

    /// The error class: an unreachable containerd is `Unavailable`.
    pub fn class(&self) -> Class {
        match self {
            ContainerdError::Unreachable { .. } => Class::Unavailable,
            ContainerdError::Call { class, .. } => *class,
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ContainerdError>;

/// Metadata about a blob in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its size.
    pub size: u64,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

/// An image record as containerd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Its name.
    pub name: String,
    /// Target media type.
    pub media_type: String,
    /// Target digest.
    pub digest: String,
    /// Target size.
    pub size: i64,
    /// Labels.
    pub labels: HashMap<String, String>,
}

/// A pull by containerd itself (its transfer service): from the registry of `reference`, as the
/// hosts.toml files of `hosts_dir` (or containerd's defaults) say, into an image record named
/// `reference` created with `labels`; content under the handle's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    /// The image, normalised (`docker.io/library/busybox:1.36`).
    pub reference: String,
    /// containerd's registry hosts directory (`certs.d`), if not its default.
    pub hosts_dir: Option<PathBuf>,
    /// The image record's labels.
    pub labels: Labels,
    /// The platforms whose content is pulled; every platform when empty.
    pub platforms: Vec<crate::platform::Platform>,
    /// Where to pull it from instead, as a reference on another registry (a followed peer's
    /// endpoint: `10.0.0.5:5050/library/busybox:1.36`).
    pub from: Option<String>,
    /// The registry the pull's source names speaks plain HTTP (a followed `http://` peer).
    pub plain_http: bool,
}

/// An image name and what it points to: what an import creates, what airlift records, and what
/// a repair recreates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageTarget {
    /// The image's name.
    pub name: String,
    /// Target media type.
    pub media_type: String,
    /// Target digest.
    pub digest: String,
    /// Target size.
    pub size: i64,
    /// The target descriptor's annotations (from the archive's index entry).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageTarget {
    /// What an existing image record points to (it carries no annotations).
    pub fn of(record: ImageRecord) -> ImageTarget {
        ImageTarget {
            name: record.name,
            media_type: record.media_type,
            digest: record.digest,
            size: record.size,
            annotations: BTreeMap::new(),
        }
    }

    /// Whether `image` points where this target does.
    pub fn points(&self, image: &ImageRecord) -> bool {
        image.digest == self.digest
    }
}

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

/// Labels as airlift sets them (sorted, so calls are deterministic).
pub type Labels = BTreeMap<String, String>;

/// Label changes: a value sets the label, `None` removes it.
pub type LabelChanges = BTreeMap<String, Option<String>>;

/// The chunks of a streamed write, as they come.
pub type Chunks = tokio::sync::mpsc::Receiver<Chunk>;

/// Where a handle's calls go: the socket, the namespace and the lease they are made in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The socket (for messages, and to tell one containerd from another).
    pub address: PathBuf,
    /// The namespace every call is made in.
    pub namespace: String,
    /// The lease calls are made under, if any.
    pub lease: Option<String>,
}

impl Scope {
    /// The same scope under `lease`.
    pub fn leased(&self, lease: Option<&str>) -> Scope {
        Scope {
            lease: lease.map(str::to_string),
            ..self.clone()
        }
    }
}

/// One piece of a blob streamed by [`Containerd::write`].
#[derive(Debug)]
pub enum Chunk {
    /// The next bytes.
    Data(Vec<u8>),
    /// Everything is sent: commit, expecting this digest.
    Commit(Digest),
}

/// How a streamed write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The blob is committed into the namespace.
    Committed,
    /// The namespace had the blob already.
    AlreadyExists,
    /// The writer stopped before committing; the ingest is left for [`Containerd::abort`].
    Abandoned,
}

/// An event containerd published in the handle's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `/images/create`: an image record was created, with these labels.
    ImageCreated {
        /// The image.
        name: String,
        /// Its labels.
        labels: HashMap<String, String>,
    },
    /// `/images/update`: an image record changed; the labels are the whole set after the
    /// change (a removed label is simply absent).
    ImageUpdated {
        /// The image.
        name: String,
        /// Its labels now.
        labels: HashMap<String, String>,
    },
    /// `/images/delete`: an image record was deleted.
    ImageDeleted {
        /// The image.
        name: String,
    },
    /// `/content/create` (containerd 2.1 and later): a blob was committed.
    ContentCreated {
        /// The blob.
        digest: String,
    },
    /// Any other topic.
    Other {
        /// The topic.
        topic: String,
    },
}

impl Event {
    /// The image an image event is about.
    pub fn image(&self) -> Option<&str> {
        match self {
            Event::ImageCreated { name, .. }
            | Event::ImageUpdated { name, .. }
            | Event::ImageDeleted { name } => Some(name),
            _ => None,
        }
    }
}

/// A live subscription: events as containerd publishes them, until the connection ends (a
/// containerd restart ends every subscription: events published meanwhile are lost).
pub type Events = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Event>> + Send>>;

/// The operations airlift needs from containerd. Implementations convert their failures to
/// [`ContainerdError`] with containerd's [`Class`]es, nowhere else.
#[async_trait::async_trait]
pub trait Containerd: Send + Sync {
    /// Where the calls go.
    fn scope(&self) -> &Scope;

    /// The socket.
    fn address(&self) -> &Path {
        &self.scope().address
    }

    /// The namespace.
    fn namespace(&self) -> &str {
        &self.scope().namespace
    }

    /// The lease, if any.
    fn lease(&self) -> Option<&str> {
        self.scope().lease.as_deref()
    }

    /// The same connection with every call made under `lease`.
    fn with_lease(&self, lease: Option<&str>) -> Client;

    /// The content store's root directory as containerd's introspection reports it; `None` when
    /// its content store is a proxy plugin.
    async fn content_root(&self) -> Result<Option<PathBuf>>;

    /// The socket of containerd's content proxy plugin, when its content store is one.
    async fn content_proxy_address(&self) -> Result<Option<PathBuf>>;

    /// A blob's size and labels, or `None` when the namespace does not have it.
    async fn info(&self, digest: &Digest) -> Result<Option<BlobInfo>>;

    /// Sets labels on a blob (only the keys given; the others are kept).
    async fn set_blob_labels(&self, digest: &Digest, labels: &Labels) -> Result<()>;

    /// Reads `size` bytes of a blob from `offset` (`size` 0: to the end).
    async fn read(&self, digest: &Digest, offset: u64, size: u64) -> Result<Vec<u8>>;

    /// Streams a blob into the namespace under the ingest ref `r#ref`: the chunks as they
    /// arrive, then a commit verified against `total` and the digest the commit names. `want`,
    /// the digest when known up front, lets containerd answer `AlreadyExists` before any byte
    /// is sent.
    async fn write(
        &self,
        r#ref: &str,
        total: u64,
        want: Option<&Digest>,
        data: Chunks,
    ) -> Result<Written>;

    /// Claims a blob that is on disk in the content root already into the namespace, by digest
    /// alone (containerd's shared content policy): STAT and COMMIT with `digest`, `size` and the
    /// blob's labels, no data. Under a lease the blob joins it in the same transaction. `false`
    /// when the namespace had it (its labels are then unchanged).
    async fn claim(&self, r#ref: &str, digest: &Digest, size: u64, labels: &Labels)
        -> Result<bool>;

    /// The refs of ingests in progress whose ref starts with `airlift-`.
    async fn ingest_refs(&self) -> Result<Vec<String>>;

    /// Abandons an ingest (one that is not there is fine).
    async fn abort(&self, reference: &str) -> Result<()>;

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

    /// An image record, or `None`.
    async fn get_image(&self, name: &str) -> Result<Option<ImageRecord>>;

    /// The image records matching containerd filters (all with none).
    async fn list_images(&self, filters: Vec<String>) -> Result<Vec<ImageRecord>>;

    /// Creates an image record, or points an existing one at `image`'s target and sets the given
    /// labels (others are kept).
    async fn put_image(&self, image: &ImageTarget, labels: &Labels) -> Result<()>;

    /// Subscribes to the namespace's events whose topic matches one of `topics` (regular
    /// expressions, as in containerd's `topic~=` filter).
    async fn subscribe(&self, topics: &[&str]) -> Result<Events>;

    /// Sets or (with `None`) removes labels of an existing image, keeping its target.
    async fn set_image_labels(&self, image: &ImageRecord, changes: &LabelChanges) -> Result<()>;

    /// Has containerd pull an image ([`Pull`]) through its transfer service; returns once its
    /// record exists. containerd 1.7's transfer service takes no hosts directory: see
    /// [`crate::pull`] for the pull airlift makes itself there.
    async fn pull(&self, pull: &Pull) -> Result<()>;

    /// containerd's version (`2.1.4`, `1.7.24`), as its Version service reports it.
    async fn version(&self) -> Result<String>;
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

    /// Commits the active snapshot `key` as `name`, with `labels`; under a lease `name` joins
    /// it. `AlreadyExists` when `name` is committed already (it joins the lease all the same).
    async fn commit_snapshot(
        &self,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: &Labels,
    ) -> Result<()>;

    /// A snapshot's metadata, or `None` when `snapshotter` has no snapshot `key`.
    async fn stat_snapshot(&self, snapshotter: &str, key: &str) -> Result<Option<SnapshotInfo>>;

    /// Removes a snapshot (one that is not there is fine).
    async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()>;

    /// Has containerd's differ apply the layer `layer` (a blob of the namespace) onto `mounts`;
    /// returns the digest of the uncompressed tar it applied (the layer's diff ID).
    async fn apply_diff(&self, layer: &Descriptor, mounts: &[Mount]) -> Result<Digest>;

    /// The snapshots of `snapshotter` a lease holds.
    async fn lease_snapshots(&self, id: &str, snapshotter: &str) -> Result<Vec<String>>;

    /// Adds (`add`) or removes a snapshot of `snapshotter` from a lease.
    async fn lease_snapshot(&self, id: &str, snapshotter: &str, key: &str, add: bool)
        -> Result<()>;
}

/// The lease resource type of snapshots of `snapshotter`.
pub fn snapshot_resource(snapshotter: &str) -> String {
    format!("snapshots/{snapshotter}")
}

/// Whether the namespace has a blob, and its size. A blob found is first added to the handle's
/// lease (when it has one), so garbage collection cannot take it between this check and the
/// moment an image refers to it.
pub async fn exists_leased(client: &dyn Containerd, digest: &Digest) -> Result<Option<u64>> {
    // Absent (the common case on a first import) costs one call; present costs a lease update
    // and a second look, which closes the window in which GC could have taken it.
    if client.info(digest).await?.is_none() {
        return Ok(None);
    }
    if let Some(lease) = client.lease() {
        client
            .lease_resource(lease, &digest.to_string(), true)
            .await?;
    }
    Ok(client.info(digest).await?.map(|i| i.size))
}

/// Formats a time as RFC 3339 in UTC (what containerd's `gc.expire` label holds).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn unreachable_is_unavailable_and_calls_keep_their_class() {
        let e = ContainerdError::Unreachable {
            address: "/x".into(),
            cause: "gone".into(),
        };
        assert_eq!(e.class(), Class::Unavailable);
        let e = ContainerdError::from_status("get image x", &tonic::Status::not_found("nope"));
        assert_eq!(e.class(), Class::NotFound);
        assert_eq!(e.to_string(), "containerd get image x: nope");
    }
}
