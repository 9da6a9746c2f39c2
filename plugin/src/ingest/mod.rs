//! Ingest: drive one archive from bytes on disk to an [`Inventory`], handing every blob to the
//! content store as it streams past.
//!
//! This is where the archive side meets the store: it decodes and walks the archive, stores each
//! blob (verifying it against the digest its path or name declares) and keeps the small JSON
//! documents the plan needs. It runs on a blocking thread.
//!
//! An [`Observer`] hears of each blob as it is stored and of each JSON document as it is read,
//! while the walk goes on: what a later station can start on before the archive is read to its
//! end (unpacking a layer as soon as its blob and its image's config are in); for an
//! uncompressed tar on disk, [`prescan()`] tells it of the documents before the walk starts.
//! What an entry's name declares (a layout file, a digest) is [`names`]'s.

pub mod names;
mod prescan;

pub use names::declared_digest;
pub use prescan::prescan;

use crate::archive::understand::{BlobError, FileRecord, Inventory};
use crate::archive::{decode, walk};
use crate::digest::Digest;
use crate::store::{read_full, ContentStore, StoreError};
pub(crate) use names::{is_layout_file, is_legacy_metadata, keep_layout_file};
use std::collections::HashMap;
use std::io::{self, Cursor, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Largest JSON document (manifest, index, config, layout file) kept in memory, as containerd.
pub const JSON_LIMIT: u64 = 20 << 20;

/// Most entries (files and links) one archive may have: what the walk remembers of each is
/// small, but not nothing.
pub const ENTRIES_LIMIT: usize = 100_000;

/// Most bytes of JSON documents (manifests, indexes, configs) kept in memory for one archive.
pub const JSON_TOTAL_LIMIT: u64 = 64 << 20;

/// Bytes inspected at the start of every blob.
const HEAD: usize = 64 << 10;

/// Counters of one ingest.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Blobs written (to disk or over the socket).
    pub blobs_written: u64,
    /// Blobs already present and not written again.
    pub blobs_present: u64,
    /// Bytes written.
    pub bytes_written: u64,
}

impl Counters {
    /// Counts one stored blob.
    pub fn count(&mut self, put: &crate::store::Put) {
        if put.written > 0 {
            self.blobs_written += 1;
            self.bytes_written += put.written;
        } else {
            self.blobs_present += 1;
        }
    }
}

