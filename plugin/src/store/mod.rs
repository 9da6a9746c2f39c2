//! Store: the one content-store abstraction every blob goes through, and its homes.
//!
//! A [`ContentStore`] puts a verified blob, tells whether the namespace already has a blob, and
//! reads blobs back. A blob is never visible under a digest it does not hash to: "put" either
//! commits it into the namespace, or (the direct store) stages it verified on disk until
//! [`ContentStore::claim_staged`] commits the ones an image uses. Implementations:
//!
//! - [`direct::DirectStore`] writes into containerd's on-disk content root and claims by digest,
//!   so no data crosses the socket;
//! - [`stream::StreamStore`] streams data through containerd's Content API;
//! - [`memory::MemoryStore`], an in-memory fake for unit tests;
//! - [`local::LocalStore`], containerd's on-disk layout owned by airlift, which [`crate::proxy`]
//!   serves to containerd as its content store (the import side reaches it as a direct store or
//!   over the socket as a streaming store).
//!
//! [`conformance`] is the behaviour every implementation must show; it runs against all three.
//!
//! The trait is synchronous: the archive is read on a blocking thread, and the containerd-backed
//! stores bridge to async gRPC with a runtime handle.

pub mod conformance;
pub mod direct;
pub mod local;
pub mod memory;
pub mod stream;

use crate::digest::Digest;
use std::io::{self, Read};

/// What a [`ContentStore::put`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The digest of the blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Bytes written to disk or sent over the socket for it (0 when it was already present).
    pub written: u64,
}

/// Why a blob could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bytes do not hash to the digest they were declared under; nothing was committed.
    #[error("content hashes to {actual}, not to the expected {expected}")]
    DigestMismatch {
        /// The declared digest.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Fewer bytes than declared: the archive is truncated.
    #[error("expected {expected} bytes but the data ended after {actual}")]
    Truncated {
        /// Declared size.
        expected: u64,
        /// Bytes available.
        actual: u64,
    },
    /// Reading the source (the archive) failed: it is broken.
    #[error("reading the archive: {0}")]
    Source(io::Error),
    /// Writing to the local content root failed.
    #[error("writing to the content store: {0}")]
    Io(#[from] io::Error),
    /// containerd refused or failed.
    #[error(transparent)]
    Containerd(#[from] crate::containerd::ContainerdError),
    /// The blob is not in the store.
    #[error("blob {0} not found")]
    NotFound(Digest),
}

impl StoreError {
    /// Whether the fault lies in the blob itself (the images using it fail) rather than in the
    /// archive stream or the store (the whole import stops).
    pub fn is_blob_fault(&self) -> bool {
        matches!(self, StoreError::DigestMismatch { .. })
    }
}

/// Where verified blobs go.
pub trait ContentStore: Send + Sync {
    /// A short name for logs and summaries (`direct`, `stream`, `memory`).
    fn kind(&self) -> &'static str;

    /// The size of `digest` if the namespace already has it.
    fn exists(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;

    /// Stores exactly `size` bytes read from `data`, verifying them against `expected` when
    /// given, and commits the blob into the namespace. A blob already present is not written
    /// again. On any error nothing is committed and no temporary data is left behind.
    fn put(
        &self,
        data: &mut dyn Read,
        size: u64,
        expected: Option<&Digest>,
    ) -> Result<Put, StoreError>;

    /// A directory on the store's own filesystem for a decoder's scratch files (a spilled
    /// zstd window), when the store has one.
    fn scratch_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Reads a whole blob back.
    fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError>;

    /// Waits until every blob `put` so far is committed, and reports the first failure. A store
    /// may finish commits in the background (the direct store overlaps fsync and claim with the
    /// next blob); callers flush before anything refers to the blobs.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Makes the staged blobs an import needs visible in the namespace, each with its `labels`,
    /// through `client` (whose lease they join); returns those so claimed, whose labels and lease
    /// entry need no further update. Stores that commit at `put` (the default) stage nothing.
    fn claim_staged(
        &self,
        _client: &crate::containerd::Containerd,
        _labels: &std::collections::BTreeMap<Digest, std::collections::BTreeMap<String, String>>,
        _needed: &std::collections::BTreeSet<&Digest>,
    ) -> Result<std::collections::BTreeSet<Digest>, StoreError> {
        Ok(std::collections::BTreeSet::new())
    }
}

/// Size of the chunks data is moved in.
pub const CHUNK: usize = 1 << 20;

/// Reads exactly `want` bytes (or up to EOF) into `buf`, tagging read errors as source errors.
pub(crate) fn read_full(data: &mut dyn Read, buf: &mut [u8]) -> Result<usize, StoreError> {
    let mut filled = 0;
    while filled < buf.len() {
        match data.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::Source(e)),
        }
    }
    Ok(filled)
}

/// Copies exactly `size` bytes from `data` to `sink` in [`CHUNK`]-sized pieces while hashing,
/// then checks length and (when given) digest. Returns the digest.
pub(crate) fn copy_verified(
    data: &mut dyn Read,
    size: u64,
    expected: Option<&Digest>,
    mut sink: impl FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<Digest, StoreError> {
    let mut hasher = crate::digest::Hasher::default();
    let mut buf = vec![0u8; CHUNK.min(size.max(1) as usize)];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = read_full(data, &mut buf[..want])?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        sink(&buf[..n])?;
        left -= n as u64;
        if n < want {
            break;
        }
    }
    if hasher.len() != size {
        return Err(StoreError::Truncated {
            expected: size,
            actual: hasher.len(),
        });
    }
    let actual = hasher.finish();
    if let Some(expected) = expected {
        if *expected != actual {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(actual)
}
