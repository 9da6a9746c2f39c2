//! The direct store: blobs are written into containerd's content root on this machine and
//! claimed into the namespace by digest, so no blob data crosses the socket.
//!
//! Each blob is streamed into a temporary file beside the blobs (same filesystem, outside
//! containerd's `ingest/`), hashed on the way, and — on a committer thread, while the next blob
//! is already streaming — fsynced and made read-only: the blob is *staged*. Once the plan says
//! which blobs the images use, [`ContentStore::claim_staged`] links each into place as
//! `blobs/sha256/<hex>` and claims it: a `Content.Write` STAT + COMMIT carrying only the expected
//! digest, size and the blob's labels, under the archive's lease, makes containerd's shared
//! content policy commit the on-disk blob into the namespace — blob, labels and lease entry in one
//! metadata transaction. Staged blobs no image uses are never linked; their temporary files go.
//! Should a claim fail (containerd sees a different filesystem, or its garbage collector removed
//! the linked file meanwhile), the blob is streamed from the temporary file instead.

use super::stream::StreamStore;
use super::{copy_verified, ContentStore, Put, StoreError};
use crate::containerd::Containerd;
use crate::digest::Digest;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use tokio::runtime::Handle;

/// Numbers temporary files uniquely within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Name of airlift's temporary directory inside the content root.
pub const TEMP_DIR: &str = "airlift.tmp";

/// Claims sent to containerd at the same time.
const CLAIMS_IN_FLIGHT: usize = 8;

/// Writeback of a blob being written is started every this many bytes, so its final fsync has
/// little left to wait for.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// What the committer thread shares with the store.
struct Shared {
    root: PathBuf,
    stream: StreamStore,
    client: Containerd,
    handle: Handle,
    /// Blobs written and queued for their fsync: digest → size.
    pending: Mutex<HashMap<Digest, u64>>,
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
    temp: PathBuf,
    jobs: Mutex<mpsc::SyncSender<Job>>,
}

impl DirectStore {
    /// Opens the content root `root`, checking it is on this machine and writable. Temporary
    /// files of dead airlift processes are removed.
    pub fn open(
        root: &Path,
        client: Containerd,
        handle: Handle,
        prefix: String,
    ) -> io::Result<DirectStore> {
        // containerd creates the content root lazily, on its first blob; its parent (containerd's
        // root) must exist, or this is not the machine containerd runs on.
        let parent_ok = root.parent().is_some_and(Path::is_dir);
        if !root.is_dir() && !parent_ok {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} does not exist here (containerd runs elsewhere?)",
                    root.display()
                ),
            ));
        }
        fs::create_dir_all(root.join("blobs").join("sha256"))?;
        let temp = root.join(TEMP_DIR);
        fs::create_dir_all(&temp)?;
        crate::liveness::hold(&temp)?;
        clean_stale(&temp);
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            stream: StreamStore::new(client.clone(), handle.clone(), prefix),
            client,
            handle,
            pending: Mutex::new(HashMap::new()),
            staged: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
        });
        // A few blobs may wait for their fsync while the next ones stream.
        let (tx, rx) = mpsc::sync_channel::<Job>(4);
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("airlift-commit".into())
            .spawn(move || {
                for job in rx {
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
                            let result = stage(file, &tmp);
                            if result.is_ok() {
                                worker
                                    .staged
                                    .lock()
                                    .unwrap()
                                    .insert(digest.clone(), (tmp, size));
                            }
                            worker.pending.lock().unwrap().remove(&digest);
                            if let Err(e) = result {
                                worker.failure.lock().unwrap().get_or_insert(e);
                            }
                        }
                    }
                }
            })?;
        Ok(DirectStore {
            shared,
            temp,
            jobs: Mutex::new(tx),
        })
    }
}

impl Shared {
    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(d.hex())
    }

    /// Claims an on-disk blob with its labels; falls back to streaming `fallback` when
    /// containerd will not (the blob is then committed without labels: returns `false`).
    fn claim(
        &self,
        client: &Containerd,
        digest: &Digest,
        size: u64,
        labels: &BTreeMap<String, String>,
        fallback: Option<&Path>,
    ) -> Result<bool, StoreError> {
        let reference = self.stream.next_ref();
        match self
            .handle
            .block_on(client.claim(&reference, digest, size, labels))
        {
            Ok(claimed) => Ok(claimed),
            Err(e) => {
                let Some(path) = fallback else {
                    return Err(e.into());
                };
                tracing::warn!(%digest, error = %e, "claiming the on-disk blob failed; streaming it instead");
                let mut f = File::open(path)?;
                self.stream.put(&mut f, size, Some(digest))?;
                Ok(false)
            }
        }
    }
}

