//! The local store: a content store in containerd's own on-disk layout, owned by airlift when
//! containerd uses airlift as its content proxy plugin.
//!
//! The layout is containerd's (`io.containerd.content.v1.content`), so an existing content root
//! can be taken over and handed back without migration:
//!
//! - `blobs/sha256/<hex>` — committed blobs, read-only, each renamed into place only after its
//!   bytes were verified against the expected size and digest and fsynced;
//! - `ingest/<sha256 of the ref>/` — one directory per ingest: `ref` (the ref), `data` (the bytes
//!   so far), `startedat`, `updatedat` (RFC 3339 text) and `total` (decimal, when known). An
//!   ingest survives restarts: its offset is the length of `data`, and opening it again re-hashes
//!   what is there. Nothing else is state: a crash leaves a resumable ingest or a committed blob.
//!
//! Labels set through the Content API live beside the blobs in `airlift.labels/sha256/<hex>`
//! (JSON, replaced atomically); containerd keeps its own labels in its metadata and never needs
//! these. Blobs with more than one link are airlift's direct imports in mid-claim (the staged
//! temporary file is the other link): [`LocalStore::list`] leaves them out, so containerd's
//! garbage collector, which deletes every listed blob its metadata does not know, cannot take a
//! blob between its link and its claim.

use crate::digest::{Digest, Hasher};
use crate::filters::{map_field, Adaptor, Filter};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Tries at a held ref before `Unavailable` (waiting 1, 2, 4, … ms between them: about 1 s).
const LOCK_ATTEMPTS: u32 = 10;

/// Directory of the labels set through the Content API.
const LABELS_DIR: &str = "airlift.labels";

/// Why a local store operation failed, in containerd's error classes.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The blob or ingest does not exist.
    #[error("{0}: not found")]
    NotFound(String),
    /// The blob exists already.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// The request contradicts the state (size or digest mismatch at commit, bad field path).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another writer holds the ref.
    #[error("{0}")]
    Unavailable(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A write at an offset other than the ingest's current one, or a read past the end.
    #[error("{0}")]
    OutOfRange(String),
    /// The filesystem failed.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        cause: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl Fn(io::Error) -> LocalError {
    let context = context.into();
    move |cause| LocalError::Io {
        context: context.clone(),
        cause,
    }
}

