//! The direct store: blobs are written into containerd's content root on this machine and
//! claimed into the namespace by digest, so no blob data crosses the socket.
//!
//! Each blob is streamed into a temporary file beside the blobs (same filesystem, outside
//! containerd's `ingest/`), hashed on the way, and — on a committer thread, while the next blob
//! is already streaming — fsynced and made read-only: the blob is *staged*. Once the plan says
//! which blobs the images use, [`Staging::claim_staged`] links each into place as
//! `blobs/sha256/<hex>` and claims it: a `Content.Write` STAT + COMMIT carrying only the expected
//! digest, size and the blob's labels, under the archive's lease, makes containerd's shared
//! content policy commit the on-disk blob into the namespace — blob, labels and lease entry in one
//! metadata transaction. Staged blobs no image uses are never linked; their temporary files go.
//! Should a claim fail (containerd sees a different filesystem, or its garbage collector removed
//! the linked file meanwhile), the blob is streamed from the temporary file instead.
//!
//! A blob needed before the plan is made (a layer to unpack while the archive is still read) is
//! claimed on its own, without labels, as soon as it is staged ([`Staging::claim_now`]); the
//! record step then labels it like any blob already in the namespace.

use super::layout::ContentRoot;
use super::stream::StreamStore;
use super::{copy_verified, ContentStore, Put, Result, Staging, StoreError, StoreKind};
use crate::containerd::Client;
use crate::digest::Digest;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use tokio::runtime::Handle;

/// Numbers temporary files uniquely within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Claims sent to containerd at the same time.
const CLAIMS_IN_FLIGHT: usize = 8;

/// Writeback of a blob being written is started every this many bytes, so its final fsync has
/// little left to wait for.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// What the committer thread shares with the store.
struct Shared {
    root: ContentRoot,
    stream: StreamStore,
    client: Client,
    handle: Handle,
    /// Blobs written and queued for their fsync: digest → size.
    pending: Mutex<HashMap<Digest, u64>>,
    /// Signalled whenever a blob leaves `pending`.
    settled: std::sync::Condvar,
    /// Blobs fsynced and waiting for their claim: digest → (temporary file, size).
    staged: Mutex<HashMap<Digest, (TempFile, u64)>>,
    /// The first staging failure, reported by `flush`.
    failure: Mutex<Option<StoreError>>,
}

enum Job {
    Stage {
        file: File,
        tmp: TempFile,
        digest: Digest,
        size: u64,
    },
    Barrier(mpsc::SyncSender<()>),
}

/// Writes into a content root that containerd shares with this process.
pub struct DirectStore {
    shared: Arc<Shared>,
    jobs: Mutex<mpsc::SyncSender<Job>>,
}

impl DirectStore {
    /// Opens the content root `root`, checking it is on this machine and writable. Temporary
    /// files of dead airlift processes are removed.
    pub fn open(
        root: &ContentRoot,
        client: Client,
        handle: Handle,
        prefix: String,
    ) -> io::Result<DirectStore> {
        if !root.is_here() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} does not exist here (containerd runs elsewhere?)",
                    crate::escape::shown(&root.path())
                ),
            ));
        }
        fs::create_dir_all(root.blobs())?;
        let temp = root.temp();
        fs::create_dir_all(&temp)?;
        crate::liveness::hold(&temp)?;
        clean_stale(&temp);
        let shared = Arc::new(Shared {
            root: root.clone(),
            stream: StreamStore::new(client.clone(), handle.clone(), prefix),
            client,
            handle,
            pending: Mutex::new(HashMap::new()),
            settled: std::sync::Condvar::new(),
            staged: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
        });
        // A few blobs may wait for their fsync while the next ones stream.
        let (tx, rx) = mpsc::sync_channel::<Job>(4);
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("airlift-commit".into())
            .spawn(move || worker.commit_loop(rx))?;
        Ok(DirectStore {
            shared,
            jobs: Mutex::new(tx),
        })
    }
}

impl Shared {
    /// The committer thread: makes written blobs durable, in order.
    fn commit_loop(&self, jobs: mpsc::Receiver<Job>) {
        for job in jobs {
            match job {
                Job::Barrier(done) => {
                    let _ = done.send(());
                }
                Job::Stage {
                    file,
                    tmp,
                    digest,
                    size,
                } => {
                    let result = stage(file, &tmp, &digest);
                    fail::fail_point!("stage", |_| crate::sys::crash());
                    if result.is_ok() {
                        self.staged
                            .lock()
                            .unwrap()
                            .insert(digest.clone(), (tmp, size));
                    }
                    if let Err(e) = result {
                        self.failure.lock().unwrap().get_or_insert(e);
                    }
                    self.pending.lock().unwrap().remove(&digest);
                    self.settled.notify_all();
                }
            }
        }
    }

    /// Claims a blob that another namespace has on disk already, without writing it.
    fn claim_present(&self, digest: &Digest, size: u64) -> bool {
        let on_disk = fs::metadata(self.root.blob(digest)).is_ok_and(|m| m.len() == size);
        on_disk
            && self
                .handle
                .block_on(self.client.claim(
                    &self.stream.next_ref(),
                    digest,
                    size,
                    &BTreeMap::new(),
                ))
                .is_ok()
    }

