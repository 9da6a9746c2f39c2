//! The local store: a content store in containerd's own on-disk layout ([`super::layout`]),
//! owned by airlift when containerd uses airlift as its content proxy plugin, so an existing
//! content root can be taken over and handed back without migration.
//!
//! Committed blobs are read-only, each renamed into place only after its bytes were verified
//! against the expected size and digest and fsynced. An ingest survives restarts: its offset is
//! the length of its `data`, and opening it again re-hashes what is there ([`writer`]). Nothing
//! else is state: a crash leaves a resumable ingest or a committed blob. Labels set through the
//! Content API live beside the blobs (`labels.rs`).
//!
//! Blobs with more than one link are airlift's direct imports in mid-claim (the staged temporary
//! file is the other link): [`LocalStore::list`] leaves them out, so containerd's garbage
//! collector, which deletes every listed blob its metadata does not know, cannot take a blob
//! between its link and its claim.

mod labels;
pub mod writer;

use super::layout::ContentRoot;
use super::{copy_verified, ContentStore, Put, StoreError, StoreKind};
use crate::digest::Digest;
use crate::error::Class;
use crate::filters::{map_field, Adaptor, Filter};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use writer::Writer;

/// Why a local store operation failed: a containerd error class, what was being done, and the
/// filesystem's error when there was one.
#[derive(Debug)]
pub struct LocalError {
    class: Class,
    message: String,
    cause: Option<io::Error>,
}

impl std::fmt::Display for LocalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "{}: {cause}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for LocalError {}

impl LocalError {
    /// An error of class `class`.
    pub fn new(class: Class, message: impl Into<String>) -> LocalError {
        LocalError {
            class,
            message: message.into(),
            cause: None,
        }
    }

    /// The blob or ingest `what` does not exist.
    pub fn not_found(what: impl std::fmt::Display) -> LocalError {
        LocalError::new(Class::NotFound, format!("{what}: not found"))
    }

    /// The blob `what` exists already.
    pub fn already_exists(what: impl std::fmt::Display) -> LocalError {
        LocalError::new(Class::AlreadyExists, format!("{what}: already exists"))
    }

    /// A malformed request.
    pub fn invalid_argument(message: impl Into<String>) -> LocalError {
        LocalError::new(Class::InvalidArgument, message)
    }

    /// The error class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The filesystem's error, when the filesystem failed.
    pub fn io(&self) -> Option<&io::Error> {
        self.cause.as_ref()
    }
}

impl From<LocalError> for tonic::Status {
    fn from(e: LocalError) -> tonic::Status {
        e.class.status(e.to_string())
    }
}

/// A filesystem failure while doing `context`.
fn io_err(context: impl Into<String>) -> impl Fn(io::Error) -> LocalError {
    let context = context.into();
    move |cause| LocalError {
        class: Class::Internal,
        message: context.clone(),
        cause: Some(cause),
    }
}

/// Maps a failed filesystem call on blob `d`: an absent blob is `NotFound`, anything else an I/O
/// error saying what was being done.
fn blob_err<'a>(d: &'a Digest, doing: &'a str) -> impl Fn(io::Error) -> LocalError + 'a {
    move |e| match e.kind() {
        io::ErrorKind::NotFound => LocalError::not_found(format!("content {d}")),
        _ => io_err(format!("{doing} content {d}"))(e),
    }
}

/// A committed blob's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed.
    pub created: SystemTime,
    /// When its labels last changed (its access time, as containerd reports it).
    pub updated: SystemTime,
    /// Labels set through the Content API.
    pub labels: HashMap<String, String>,
}

impl Adaptor for BlobInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("digest") => Some(self.digest.to_string()),
            Some("labels") => map_field(&path[1..], &self.labels),
            _ => None,
        }
    }
}

/// The state of one ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The ref the writer chose.
    pub reference: String,
    /// Bytes written so far.
    pub offset: u64,
    /// Expected total size (0 when unknown).
    pub total: u64,
    /// When the ingest began.
    pub started: SystemTime,
    /// When it last changed.
    pub updated: SystemTime,
}

impl Adaptor for IngestStatus {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "ref" => Some(self.reference.clone()),
            _ => None,
        }
    }
}

struct Inner {
    root: ContentRoot,
    /// Refs with an open writer, and since when.
    locks: Mutex<HashMap<String, SystemTime>>,
    /// Numbers the refs of [`ContentStore::write`]s.
    writes: AtomicU64,
}

/// A content store in containerd's layout. Cheap to clone; clones share the ref locks.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