/// Maps a failed filesystem call on blob `d`: an absent blob is `NotFound`, anything else an I/O
/// error saying what was being done.
fn blob_err<'a>(d: &'a Digest, doing: &'a str) -> impl Fn(io::Error) -> LocalError + 'a {
    move |e| match e.kind() {
        io::ErrorKind::NotFound => LocalError::NotFound(format!("content {d}")),
        _ => LocalError::Io {
            context: format!("{doing} content {d}"),
            cause: e,
        },
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
    root: PathBuf,
    /// Refs with an open writer, and since when.
    locks: Mutex<HashMap<String, SystemTime>>,
}

/// A content store in containerd's layout. Cheap to clone; clones share the ref locks.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

impl LocalStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<LocalStore, LocalError> {
        for dir in ["blobs/sha256", "ingest"] {
            let d = root.join(dir);
            fs::create_dir_all(&d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        Ok(LocalStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.inner.root.join("blobs/sha256").join(d.hex())
    }

    fn labels_path(&self, d: &Digest) -> PathBuf {
        self.inner
            .root
            .join(LABELS_DIR)
            .join("sha256")
            .join(d.hex())
    }

    fn ingest_dir(&self, reference: &str) -> PathBuf {
        let key = Digest::of(reference.as_bytes());
        self.inner.root.join("ingest").join(key.hex())
    }

    /// Parses a digest given by a client.
    pub fn parse_digest(s: &str) -> Result<Digest, LocalError> {
        s.parse()
            .map_err(|_| LocalError::InvalidArgument(format!("invalid digest {s:?}")))
    }

    /// Metadata of a committed blob.
    pub fn info(&self, d: &Digest) -> Result<BlobInfo, LocalError> {
        let meta = fs::metadata(self.blob_path(d)).map_err(blob_err(d, "inspecting"))?;
        Ok(self.info_of(d.clone(), &meta))
    }

    fn info_of(&self, digest: Digest, meta: &fs::Metadata) -> BlobInfo {
        let labels = fs::read(self.labels_path(&digest))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        BlobInfo {
            size: meta.len(),
            created: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            updated: meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH),
            labels,
            digest,
        }
    }

    /// Changes a blob's labels as containerd does: no field paths or `labels` replaces them all;
    /// `labels.<key>` sets (or, with an empty or absent value, removes) one label.
    pub fn update(
        &self,
        d: &Digest,
        labels: &HashMap<String, String>,
        fieldpaths: &[String],
    ) -> Result<BlobInfo, LocalError> {
        let current = self.info(d)?;
        let mut next = current.labels.clone();
        if fieldpaths.is_empty() {
            next = labels.clone();
        }
        for path in fieldpaths {
            if path == "labels" {
                next = labels.clone();
            } else if let Some(key) = path.strip_prefix("labels.") {
                match labels.get(key).filter(|v| !v.is_empty()) {
                    Some(v) => next.insert(key.to_string(), v.clone()),
                    None => next.remove(key),
                };
            } else {
                return Err(LocalError::InvalidArgument(format!(
                    "cannot update {path:?} field on content info {d:?}"
                )));
            }
        }
        next.retain(|_, v| !v.is_empty());
        self.write_labels(d, &next)?;
        // As containerd does: the access time records the update, the modification time stays
        // the commit time.
        let now = SystemTime::now();
        if let Ok(f) = File::open(self.blob_path(d)) {
            let _ = f.set_times(
                fs::FileTimes::new()
                    .set_accessed(now)
                    .set_modified(current.created),
            );
        }
        self.info(d)
    }

    fn write_labels(&self, d: &Digest, labels: &HashMap<String, String>) -> Result<(), LocalError> {
        let path = self.labels_path(d);
        if labels.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(io_err(format!("removing {}", path.display()))(e))
                }
                _ => Ok(()),
            };
        }
        let dir = path.parent().expect("labels path has a parent");
        let fail = io_err(format!("writing {}", path.display()));
        (|| {
            fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            tmp.write_all(&serde_json::to_vec(labels).map_err(io::Error::other)?)?;
            tmp.as_file().sync_data()?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })()
        .map_err(fail)
    }

    /// Every committed blob matching `filter`, except blobs in mid-claim (see the module docs).
    pub fn list(&self, filter: &Filter) -> Result<Vec<BlobInfo>, LocalError> {
        let dir = self.inner.root.join("blobs/sha256");
        let entries = fs::read_dir(&dir).map_err(io_err(format!("listing {}", dir.display())))?;
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
        fs::remove_file(self.blob_path(d)).map_err(blob_err(d, "removing"))?;
        let _ = fs::remove_file(self.labels_path(d));
        Ok(())
    }

    /// Opens a committed blob for reading, with its size.
    pub fn open_blob(&self, d: &Digest) -> Result<(File, u64), LocalError> {
        let f = File::open(self.blob_path(d)).map_err(blob_err(d, "opening"))?;
        let size = f.metadata().map_err(blob_err(d, "inspecting"))?.len();
        Ok((f, size))
    }

    /// The state of the ingest `reference`, from disk.
    pub fn status(&self, reference: &str) -> Result<IngestStatus, LocalError> {
        let dir = self.ingest_dir(reference);
        match read_status(&dir) {
            Ok(s) if s.reference == reference => Ok(s),
            Ok(_) => Err(LocalError::NotFound(format!("ingest ref {reference:?}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(LocalError::NotFound(format!("ingest ref {reference:?}")))
            }
            Err(e) => Err(io_err(format!("ingest ref {reference:?}"))(e)),
        }
    }

    /// The state of every ingest matching `filter`.
    pub fn list_statuses(&self, filter: &Filter) -> Result<Vec<IngestStatus>, LocalError> {
        let dir = self.inner.root.join("ingest");
        let entries = fs::read_dir(&dir).map_err(io_err(format!("listing {}", dir.display())))?;
        let mut out: Vec<IngestStatus> = entries
            .flatten()
            .filter_map(|e| read_status(&e.path()).ok())
            .filter(|s| filter.matches(s))
            .collect();
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Discards the ingest `reference`.
    pub fn abort(&self, reference: &str) -> Result<(), LocalError> {
        let dir = self.ingest_dir(reference);
        if !dir.exists() {
            return Err(LocalError::NotFound(format!("ingest ref {reference:?}")));
        }
        fs::remove_dir_all(&dir).map_err(io_err(format!("aborting ingest ref {reference:?}")))
    }

    /// Opens a writer on the ingest `reference`, resuming it when it exists. Only one writer per
    /// ref at a time: another gets [`LocalError::Unavailable`]. `expected`, when given, must not
    /// be committed already.
    pub fn writer(
        &self,
        reference: &str,
        total: u64,
        expected: Option<&Digest>,
    ) -> Result<Writer, LocalError> {
        if reference.is_empty() {
            return Err(LocalError::InvalidArgument("ref must not be empty".into()));
        }
        // A held ref is tried again for about a second before giving up (as containerd 1.x's
        // local store did): a client's previous session on the ref may still be closing, since
        // containerd's proxy client closes its side of a Write stream without waiting for ours.
        let mut attempt = 0;
        loop {
            let mut locks = self.inner.locks.lock().unwrap();
            match locks.get(reference) {
                None => {
                    locks.insert(reference.to_string(), SystemTime::now());
                    break;
                }
                Some(since) if attempt >= LOCK_ATTEMPTS => {
                    let held = since.elapsed().unwrap_or_default().as_secs();
                    let since = humantime::format_duration(std::time::Duration::from_secs(held));
                    return Err(LocalError::Unavailable(format!(
                        "ref {reference} locked for {since} (another writer holds it)"
                    )));
                }
                Some(_) => {}
            }
            drop(locks);
            std::thread::sleep(std::time::Duration::from_millis(1 << attempt));
            attempt += 1;
        }
        let unlock = Unlock {
            store: self.clone(),
            reference: reference.to_string(),
        };
        if let Some(d) = expected {
            if self.blob_path(d).exists() {
                return Err(LocalError::AlreadyExists(format!("content {d}")));
            }
        }
        let dir = self.ingest_dir(reference);
        let fail = io_err(format!("ingest ref {reference:?}"));
        let resumed = match fs::create_dir(&dir) {
            Ok(()) => None,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                resume(&dir, reference, total).map_err(&fail)?
            }
            Err(e) => return Err(fail(e)),
        };
        let (hasher, status, file) = match resumed {
            Some(r) => r,
            None => {
                let now = SystemTime::now();
                (|| {
                    fs::write(dir.join("ref"), reference)?;
                    write_time(&dir.join("startedat"), now)?;
                    write_time(&dir.join("updatedat"), now)?;
                    if total > 0 {
                        fs::write(dir.join("total"), total.to_string())?;
                    } else {
                        let _ = fs::remove_file(dir.join("total"));
                    }
                    // A fresh file (a leftover may be read-only or shared with something else).
                    match fs::remove_file(dir.join("data")) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                    let file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(dir.join("data"))?;
                    let status = IngestStatus {
                        reference: reference.to_string(),
                        offset: 0,
                        total,
                        started: now,
                        updated: now,
                    };
                    Ok::<_, io::Error>((Hasher::default(), status, file))
                })()
                .map_err(fail)?
            }
        };
        Ok(Writer {
            dir,
            file: Some(file),
            hasher,
            status,
            unlock: Some(unlock),
        })
    }
}

/// Releases a ref's lock when its writer goes.
struct Unlock {
    store: LocalStore,
    reference: String,
}

impl Drop for Unlock {
    fn drop(&mut self) {
        // Poison-safe: this also runs while a panic unwinds, where a second panic would abort.
        self.store
            .inner
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.reference);
    }
}

