//! Ingests of the local store: opening one (one writer per ref, resuming what a crash or a
//! closed session left), appending, and committing it as a blob — verified, fsynced, renamed into
//! place without replacing anything, made read-only.

use super::{io_err, IngestStatus, LocalError, LocalStore};
use crate::digest::{Digest, Hasher};
use crate::error::Class;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Tries at a held ref before `Unavailable` (waiting 1, 2, 4, … ms between them: about 1 s).
const LOCK_ATTEMPTS: u32 = 10;

/// Opens a writer on the ingest `reference`, resuming it when it exists. Only one writer per
/// ref at a time: another gets `Unavailable`. `expected`, when given, must not
/// be committed already.
pub(super) fn open(
    store: &LocalStore,
    reference: &str,
    total: u64,
    expected: Option<&Digest>,
) -> Result<Writer, LocalError> {
    if reference.is_empty() {
        return Err(LocalError::invalid_argument("ref must not be empty"));
    }
    // A held ref is tried again for about a second before giving up (as containerd 1.x's
    // local store did): a client's previous session on the ref may still be closing, since
    // containerd's proxy client closes its side of a Write stream without waiting for ours.
    let mut attempt = 0;
    loop {
        let mut locks = store.inner.locks.lock().unwrap();
        match locks.get(reference) {
            None => {
                locks.insert(reference.to_string(), SystemTime::now());
                break;
            }
            Some(since) if attempt >= LOCK_ATTEMPTS => {
                let held = since.elapsed().unwrap_or_default().as_secs();
                let since = humantime::format_duration(std::time::Duration::from_secs(held));
                return Err(LocalError::new(
                    Class::Unavailable,
                    format!("ref {reference} locked for {since} (another writer holds it)"),
                ));
            }
            Some(_) => {}
        }
        drop(locks);
        std::thread::sleep(std::time::Duration::from_millis(1 << attempt));
        attempt += 1;
    }
    let unlock = Unlock {
        store: store.clone(),
        reference: reference.to_string(),
    };
    if let Some(d) = expected {
        if store.root().blob(d).exists() {
            return Err(LocalError::already_exists(format!("content {d}")));
        }
    }
    let dir = store.root().ingest(reference);
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

pub(super) fn write_time(path: &Path, t: SystemTime) -> io::Result<()> {
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
pub(super) fn read_time(path: &Path) -> io::Result<SystemTime> {
    let text = fs::read_to_string(path)?;
    parse_time(text.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad timestamp"))
}

pub(super) fn parse_time(text: &str) -> Option<SystemTime> {
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

/// The status of the ingest in `dir`, from its files.
pub(crate) fn read_status(dir: &Path) -> io::Result<IngestStatus> {
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

/// Whether a writer on `reference` expecting `total` bytes (0: not said) resumes the ingest of
/// `status`: it must be this ref's, and its total, when both are known, the same.
pub(crate) fn resumes(status: &IngestStatus, reference: &str, total: u64) -> bool {
    status.reference == reference && (total == 0 || status.total == 0 || total == status.total)
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
    if !resumes(&status, reference, total) {
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
            LocalError::new(
                Class::FailedPrecondition,
                "cannot write on a committed writer",
            )
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
    /// `AlreadyExists` (and the ingest goes).
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
            LocalError::new(
                Class::FailedPrecondition,
                format!("cannot commit on closed writer (ref {reference})"),
            )
        })?;
        let fail = io_err(format!("committing ingest ref {reference:?}"));
        file.sync_all().map_err(&fail)?;
        let written = file.metadata().map_err(&fail)?.len();
        drop(file);
        let digest = self.digest();
        if size > 0 && size != written {
            return Err(LocalError::new(
                Class::FailedPrecondition,
                format!("unexpected commit size {written}, expected {size}"),
            ));
        }
        if let Some(e) = expected {
            if *e != digest {
                return Err(LocalError::new(
                    Class::FailedPrecondition,
                    format!("unexpected commit digest {digest}, expected {e}"),
                ));
            }
        }
        let target = store.root().blob(&digest);
        let data = self.dir.join("data");
        match crate::sys::rename_noreplace(&data, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_dir_all(&self.dir);
                return Err(LocalError::already_exists(format!("content {digest}")));
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
            if let Err(e) = super::labels::write(&store.root().labels(&digest), labels) {
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

impl Drop for Writer {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = write_time(&self.dir.join("updatedat"), self.status.updated);
        }
    }
}