impl LocalStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<LocalStore, LocalError> {
        let root = ContentRoot::new(root);
        for d in [root.blobs(), root.ingests()] {
            fs::create_dir_all(&d)
                .map_err(io_err(format!("creating {}", crate::escape::shown(&d))))?;
        }
        Ok(LocalStore {
            inner: Arc::new(Inner {
                root,
                locks: Mutex::new(HashMap::new()),
                writes: AtomicU64::new(0),
            }),
        })
    }

    /// The store's layout.
    pub fn root(&self) -> &ContentRoot {
        &self.inner.root
    }

    /// Parses a digest given by a client.
    pub fn parse_digest(s: &str) -> Result<Digest, LocalError> {
        s.parse()
            .map_err(|_| LocalError::invalid_argument(format!("invalid digest {s:?}")))
    }

    /// Metadata of a committed blob.
    pub fn info(&self, d: &Digest) -> Result<BlobInfo, LocalError> {
        let meta = fs::metadata(self.root().blob(d)).map_err(blob_err(d, "inspecting"))?;
        Ok(self.info_of(d.clone(), &meta))
    }

    fn info_of(&self, digest: Digest, meta: &fs::Metadata) -> BlobInfo {
        BlobInfo {
            size: meta.len(),
            created: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            updated: meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH),
            labels: labels::read(&self.root().labels(&digest)),
            digest,
        }
    }

    /// Changes a blob's labels as containerd does: no field paths or `labels` replaces them all;
    /// `labels.<key>` sets (or, with an empty value, removes) one label.
    pub fn update(
        &self,
        d: &Digest,
        labels: &HashMap<String, String>,
        fieldpaths: &[String],
    ) -> Result<BlobInfo, LocalError> {
        let current = self.info(d)?;
        let next = labels::apply(&current.labels, labels, fieldpaths, &d.to_string())?;
        labels::write(&self.root().labels(d), &next)?;
        // As containerd does: the access time records the update, the modification time stays
        // the commit time.
        let now = SystemTime::now();
        if let Ok(f) = File::open(self.root().blob(d)) {
            let _ = f.set_times(
                fs::FileTimes::new()
                    .set_accessed(now)
                    .set_modified(current.created),
            );
        }
        self.info(d)
    }

    /// Every committed blob matching `filter`, except blobs in mid-claim (see the module docs).
    pub fn list(&self, filter: &Filter) -> Result<Vec<BlobInfo>, LocalError> {
        let dir = self.root().blobs();
        let entries = fs::read_dir(&dir)
            .map_err(io_err(format!("listing {}", crate::escape::shown(&dir))))?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Some(digest) = e.file_name().to_str().and_then(Digest::from_hex) else {
                continue;
            };
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() || meta.nlink() > 1 {
                continue;
            }
            let info = self.info_of(digest, &meta);
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Removes a committed blob (and its labels).
    pub fn delete(&self, d: &Digest) -> Result<(), LocalError> {
        fs::remove_file(self.root().blob(d)).map_err(blob_err(d, "removing"))?;
        let _ = fs::remove_file(self.root().labels(d));
        Ok(())
    }

    /// Opens a committed blob for reading, with its size.
    pub fn open_blob(&self, d: &Digest) -> Result<(File, u64), LocalError> {
        let f = File::open(self.root().blob(d)).map_err(blob_err(d, "opening"))?;
        let size = f.metadata().map_err(blob_err(d, "inspecting"))?.len();
        Ok((f, size))
    }

    /// The state of the ingest `reference`, from disk.
    pub fn status(&self, reference: &str) -> Result<IngestStatus, LocalError> {
        let not_found = || LocalError::not_found(format!("ingest ref {reference:?}"));
        match writer::read_status(&self.root().ingest(reference)) {
            Ok(s) if s.reference == reference => Ok(s),
            Ok(_) => Err(not_found()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_found()),
            Err(e) => Err(io_err(format!("ingest ref {reference:?}"))(e)),
        }
    }

    /// The state of every ingest matching `filter`.
    pub fn list_statuses(&self, filter: &Filter) -> Result<Vec<IngestStatus>, LocalError> {
        let dir = self.root().ingests();
        let entries = fs::read_dir(&dir)
            .map_err(io_err(format!("listing {}", crate::escape::shown(&dir))))?;
        let mut out: Vec<IngestStatus> = entries
            .flatten()
            .filter_map(|e| writer::read_status(&e.path()).ok())
            .filter(|s| filter.matches(s))
            .collect();
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Discards the ingest `reference`.
    pub fn abort(&self, reference: &str) -> Result<(), LocalError> {
        let dir = self.root().ingest(reference);
        if !dir.exists() {
            return Err(LocalError::not_found(format!("ingest ref {reference:?}")));
        }
        fs::remove_dir_all(&dir).map_err(io_err(format!("aborting ingest ref {reference:?}")))
    }

    /// Opens a writer on the ingest `reference`, resuming it when it exists. Only one writer per
    /// ref at a time: another gets `Unavailable`. `expected`, when given, must not be committed
    /// already (`AlreadyExists`).
    pub fn writer(
        &self,
        reference: &str,
        total: u64,
        expected: Option<&Digest>,
    ) -> Result<Writer, LocalError> {
        writer::open(self, reference, total, expected)
    }
}

impl ContentStore for LocalStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Local
    }

    fn exists(&self, digest: &Digest) -> super::Result<Option<u64>> {
        match self.info(digest) {
            Ok(i) => Ok(Some(i.size)),
            Err(e) if e.class() == Class::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&self, data: &mut dyn Read, size: u64, want: Option<&Digest>) -> super::Result<Put> {
        super::check_room(&self.root().ingests(), size, || {
            want.map_or("a blob".to_string(), |d| format!("blob {d}"))
        })?;
        let n = self.inner.writes.fetch_add(1, Ordering::Relaxed);
        let reference = format!("airlift-local-{}-{n}", crate::liveness::token());
        let mut w = match self.writer(&reference, size, want) {
            Ok(w) => w,
            Err(e) if e.class() == Class::AlreadyExists => {
                return Ok(Put::present(
                    want.expect("only a wanted blob can exist already"),
                    size,
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let copied = copy_verified(data, size, want, |chunk| Ok(w.write(chunk)?));
        let digest = match copied {
            Ok(d) => d,
            Err(e) => {
                w.abort();
                return Err(e);
            }
        };
        match w.commit(self, size, Some(&digest), &HashMap::new()) {
            Ok(_) => Ok(Put::written(digest, size)),
            Err(e) if e.class() == Class::AlreadyExists => Ok(Put::present(&digest, size)),
            Err(e) => {
                w.abort();
                Err(e.into())
            }
        }
    }

    fn read(&self, digest: &Digest) -> super::Result<Vec<u8>> {
        let path = self.root().blob(digest);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(digest.clone()),
            _ => StoreError::io(format!(
                "reading blob {digest} at {}",
                crate::escape::shown(&path)
            ))(e),
        })
    }
}

#[cfg(test)]
mod tests;
