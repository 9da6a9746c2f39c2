//! Ingest: drive one archive from bytes on disk to an [`Inventory`], handing every blob to the
//! content store as it streams past.
//!
//! This is where the archive side meets the store: it decodes and walks the archive, stores each
//! blob (verifying it against the digest its path or name declares) and keeps the small JSON
//! documents the plan needs. It runs on a blocking thread.
//!
//! An [`Observer`] hears of each blob as it is stored and of each JSON document as it is read,
//! while the walk goes on: what a later station can start on before the archive is read to its
//! end (unpacking a layer as soon as its blob and its image's config are in).

use crate::archive::understand::{FileRecord, Inventory};
use crate::archive::{decode, walk};
use crate::digest::Digest;
use crate::store::{read_full, ContentStore, StoreError};
use std::collections::HashMap;
use std::io::{self, Cursor, Read, Seek};
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

/// The largest entry [`prescan`] reads (image configs are a few KiB).
const PRESCAN_ENTRY: u64 = 1 << 20;

/// The most [`prescan`] reads in all.
const PRESCAN_TOTAL: u64 = 64 << 20;

/// For an uncompressed tar in a regular file: hands `observer` the archive's small JSON documents (the
/// image configs among them) before the walk starts, reading only the headers and those
/// entries (seeking past the rest). A docker-save archive puts its configs after its layers;
/// known first, they let unpacking start with the first layer rather than after the last. A
/// compressed archive, or anything that is not a tar, is left alone; so is any error (the walk
/// reads everything anyway).
pub fn prescan(path: &Path, observer: &dyn Observer) {
    let scan = || -> std::io::Result<()> {
        // A FIFO or a device is read once, by the walk.
        if !std::fs::metadata(path)?.is_file() {
            return Ok(());
        }
        let mut f = std::fs::File::open(path)?;
        let mut head = [0u8; 512];
        f.read_exact(&mut head)?;
        if &head[257..262] != b"ustar" {
            return Ok(());
        }
        f.seek(std::io::SeekFrom::Start(0))?;
        let mut archive = tar::Archive::new(f);
        let mut read = 0u64;
        for entry in archive.entries_with_seek()? {
            let mut entry = entry?;
            let size = entry.header().size()?;
            if !entry.header().entry_type().is_file() || !(2..=PRESCAN_ENTRY).contains(&size) {
                continue;
            }
            // A document starts with `{`; anything else (a small layer) is passed by after
            // one byte.
            let mut first = [0u8; 1];
            entry.read_exact(&mut first)?;
            if first[0] != b'{' {
                continue;
            }
            read += size;
            if read > PRESCAN_TOTAL {
                break;
            }
            let mut json = Vec::with_capacity(size as usize);
            json.push(first[0]);
            entry.read_to_end(&mut json)?;
            observer.document(&Digest::of(&json), &json);
        }
        Ok(())
    };
    if let Err(e) = scan() {
        tracing::debug!(archive = %crate::escape::shown(&path), error = %e, "no prescan");
    }
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

/// Whether an entry is one of the layout's own documents (kept by [`keep_layout_file`]).
pub(crate) fn is_layout_file(name: &str) -> bool {
    matches!(
        name,
        "oci-layout" | "index.json" | "manifest.json" | "repositories"
    )
}

/// Keeps a layout document in the inventory (`repositories`, docker save's legacy list, is not
/// kept).
pub(crate) fn keep_layout_file(inv: &mut Inventory, name: &str, doc: Vec<u8>) {
    match name {
        "oci-layout" => inv.oci_layout = Some(doc),
        "index.json" => inv.index_json = Some(doc),
        "manifest.json" => inv.manifest_json = Some(doc),
        _ => {}
    }
}

/// docker save's legacy per-layer metadata (`<id>/json`, `<id>/VERSION`): never content.
pub(crate) fn is_legacy_metadata(name: &str) -> bool {
    match name.split_once('/') {
        Some((dir, file)) => Digest::from_hex(dir).is_some() && matches!(file, "json" | "VERSION"),
        None => false,
    }
}

/// The digest an entry's path declares: `blobs/sha256/<hex>` (OCI), or `<hex>.json` / `<hex>.tar`
/// (docker save names configs and layers by digest). `Err` for an OCI blob path that is not a
/// usable digest.
pub fn declared_digest(name: &str) -> Result<Option<Digest>, String> {
    if let Some(rest) = name.strip_prefix("blobs/") {
        return match rest.split_once('/') {
            Some(("sha256", hex)) => Digest::from_hex(hex)
                .map(Some)
                .ok_or_else(|| format!("blob path does not end in a sha256 digest: {name:?}")),
            Some((alg, _)) => Err(format!("unsupported digest algorithm {alg:?}")),
            None => Ok(None),
        };
    }
    if !name.contains('/') {
        if let Some(hex) = name
            .strip_suffix(".json")
            .or_else(|| name.strip_suffix(".tar"))
        {
            return Ok(Digest::from_hex(hex));
        }
    }
    Ok(None)
}

/// Notes the digest and size of every descriptor a manifest or index document declares.
fn note_descriptors(doc: &[u8], sizes: &mut HashMap<Digest, u64>) {
    use crate::archive::spec::{Descriptor, Index, Manifest};
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
    digest: Result<Digest, String>,
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
                        Some(d) if *d != digest => Err(format!(
                            "content hashes to {digest}, not to {d} as its name declares"
                        )),
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
                        Err(format!(
                            "content hashes to {actual}, not to {expected} as its name declares"
                        ))
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
mod tests {
    use super::*;
    use crate::testing::tar;

    /// Records the documents it hears of.
    #[derive(Default)]
    struct Heard(std::sync::Mutex<Vec<Digest>>);

    impl Observer for Heard {
        fn stored(&self, _: &Digest, _: u64) {}
        fn document(&self, d: &Digest, _: &[u8]) {
            self.0.lock().unwrap().push(d.clone());
        }
    }

    #[test]
    fn prescan_finds_the_configs_of_a_tar_on_disk_and_leaves_the_rest_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let layer = vec![7u8; 3 << 20];
        let mut b = tar::Builder::new(Vec::new());
        let small = [0u8; 1000];
        for (name, data) in [
            ("layer/layer.tar", &layer[..]),
            ("small/layer.tar", &small[..]),
            ("config.json", &config[..]),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let plain = dir.path().join("a.tar");
        std::fs::write(&plain, &bytes).unwrap();
        let heard = Heard::default();
        prescan(&plain, &heard);
        assert_eq!(*heard.0.lock().unwrap(), [Digest::of(config)]);

        // Compressed: nothing (it would take a second decompression).
        let gz = dir.path().join("a.tar.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &bytes).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let heard = Heard::default();
        prescan(&gz, &heard);
        assert!(heard.0.lock().unwrap().is_empty());

        // A FIFO is not opened: its bytes are the walk's.
        let fifo = dir.path().join("f.tar");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let heard = Heard::default();
        prescan(&fifo, &heard);
        assert!(heard.0.lock().unwrap().is_empty());
    }

    #[test]
    fn declared_digests() {
        let hex = "3c63c9c166711109a348b05fd7860edf5355b932eac5e2835313507de144cf40";
        assert_eq!(
            declared_digest(&format!("blobs/sha256/{hex}"))
                .unwrap()
                .unwrap()
                .hex(),
            hex
        );
        assert_eq!(
            declared_digest(&format!("{hex}.json"))
                .unwrap()
                .unwrap()
                .hex(),
            hex
        );
        assert_eq!(
            declared_digest(&format!("{hex}.tar"))
                .unwrap()
                .unwrap()
                .hex(),
            hex
        );
        assert_eq!(declared_digest(&format!("{hex}/layer.tar")).unwrap(), None);
        assert!(declared_digest("blobs/sha512/abc").is_err());
        assert!(declared_digest("blobs/sha256/XYZ").is_err());
        assert!(is_legacy_metadata(&format!("{hex}/json")));
        assert!(!is_legacy_metadata(&format!("{hex}/layer.tar")));
    }

    #[test]
    fn an_oversized_layout_document_names_its_entry_and_the_limit() {
        let big = vec![b' '; JSON_LIMIT as usize + 1];
        let store = crate::testkit::memory::MemoryStore::default();
        let e = ingest(
            io::Cursor::new(tar(&[("index.json", big)])),
            &store,
            &std::env::temp_dir(),
            &mut Counters::default(),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"index.json\"") && msg.contains(&JSON_LIMIT.to_string()),
            "{msg}"
        );
        assert!(e.is_archive_fault());
    }

    #[test]
    fn blobs_are_stored_once_and_json_is_kept_for_the_plan() {
        let layer = vec![7u8; 200_000];
        let d = Digest::of(&layer);
        let name = format!("blobs/sha256/{}", d.hex());
        let doc = b"{\"schemaVersion\":2}".to_vec();
        let doc_name = format!("blobs/sha256/{}", Digest::of(&doc).hex());
        let archive = tar(&[(&name, layer.clone()), (&doc_name, doc.clone())]);
        let store = crate::testkit::memory::MemoryStore::default();
        let mut c = Counters::default();
        let inv = ingest(
            io::Cursor::new(archive.clone()),
            &store,
            &std::env::temp_dir(),
            &mut c,
        )
        .unwrap();
        assert_eq!((c.blobs_written, c.bytes_written), (1, 200_000));
        // The JSON document waits in memory for the plan: not stored yet.
        assert!(inv.deferred.contains(&Digest::of(&doc)));
        assert_eq!(store.len(), 1);
        // Again: present, nothing written.
        let mut c = Counters::default();
        ingest(
            io::Cursor::new(archive),
            &store,
            &std::env::temp_dir(),
            &mut c,
        )
        .unwrap();
        assert_eq!((c.blobs_written, c.blobs_present), (0, 1));
    }
}