fn write_time(path: &Path, t: SystemTime) -> io::Result<()> {
    // The formatter covers 1970..10000; clocks outside that are clamped.
    let t = t.clamp(
        SystemTime::UNIX_EPOCH,
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799),
    );
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, humantime::format_rfc3339_nanos(t).to_string())?;
    fs::rename(tmp, path)
}

/// Reads a timestamp file: RFC 3339, in UTC (`Z`, as airlift writes) or with an offset (as
/// containerd writes local time).
fn read_time(path: &Path) -> io::Result<SystemTime> {
    let text = fs::read_to_string(path)?;
    parse_time(text.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad timestamp"))
}

fn parse_time(text: &str) -> Option<SystemTime> {
    if let Some(utc) = text.strip_suffix('Z') {
        return humantime::parse_rfc3339_weak(utc).ok();
    }
    // `…±HH:MM`: the local time, then the offset removed.
    let (local, offset) = text.split_at(text.len().checked_sub(6)?);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = offset[1..].split_once(':')?;
    let secs = (h.parse::<u64>().ok()? * 3600 + m.parse::<u64>().ok()? * 60) as i64 * sign;
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let d = std::time::Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        t.checked_sub(d)
    } else {
        t.checked_add(d)
    }
}

fn read_status(dir: &Path) -> io::Result<IngestStatus> {
    let reference = fs::read_to_string(dir.join("ref"))?;
    let data = fs::metadata(dir.join("data"))?;
    let total = fs::read_to_string(dir.join("total"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let started = read_time(&dir.join("startedat")).unwrap_or(SystemTime::UNIX_EPOCH);
    let updated = read_time(&dir.join("updatedat"))
        .ok()
        .into_iter()
        .chain(data.modified().ok())
        .max()
        .unwrap_or(started);
    Ok(IngestStatus {
        reference,
        offset: data.len(),
        total,
        started,
        updated,
    })
}

/// Reopens an existing ingest, re-hashing its data. `Ok(None)` when it is not this ref's
/// resumable ingest (another ref's leftovers, missing files, a different total): it is then
/// started over. Any other failure is an error, and the bytes stay for a later attempt.
fn resume(
    dir: &Path,
    reference: &str,
    total: u64,
) -> io::Result<Option<(Hasher, IngestStatus, File)>> {
    let status = match read_status(dir) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidData
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    if status.reference != reference || (total > 0 && status.total > 0 && total != status.total) {
        return Ok(None);
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("data"))?;
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    let total = if status.total > 0 {
        status.total
    } else {
        total
    };
    if total > 0 && status.total == 0 {
        fs::write(dir.join("total"), total.to_string())?;
    }
    Ok(Some((
        hasher,
        IngestStatus {
            offset,
            total,
            ..status
        },
        file,
    )))
}

/// An open ingest: appends, reports, commits. Dropping it keeps the ingest for a later resume
/// and releases the ref.
pub struct Writer {
    dir: PathBuf,
    file: Option<File>,
    hasher: Hasher,
    status: IngestStatus,
    /// Held until the writer is dropped or commits (successfully or not), as in containerd.
    unlock: Option<Unlock>,
}

impl Writer {
    /// The ingest's current state.
    pub fn status(&self) -> &IngestStatus {
        &self.status
    }

    /// Digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    fn file(&mut self) -> Result<&mut File, LocalError> {
        self.file.as_mut().ok_or_else(|| {
            LocalError::FailedPrecondition("cannot write on a committed writer".into())
        })
    }

    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<(), LocalError> {
        let reference = self.status.reference.clone();
        self.file()?
            .write_all(data)
            .map_err(io_err(format!("writing ingest ref {reference:?}")))?;
        self.hasher.update(data);
        self.status.offset += data.len() as u64;
        self.status.updated = SystemTime::now();
        Ok(())
    }

    /// Starts the ingest over (containerd's `Truncate(0)`).
    pub fn restart(&mut self) -> Result<(), LocalError> {
        let reference = self.status.reference.clone();
        let f = self.file()?;
        (|| {
            f.set_len(0)?;
            std::io::Seek::seek(f, io::SeekFrom::Start(0))
        })()
        .map_err(io_err(format!("truncating ingest ref {reference:?}")))?;
        self.hasher = Hasher::default();
        self.status.offset = 0;
        self.status.updated = SystemTime::now();
        Ok(())
    }

    /// Commits the ingest as a blob: `size` (when not 0) and `expected` (when given) must match
    /// what was written. The data is fsynced, renamed into `blobs/`, made read-only, and the
    /// directory entry is fsynced before this returns. An existing blob gives
    /// [`LocalError::AlreadyExists`] (and the ingest goes).
    pub fn commit(
        &mut self,
        store: &LocalStore,
        size: u64,
        expected: Option<&Digest>,
        labels: &HashMap<String, String>,
    ) -> Result<Digest, LocalError> {
        let reference = self.status.reference.clone();
        let _unlock = self.unlock.take();
        let file = self.file.take().ok_or_else(|| {
            LocalError::FailedPrecondition(format!(
                "cannot commit on closed writer (ref {reference})"
            ))
        })?;
        let fail = io_err(format!("committing ingest ref {reference:?}"));
        file.sync_all().map_err(&fail)?;
        let written = file.metadata().map_err(&fail)?.len();
        drop(file);
        let digest = self.digest();
        if size > 0 && size != written {
            return Err(LocalError::FailedPrecondition(format!(
                "unexpected commit size {written}, expected {size}"
            )));
        }
        if let Some(e) = expected {
            if *e != digest {
                return Err(LocalError::FailedPrecondition(format!(
                    "unexpected commit digest {digest}, expected {e}"
                )));
            }
        }
        let target = store.blob_path(&digest);
        let data = self.dir.join("data");
        match rename_noreplace(&data, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_dir_all(&self.dir);
                return Err(LocalError::AlreadyExists(format!("content {digest}")));
            }
            Err(e) => return Err(fail(e)),
        }
        // The blob is in place: what follows cannot undo that, so failures are only logged (as
        // containerd does).
        let finish = || -> io::Result<()> {
            let now = SystemTime::now();
            let f = File::open(&target)?;
            f.set_times(fs::FileTimes::new().set_accessed(now).set_modified(now))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o444))?;
            if let Some(parent) = target.parent() {
                File::open(parent)?.sync_all()?;
            }
            fs::remove_dir_all(&self.dir)
        };
        if let Err(e) = finish() {
            tracing::warn!(%digest, error = %e, "committed blob: finishing touches failed");
        }
        if !labels.is_empty() {
            if let Err(e) = store.write_labels(&digest, labels) {
                tracing::warn!(%digest, error = %e, "committed blob: storing its labels failed");
            }
        }
        Ok(digest)
    }

    /// Discards the ingest while still holding its ref, so no other writer can take it up in
    /// between.
    pub fn abort(mut self) {
        self.file = None;
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then). Filesystems without
/// `RENAME_NOREPLACE` get a check and a plain rename.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths relative to the current directory's descriptor.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) {
        if to.exists() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
        }
        return fs::rename(from, to);
    }
    Err(e)
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = write_time(&self.dir.join("updatedat"), self.status.updated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Filter {
        Filter::parse::<&str>(&[]).unwrap()
    }

    #[test]
    fn write_commit_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let data = b"hello, content".to_vec();
        let d = Digest::of(&data);
        let mut w = s.writer("r1", data.len() as u64, Some(&d)).unwrap();
        w.write(&data[..5]).unwrap();
        w.write(&data[5..]).unwrap();
        let labels = HashMap::from([("k".to_string(), "v".to_string())]);
        assert_eq!(
            w.commit(&s, data.len() as u64, Some(&d), &labels).unwrap(),
            d
        );
        drop(w);
        let info = s.info(&d).unwrap();
        assert_eq!(
            (info.size, info.labels.get("k").cloned()),
            (14, Some("v".into()))
        );
        let (mut f, size) = s.open_blob(&d).unwrap();
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert_eq!((back, size), (data.clone(), 14));
        assert!(matches!(s.status("r1"), Err(LocalError::NotFound(_))));
        assert!(matches!(
            s.writer("r2", 0, Some(&d)),
            Err(LocalError::AlreadyExists(_))
        ));
        assert_eq!(s.list(&all()).unwrap().len(), 1);
        s.delete(&d).unwrap();
        assert!(matches!(s.delete(&d), Err(LocalError::NotFound(_))));
        assert!(s.list(&all()).unwrap().is_empty());
    }

    #[test]
    fn one_writer_per_ref_and_resume_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 3000];
        let d = Digest::of(&data);
        {
            let s = LocalStore::open(dir.path()).unwrap();
            let mut w = s.writer("r", 3000, None).unwrap();
            assert!(matches!(
                s.writer("r", 3000, None),
                Err(LocalError::Unavailable(_))
            ));
            w.write(&data[..1000]).unwrap();
        }
        // A new store over the same directory (a restarted airlift) resumes at 1000.
        let s = LocalStore::open(dir.path()).unwrap();
        let st = s.status("r").unwrap();
        assert_eq!((st.offset, st.total), (1000, 3000));
        assert_eq!(s.list_statuses(&all()).unwrap().len(), 1);
        let mut w = s.writer("r", 0, None).unwrap();
        assert_eq!(w.status().offset, 1000);
        w.write(&data[1000..]).unwrap();
        assert!(matches!(
            w.commit(&s, 2999, None, &HashMap::new()),
            Err(LocalError::FailedPrecondition(_))
        ));
        let mut w = s.writer("r", 0, None).unwrap();
        assert_eq!(w.status().offset, 3000);
        let wrong = Digest::of(b"x");
        assert!(matches!(
            w.commit(&s, 3000, Some(&wrong), &HashMap::new()),
            Err(LocalError::FailedPrecondition(_))
        ));
        let mut w = s.writer("r", 0, None).unwrap();
        assert_eq!(w.commit(&s, 3000, Some(&d), &HashMap::new()).unwrap(), d);
        assert!(s.status("r").is_err());
        s.writer("x", 0, None).unwrap().write(b"abc").unwrap();
        s.abort("x").unwrap();
        assert!(matches!(s.abort("x"), Err(LocalError::NotFound(_))));
    }

    #[test]
    fn timestamps_with_offsets() {
        let z = parse_time("2026-11-23T08:00:00.5Z").unwrap();
        assert_eq!(parse_time("2026-11-23T10:00:00.5+02:00"), Some(z));
        assert_eq!(parse_time("2026-11-23T03:00:00.5-05:00"), Some(z));
        assert_eq!(parse_time("yesterday"), None);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        write_time(
            &p,
            SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(read_time(&p).unwrap(), SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn commit_never_replaces_a_blob() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let data = b"the same bytes".to_vec();
        let d = Digest::of(&data);
        let mut w = s.writer("r", 0, None).unwrap();
        w.write(&data).unwrap();
        // Meanwhile the blob appears (a direct import links it in).
        fs::write(s.blob_path(&d), &data).unwrap();
        let inode = fs::metadata(s.blob_path(&d)).unwrap().ino();
        assert!(matches!(
            w.commit(&s, 0, Some(&d), &HashMap::new()),
            Err(LocalError::AlreadyExists(_))
        ));
        assert_eq!(fs::metadata(s.blob_path(&d)).unwrap().ino(), inode);
        assert!(matches!(s.status("r"), Err(LocalError::NotFound(_))));
    }

    #[test]
    fn labels_update_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let mut digests = Vec::new();
        for (i, label) in ["a", "b"].iter().enumerate() {
            let data = vec![i as u8; 10];
            let mut w = s.writer(&format!("r{i}"), 0, None).unwrap();
            w.write(&data).unwrap();
            let l = HashMap::from([("example.com/x".to_string(), label.to_string())]);
            digests.push(w.commit(&s, 0, None, &l).unwrap());
        }
        let f = Filter::parse(&[r#"labels."example.com/x"==b"#]).unwrap();
        let found = s.list(&f).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].digest, digests[1]);
        let one = HashMap::from([("y".to_string(), "1".to_string())]);
        let info = s.update(&digests[0], &one, &["labels.y".into()]).unwrap();
        assert_eq!(info.labels.len(), 2);
        let info = s.update(&digests[0], &one, &["labels".into()]).unwrap();
        assert_eq!(info.labels, one);
        let info = s
            .update(&digests[0], &HashMap::new(), &["labels.y".into()])
            .unwrap();
        assert!(info.labels.is_empty());
        assert!(matches!(
            s.update(&digests[0], &one, &["size".into()]),
            Err(LocalError::InvalidArgument(_))
        ));
        // A blob with a second link (an import mid-claim) is not listed.
        fs::hard_link(
            s.blob_path(&digests[0]),
            dir.path().join("staged-elsewhere"),
        )
        .unwrap();
        assert_eq!(s.list(&all()).unwrap().len(), 1);
        assert!(s.info(&digests[0]).is_ok());
    }
}