    /// Streams a staged blob whose claim failed.
    fn stream_instead(&self, tmp: &TempFile, digest: &Digest, size: u64) -> Result<()> {
        let mut f = File::open(tmp.path()).map_err(StoreError::io(format!(
            "reopening staged blob {digest} at {}",
            crate::escape::shown(&tmp.path())
        )))?;
        self.stream.put(&mut f, size, Some(digest))?;
        Ok(())
    }
}

/// Makes a written temporary file durable and read-only.
fn stage(file: File, tmp: &TempFile, digest: &Digest) -> Result<()> {
    let what = |doing: &str| {
        format!(
            "{doing} blob {digest} at {}",
            crate::escape::shown(&tmp.path())
        )
    };
    file.sync_all().map_err(StoreError::io(what("syncing")))?;
    drop(file);
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o444))
        .map_err(StoreError::io(what("sealing")))?;
    Ok(())
}

/// Removes temporary files left by airlift processes that no longer run (see
/// [`crate::liveness`]), with their lock files.
pub fn clean_stale(temp: &Path) {
    let Ok(entries) = fs::read_dir(temp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".lock.new") {
            continue; // a process taking its lock right now
        }
        let token = name
            .strip_suffix(".lock")
            .or_else(|| crate::liveness::token_of(&name, ""));
        if token.is_some_and(|t| crate::liveness::is_dead(temp, t)) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A temporary file, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl ContentStore for DirectStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Direct
    }

    fn scratch_dir(&self) -> Option<PathBuf> {
        Some(self.shared.root.temp())
    }

    fn staging(&self) -> Option<&dyn Staging> {
        Some(self)
    }

    fn exists(&self, digest: &Digest) -> Result<Option<u64>> {
        if let Some(size) = self.shared.pending.lock().unwrap().get(digest) {
            return Ok(Some(*size));
        }
        if let Some((_, size)) = self.shared.staged.lock().unwrap().get(digest) {
            return Ok(Some(*size));
        }
        self.shared.stream.exists(digest)
    }

    fn write(&self, data: &mut dyn Read, size: u64, want: Option<&Digest>) -> Result<Put> {
        if let Some(d) = want {
            // On disk already (another namespace has it): claimed without writing.
            if self.shared.claim_present(d, size) {
                return Ok(Put::present(d, size));
            }
        }
        let temp = self.shared.root.temp();
        super::check_room(&temp, size, || {
            want.map_or("a blob".to_string(), |d| format!("blob {d}"))
        })?;
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = TempFile(
            self.shared
                .root
                .temp()
                .join(format!("{}-{n}", crate::liveness::token())),
        );
        let what = |doing: &str| {
            let blob = want.map_or("a blob".to_string(), |d| format!("blob {d}"));
            format!("{doing} {blob} at {}", crate::escape::shown(&tmp.path()))
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp.path())
            .map_err(StoreError::io(what("creating")))?;
        let mut offset = 0u64;
        let mut flushed = 0u64;
        let digest = copy_verified(data, size, want, |chunk| {
            file.write_all(chunk)
                .map_err(StoreError::io(what("writing")))?;
            offset += chunk.len() as u64;
            if offset - flushed >= WRITEBACK_EVERY {
                crate::sys::start_writeback(&file, flushed, offset - flushed);
                flushed = offset;
            }
            Ok(())
        })?;
        if want.is_none() {
            // Its digest is known only now: present already? Then the copy goes unsynced.
            if let Some(present) = self.exists(&digest)? {
                return Ok(Put::present(&digest, present));
            }
        }
        if let Some(e) = self.shared.failure.lock().unwrap().take() {
            return Err(e);
        }
        self.shared
            .pending
            .lock()
            .unwrap()
            .insert(digest.clone(), size);
        let job = Job::Stage {
            file,
            tmp,
            digest: digest.clone(),
            size,
        };
        if self.jobs.lock().unwrap().send(job).is_err() {
            return Err(StoreError::io(format!("staging blob {digest}"))(
                io::Error::other("the commit thread stopped"),
            ));
        }
        Ok(Put::written(digest, size))
    }

    fn flush(&self) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.jobs.lock().unwrap().send(Job::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
        match self.shared.failure.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.flush()?;
        let staged = self
            .shared
            .staged
            .lock()
            .unwrap()
            .get(digest)
            .map(|(tmp, _)| tmp.path().to_path_buf());
        let path = match staged {
            Some(p) => p,
            None if self.exists(digest)?.is_none() => {
                return Err(StoreError::NotFound(digest.clone()))
            }
            None => self.shared.root.blob(digest),
        };
        fs::read(&path).map_err(StoreError::io(format!(
            "reading blob {digest} at {}",
            crate::escape::shown(&path)
        )))
    }
}

impl Drop for DirectStore {
    fn drop(&mut self) {
        // Pending fsyncs finish before the store goes; staged blobs nobody claimed are removed
        // now, not when the commit thread lets go of them (the process may exit first).
        let _ = self.flush();
        self.shared.staged.lock().unwrap().clear();
    }
}

mod claim;

#[cfg(test)]
mod tests;
