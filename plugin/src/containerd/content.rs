//! containerd's content service as airlift uses it: a blob's info and labels, reads, streamed
//! writes verified at commit, claims of blobs already on disk (containerd's shared content
//! policy), and the ingests left in progress.

use super::{Labels, Result};
use crate::digest::Digest;
use std::collections::HashMap;

/// Metadata about a blob in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its size.
    pub size: u64,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

/// The chunks of a streamed write, as they come.
pub type Chunks = tokio::sync::mpsc::Receiver<Chunk>;

/// One piece of a blob streamed by [`Content::write`].
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
    /// The writer stopped before committing; the ingest is left for [`Content::abort`].
    Abandoned,
}

/// The content service: blobs of the namespace. Under a lease, what is committed joins it.
#[async_trait::async_trait]
pub trait Content: Send + Sync {
    /// A blob's size and labels, or `None` when the namespace does not have it.
    async fn info(&self, digest: &Digest) -> Result<Option<BlobInfo>>;

    /// Sets labels on a blob (only the keys given; the others are kept). An empty value
    /// removes the label, as containerd stores no empty labels.
    async fn set_blob_labels(&self, digest: &Digest, labels: &Labels) -> Result<()>;

    /// Reads `size` bytes of a blob from `offset` (`size` 0: to the end).
    async fn read(&self, digest: &Digest, offset: u64, size: u64) -> Result<Vec<u8>>;

    /// Streams a blob into the namespace under the ingest ref `r#ref`: the chunks as they
    /// arrive, then a commit verified against `total` and the digest the commit names. `want`,
    /// the digest when known up front, lets containerd answer `AlreadyExists` before any byte
    /// is sent (the present blob then joins the handle's lease; one found present only at the
    /// commit does not).
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
    /// when the namespace had it (its labels are then unchanged; it joins the lease all the
    /// same). A blob that is not on disk is `OutOfRange` (the commit finds an empty ingest).
    async fn claim(&self, r#ref: &str, digest: &Digest, size: u64, labels: &Labels)
        -> Result<bool>;

    /// The refs of ingests in progress whose ref starts with `airlift-`.
    async fn ingest_refs(&self) -> Result<Vec<String>>;

    /// Abandons an ingest (one that is not there is fine).
    async fn abort(&self, reference: &str) -> Result<()>;
}
