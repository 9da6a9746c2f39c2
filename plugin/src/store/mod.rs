//! Store: the one content-store abstraction every blob goes through, and its homes.
//!
//! A [`ContentStore`] puts a verified blob, tells whether it has a blob, and reads blobs back. A
//! blob is never visible under a digest it does not hash to. The "already there?" check is
//! written once, in [`ContentStore::put`]; homes implement [`ContentStore::write`] for blobs they
//! do not have. Homes:
//!
//! - [`direct::DirectStore`] writes into containerd's on-disk content root; its blobs are
//!   *staged* (verified and durable on disk, not yet in the namespace) until the import claims
//!   the ones an image uses — the [`Staging`] side, which only the direct store has;
//! - [`stream::StreamStore`] streams data through containerd's Content API;
//! - [`local::LocalStore`], containerd's on-disk layout owned by airlift, which [`crate::proxy`]
//!   serves to containerd as its content store.
//!
//! [`layout`] is the content root's layout, known nowhere else. The behaviour every home must show
//! is the test kit's conformance suite (`testkit::conformance`), run against each (the
//! containerd-backed ones against real containerd in the end-to-end tests, against the
//! containerd fake in unit tests), and against the test kit's in-memory store.
//!
//! The trait is synchronous: the archive is read on a blocking thread, and the containerd-backed
//! stores bridge to async gRPC with a runtime handle.

pub mod direct;
pub mod layout;
pub mod local;
pub mod stream;

use crate::containerd::{Containerd, ContainerdError};
use crate::digest::Digest;
use crate::error::Class;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::PathBuf;

/// Which home a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Into containerd's content root, claimed by digest.
    Direct,
    /// Through containerd's Content API.
    Stream,
    /// In memory (tests).
    Memory,
    /// airlift's own store in containerd's layout (the content proxy).
    Local,
    /// Not airlift's: containerd pulled the blobs from a registry (a pull list).
    Pulled,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Direct => "direct",
            StoreKind::Stream => "stream",
            StoreKind::Memory => "memory",
            StoreKind::Local => "local",
            StoreKind::Pulled => "pulled",
        })
    }
}

/// Result alias of the stores.
pub type Result<T> = std::result::Result<T, StoreError>;

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

impl Put {
    /// A blob the store had already.
    pub fn present(digest: &Digest, size: u64) -> Put {
        Put {
            digest: digest.clone(),
            size,
            written: 0,
        }
    }

    /// A blob written now.
    pub fn written(digest: Digest, size: u64) -> Put {
        Put {
            digest,
            size,
            written: size,
        }
    }
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
    /// The local filesystem failed, doing what `what` says (naming the blob and the path).
    #[error("{what}: {cause}")]
    Io {
        /// What was being done, to which blob, where.
        what: String,
        /// The error.
        cause: io::Error,
    },
    /// containerd refused or failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// airlift's own store refused or failed.
    #[error(transparent)]
    Local(#[from] local::LocalError),
    /// The blob is not in the store.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// The blob does not fit: refused before a byte of it was written.
    #[error("{what} ({size} bytes) does not fit: the filesystem of {path} has {free} bytes free")]
    NoRoom {
        /// The blob.
        what: String,
        /// Its size.
        size: u64,
        /// Where it would go.
        path: std::path::PathBuf,
        /// What is free there.
        free: u64,
    },
}

impl StoreError {
    /// A filesystem failure while `what` (naming the blob and the path).
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
        let what = what.into();
        move |cause| {
            let full = cause.raw_os_error().is_some_and(|c| {
                c == rustix::io::Errno::NOSPC.raw_os_error()
                    || c == rustix::io::Errno::DQUOT.raw_os_error()
            });
            let what = if full {
                format!("{what} (the filesystem is full)")
            } else {
                what
            };
            StoreError::Io { what, cause }
        }
    }

    /// Whether the fault lies in the blob itself (the images using it fail) rather than in the
    /// archive stream or the store (the whole import stops).
    pub fn is_blob_fault(&self) -> bool {
        matches!(self, StoreError::DigestMismatch { .. })
    }