/// Makes a written temporary file durable and read-only.
fn stage(file: File, tmp: &TempFile) -> Result<(), StoreError> {
    file.sync_all()?;
    drop(file);
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o444))?;
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

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Starts writeback of a file range without waiting for it.
fn start_writeback(file: &File, offset: u64, len: u64) {
    // Advisory: errors only mean the final fsync does all the work.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

impl ContentStore for DirectStore {
    fn kind(&self) -> &'static str {
        "direct"
    }

    fn scratch_dir(&self) -> Option<PathBuf> {
        Some(self.shared.root.join(TEMP_DIR))
    }

    fn exists(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        if let Some(size) = self.shared.pending.lock().unwrap().get(digest) {
            return Ok(Some(*size));
        }
        if let Some((_, size)) = self.shared.staged.lock().unwrap().get(digest) {
            return Ok(Some(*size));
        }
        self.shared.stream.exists(digest)
    }

    fn put(
        &self,
        data: &mut dyn Read,
        size: u64,
        expected: Option<&Digest>,
    ) -> Result<Put, StoreError> {
        let present = |digest: &Digest| Put {
            digest: digest.clone(),
            size,
            written: 0,
        };
        if let Some(d) = expected {
            if self.exists(d)?.is_some() {
                return Ok(present(d));
            }
            // On disk already (another namespace has it): claim without writing.
            if fs::metadata(self.shared.blob_path(d)).is_ok_and(|m| m.len() == size)
                && self
                    .shared
                    .claim(&self.shared.client, d, size, &BTreeMap::new(), None)
                    .is_ok()
            {
                return Ok(present(d));
            }
        }
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = TempFile(self.temp.join(format!("{}-{n}", crate::liveness::token())));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp.path())?;
        let mut offset = 0u64;
        let mut flushed = 0u64;
        let digest = copy_verified(data, size, expected, |chunk| {
            file.write_all(chunk).map_err(StoreError::Io)?;
            offset += chunk.len() as u64;
            if offset - flushed >= WRITEBACK_EVERY {
                start_writeback(&file, flushed, offset - flushed);
                flushed = offset;
            }
            Ok(())
        })?;
        if expected.is_none() {
            // Its digest is known only now: present already? Then drop the copy unsynced.
            if self.exists(&digest)?.is_some() {
                return Ok(present(&digest));
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
            return Err(StoreError::Io(io::Error::other(
                "the commit thread stopped",
            )));
        }
        Ok(Put {
            digest,
            size,
            written: size,
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.jobs.lock().unwrap().send(Job::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
        match self.shared.failure.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn claim_staged(
        &self,
        client: &Containerd,
        labels: &BTreeMap<Digest, BTreeMap<String, String>>,
        needed: &BTreeSet<&Digest>,
    ) -> Result<BTreeSet<Digest>, StoreError> {
        self.flush()?;
        let staged: Vec<(Digest, (TempFile, u64))> =
            self.shared.staged.lock().unwrap().drain().collect();
        let mut linked = Vec::new();
        for (digest, (tmp, size)) in staged {
            if !needed.contains(&digest) {
                continue; // no image uses it: its temporary file goes with `tmp`
            }
            match fs::hard_link(tmp.path(), self.shared.blob_path(&digest)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            linked.push((digest, tmp, size));
        }
        if linked.is_empty() {
            return Ok(BTreeSet::new());
        }
        // One directory fsync makes every new name durable before containerd records them.
        sync_dir(&self.shared.root.join("blobs").join("sha256"))?;
        // Claims run concurrently: containerd's round trips overlap its metadata commits.
        let results = self.shared.handle.block_on(async {
            let limit = Arc::new(tokio::sync::Semaphore::new(CLAIMS_IN_FLIGHT));
            let mut tasks = tokio::task::JoinSet::new();
            for (i, (digest, _, size)) in linked.iter().enumerate() {
                let client = client.clone();
                let reference = self.shared.stream.next_ref();
                let digest = digest.clone();
                let size = *size;
                let l = labels.get(&digest).cloned().unwrap_or_default();
                let limit = limit.clone();
                tasks.spawn(async move {
                    let _slot = limit.acquire_owned().await;
                    (i, client.claim(&reference, &digest, size, &l).await)
                });
            }
            let mut results = Vec::new();
            while let Some(r) = tasks.join_next().await {
                results.push(r.expect("claim task panicked"));
            }
            results
        });
        let mut claimed = BTreeSet::new();
        for (i, result) in results {
            let (digest, tmp, size) = &linked[i];
            match result {
                Ok(true) => {
                    claimed.insert(digest.clone());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "claiming the on-disk blob failed; streaming it instead");
                    let mut f = File::open(tmp.path())?;
                    self.shared.stream.put(&mut f, *size, Some(digest))?;
                }
            }
        }
        Ok(claimed)
    }

    fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        self.flush()?;
        if let Some((tmp, _)) = self.shared.staged.lock().unwrap().get(digest) {
            return Ok(fs::read(tmp.path())?);
        }
        if self.exists(digest)?.is_none() {
            return Err(StoreError::NotFound(digest.clone()));
        }
        Ok(fs::read(self.shared.blob_path(digest))?)
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