/// Why an ingest stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The input could not be decoded.
    #[error(transparent)]
    Decode(#[from] decode::DecodeError),
    /// The tar stream is broken or unsafe.
    #[error(transparent)]
    Walk(#[from] walk::WalkError),
    /// One entry could not be read or stored.
    #[error("entry {entry:?}: {cause}")]
    Entry {
        /// The entry.
        entry: String,
        /// Why.
        cause: StoreError,
    },
    /// The archive has more entries, or more JSON, than airlift holds for one archive.
    #[error("{what}: more than the limit of {limit}; refusing the archive")]
    TooMuch {
        /// What there is too much of (and where it was noticed).
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A blob's entry disagrees with the size a descriptor already read declares for it: it
    /// cannot be that blob, and is not read.
    #[error("entry {entry:?}: {size} bytes, but a descriptor in the archive declares {declared}")]
    SizeDisagrees {
        /// The entry.
        entry: String,
        /// Its size in the tar header.
        size: u64,
        /// The size the descriptor declares.
        declared: u64,
    },
    /// A layout document is larger than airlift reads into memory.
    #[error(
        "entry {entry:?}: {size} bytes, more than the {limit}-byte limit for a layout document"
    )]
    TooLarge {
        /// The entry.
        entry: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl IngestError {
    /// Whether the archive itself is broken (rather than the store failing).
    pub fn is_archive_fault(&self) -> bool {
        match self {
            IngestError::Decode(_)
            | IngestError::Walk(_)
            | IngestError::TooLarge { .. }
            | IngestError::TooMuch { .. }
            | IngestError::SizeDisagrees { .. } => true,
            IngestError::Entry { cause, .. } => matches!(
                cause,
                StoreError::Source(_)
                    | StoreError::Truncated { .. }
                    | StoreError::DigestMismatch { .. }
            ),
        }
    }
}

/// What hears of an archive's content while it is read (from the ingest's thread, in archive
/// order): each blob once it is in the store (written, or present already), each JSON document
/// (manifest, index, config) once read — the documents are not in the store yet.
pub trait Observer: Send + Sync {
    /// `digest`, of `size` bytes, is in the store.
    fn stored(&self, digest: &Digest, size: u64);
    /// A JSON document of the archive, hashing to `digest`.
    fn document(&self, digest: &Digest, json: &[u8]);
}

/// Hears nothing.
pub struct Unobserved;

impl Observer for Unobserved {
    fn stored(&self, _: &Digest, _: u64) {}
    fn document(&self, _: &Digest, _: &[u8]) {}
}

/// Counts bytes read from the raw archive (for progress and the summary).
pub struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
    cancel: Option<Arc<AtomicBool>>,
}

impl<R> CountingReader<R> {
    /// Wraps `inner`, adding to `count`.
    pub fn new(inner: R, count: Arc<AtomicU64>) -> Self {
        CountingReader {
            inner,
            count,
            cancel: None,
        }
    }

    /// Makes reads fail once `cancel` is set, which abandons the import cleanly.
    pub fn cancellable(mut self, cancel: Arc<AtomicBool>) -> Self {
        self.cancel = Some(cancel);
        self
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(io::Error::other("import cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Notes the digest and size of every descriptor a manifest or index document declares.
fn note_descriptors(doc: &[u8], sizes: &mut HashMap<Digest, u64>) {
    use crate::oci::{Descriptor, Index, Manifest};
    let mut note = |d: &Descriptor| {
        if let Ok(size) = u64::try_from(d.size) {
            sizes.entry(d.digest.clone()).or_insert(size);
        }
    };
    if let Ok(m) = serde_json::from_slice::<Manifest>(doc) {
        note(&m.config);
        m.layers.iter().for_each(&mut note);
    } else if let Ok(i) = serde_json::from_slice::<Index>(doc) {
        i.manifests.iter().for_each(note);
    }
}

/// Records what the walk learned about a regular file, keeping only its first bytes.
pub(crate) fn remember(
    inv: &mut Inventory,
    name: String,
    digest: Result<Digest, BlobError>,
    size: u64,
    mut head: Vec<u8>,
) {
    head.truncate(16);
    inv.files.insert(name, FileRecord { digest, size, head });
}

/// Whether a file's first bytes look like a JSON document (kept in memory for the plan) rather
/// than a layer.
pub fn looks_like_json(head: &[u8]) -> bool {
    head.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[')
}

/// Reads the archive from `input` and stores its blobs in `store`; a decoder's scratch files go
/// in `scratch`.
pub fn ingest(
    input: impl Read + Send + 'static,
    store: &dyn ContentStore,
    scratch: &Path,
    counters: &mut Counters,
) -> Result<Inventory, IngestError> {
    ingest_observed(input, store, scratch, counters, &Unobserved)
}

/// [`ingest`], telling `observer` of each blob and document as it goes.
pub fn ingest_observed(
    input: impl Read + Send + 'static,
    store: &dyn ContentStore,
    scratch: &Path,
    counters: &mut Counters,
    observer: &dyn Observer,
) -> Result<Inventory, IngestError> {
    let (tar_stream, compression) = decode::open(input, scratch)?;
    // Decoding runs on its own thread, ahead of the hashing and writing done here.
    let tar_stream = crate::archive::readahead::ReadAhead::new(tar_stream, 1 << 20, 4);
    tracing::debug!(%compression, "decoding archive");
    let mut inv = Inventory::default();
    let mut entries = 0usize;
    let mut json_bytes = 0u64;
    // Sizes the descriptors read so far declare, by digest.
    let mut declared_sizes: HashMap<Digest, u64> = HashMap::new();
    walk::walk(tar_stream, |entry| -> Result<(), IngestError> {
        entries += 1;
        if entries > ENTRIES_LIMIT {
            return Err(IngestError::TooMuch {
                what: "entries".into(),
                limit: ENTRIES_LIMIT as u64,
            });
        }
        match entry {
            walk::Entry::Link { name, target } => {
                inv.links.insert(name, target);
            }
            walk::Entry::File {
                name, size, data, ..
            } => {
                let fail = |cause: StoreError| IngestError::Entry {
                    entry: name.clone(),
                    cause,
                };
                if is_layout_file(&name) {
                    if size > JSON_LIMIT {
                        return Err(IngestError::TooLarge {
                            entry: name,
                            size,
                            limit: JSON_LIMIT,
                        });
                    }
                    let mut buf = vec![0; size as usize];
                    let n = read_full(data, &mut buf).map_err(fail)?;
                    if n as u64 != size {
                        return Err(fail(StoreError::Truncated {
                            expected: size,
                            actual: n as u64,
                        }));
                    }
                    note_descriptors(&buf, &mut declared_sizes);
                    keep_layout_file(&mut inv, &name, buf);
                    return Ok(());
                }
                if is_legacy_metadata(&name) {
                    return Ok(());
                }
                let declared = match declared_digest(&name) {
                    Ok(d) => d,
                    Err(why) => {
                        inv.files.insert(
                            name,
                            FileRecord {
                                digest: Err(why),
                                size,
                                head: Vec::new(),
                            },
                        );
                        return Ok(());
                    }
                };
                if let Some(want) = declared.as_ref().and_then(|d| declared_sizes.get(d)) {
                    if *want != size {
                        return Err(IngestError::SizeDisagrees {
                            entry: name,
                            size,
                            declared: *want,
                        });
                    }
                }
                let mut head = vec![0; HEAD.min(size as usize)];
                let n = read_full(data, &mut head).map_err(fail)?;
                if n < head.len() {
                    return Err(fail(StoreError::Truncated {
                        expected: size,
                        actual: n as u64,
                    }));
                }
                let json = looks_like_json(&head) && size <= JSON_LIMIT;
                if json && head.len() as u64 != size {
                    let mut rest = Vec::with_capacity(size as usize - head.len());
                    data.read_to_end(&mut rest)
                        .map_err(|e| fail(StoreError::Source(e)))?;
                    head.extend_from_slice(&rest);
                }
                if json {
                    // Small JSON documents (manifests, indexes, configs) stay in memory and are
                    // stored only if an image needs them: see `Inventory::deferred`.
                    json_bytes += size;
                    if json_bytes > JSON_TOTAL_LIMIT {
                        return Err(IngestError::TooMuch {
                            what: format!("bytes of JSON documents (at entry {name:?})"),
                            limit: JSON_TOTAL_LIMIT,
                        });
                    }
                    note_descriptors(&head, &mut declared_sizes);
                    let digest = Digest::of(&head);
                    let record = match &declared {
                        Some(d) if *d != digest => Err(BlobError::Mismatch {
                            actual: digest.clone(),
                            declared: d.clone(),
                        }),
                        _ => Ok(digest.clone()),
                    };
                    if record.is_ok() {
                        observer.document(&digest, &head);
                        inv.deferred.insert(digest.clone());
                        inv.json.insert(digest, head.clone());
                    }
                    remember(&mut inv, name, record, size, head);
                    return Ok(());
                }
                // A blob present already is not read further: the walk skips the rest of it.
                let mut reader = Cursor::new(&head[..]).chain(data);
                let record = match store.put(&mut reader, size, declared.as_ref()) {
                    Ok(put) => {
                        counters.count(&put);
                        observer.stored(&put.digest, put.size);
                        Ok(put.digest)
                    }
                    Err(StoreError::DigestMismatch { expected, actual }) => {
                        tracing::warn!(entry = %name, %expected, %actual, "blob does not match its digest");
                        Err(BlobError::Mismatch {
                            actual,
                            declared: expected,
                        })
                    }
                    Err(e) => return Err(fail(e)),
                };
                remember(&mut inv, name, record, size, head);
            }
        }
        Ok(())
    })?;
    Ok(inv)
}

#[cfg(test)]
mod tests;