    /// The error class.
    pub fn class(&self) -> Class {
        match self {
            StoreError::DigestMismatch { .. } | StoreError::Truncated { .. } => {
                Class::FailedPrecondition
            }
            StoreError::Source(_) => Class::InvalidArgument,
            StoreError::Io { .. } => Class::Internal,
            StoreError::Containerd(e) => e.class(),
            StoreError::Local(e) => e.class(),
            StoreError::NotFound(_) => Class::NotFound,
            StoreError::NoRoom { .. } => Class::Unavailable,
        }
    }

    /// Whether the local disk is full (of blocks or inodes) or over quota.
    pub fn is_out_of_space(&self) -> bool {
        if matches!(self, StoreError::NoRoom { .. }) {
            return true;
        }
        let io = match self {
            StoreError::Io { cause, .. } => Some(cause),
            StoreError::Local(e) => e.io(),
            _ => None,
        };
        io.and_then(io::Error::raw_os_error).is_some_and(|c| {
            c == rustix::io::Errno::NOSPC.raw_os_error()
                || c == rustix::io::Errno::DQUOT.raw_os_error()
        })
    }
}

/// Where verified blobs go.
pub trait ContentStore: Send + Sync {
    /// Which home this is.
    fn kind(&self) -> StoreKind;

    /// The size of `digest` if the store already has it.
    fn exists(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Stores exactly `size` bytes read from `data`, verifying them against `expected` when
    /// given. A blob already present is not written again. On any error nothing is committed and
    /// no temporary data is left behind.
    fn put(&self, data: &mut dyn Read, size: u64, want: Option<&Digest>) -> Result<Put> {
        if let Some(d) = want {
            if let Some(present) = self.exists(d)? {
                return Ok(Put::present(d, present));
            }
        }
        self.write(data, size, want)
    }

    /// [`ContentStore::put`] for a blob not known to be present: writes it (a blob that turns
    /// out present once hashed is not kept twice).
    fn write(&self, data: &mut dyn Read, size: u64, want: Option<&Digest>) -> Result<Put>;

    /// Reads a whole blob back.
    fn read(&self, digest: &Digest) -> Result<Vec<u8>>;

    /// Waits until every blob put so far is durable, and reports the first failure. A store may
    /// finish writes in the background (the direct store overlaps fsync with the next blob);
    /// callers flush before anything refers to the blobs.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// A directory on the store's own filesystem for a decoder's scratch files (a spilled zstd
    /// window), when the store has one.
    fn scratch_dir(&self) -> Option<PathBuf> {
        None
    }

    /// The staging side, for a store whose blobs must be claimed into the namespace.
    fn staging(&self) -> Option<&dyn Staging> {
        None
    }
}

/// A store that stages blobs (verified and durable, outside the namespace) until the import
/// claims the ones its images use.
pub trait Staging {
    /// Makes the staged blobs in `needed` visible in the namespace, each with its `labels`,
    /// through `client` (whose lease they join); returns those so claimed, whose labels and lease
    /// entry need no further update. Staged blobs not needed are discarded.
    fn claim_staged(
        &self,
        client: &dyn Containerd,
        labels: &BTreeMap<Digest, BTreeMap<String, String>>,
        needed: &BTreeSet<&Digest>,
    ) -> Result<BTreeSet<Digest>>;

    /// Makes blobs visible in the namespace now, before the plan: once their fsyncs are done
    /// they are claimed through `client` (whose lease they join) without labels, which the
    /// record step sets later as for any blob present already. Blobs the store has not staged
    /// (in the namespace already, or never written here) are left alone. Blocks: call it from a
    /// blocking thread.
    fn claim_now(&self, client: &dyn Containerd, digests: &[Digest]) -> Result<()>;
}

/// Refuses a blob of `size` bytes for `dir` when its filesystem has not that much free (a
/// decompression bomb never fills the disk); unknown free space lets it through.
pub(crate) fn check_room(
    dir: &std::path::Path,
    size: u64,
    what: impl FnOnce() -> String,
) -> Result<()> {
    match crate::sys::free_space(dir) {
        Ok(free) if free < size => Err(StoreError::NoRoom {
            what: what(),
            size,
            path: dir.to_path_buf(),
            free,
        }),
        _ => Ok(()),
    }
}

/// Size of the chunks data is moved in.
pub const CHUNK: usize = 1 << 20;

/// Reads exactly `buf.len()` bytes (or up to EOF) into `buf`, tagging read errors as source
/// errors.
pub(crate) fn read_full(data: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
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
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Digest> {
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
