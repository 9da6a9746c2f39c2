//! The direct store: blobs are written into containerd's content root on this machine and
//! claimed into the namespace by digest, so no blob data crosses the socket.
//!
//! Each blob is streamed into a temporary file beside the blobs (same filesystem, outside
//! containerd's `ingest/`), hashed on the way, then — on a committer thread, while the next blob
//! is already streaming — fsynced, made read-only and linked into place as `blobs/sha256/<hex>`,
//! and claimed: a `Content.Write` STAT + COMMIT carrying only the expected digest and size makes
//! containerd's shared content policy commit the on-disk blob into the namespace. Should the
//! claim fail (containerd sees a different filesystem, or its garbage collector removed the
//! unclaimed file meanwhile), the blob is streamed from the temporary file instead.
//! [`ContentStore::flush`] waits for the committer.

use super::stream::StreamStore;
use super::{copy_verified, ContentStore, Put, StoreError};
use crate::containerd::Containerd;
use crate::digest::Digest;
use std::collections::HashMap;
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

/// Writeback of a blob being written is started every this many bytes, so its final fsync has
/// little left to wait for.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// What the committer thread needs.
struct Shared {
    root: PathBuf,
    stream: StreamStore,
    client: Containerd,
    handle: Handle,
    /// Blobs written and queued for commit: digest → size.
    pending: Mutex<HashMap<Digest, u64>>,
    /// The first commit failure, reported by `flush`.
    failure: Mutex<Option<StoreError>>,
}

enum Job {
    Commit {
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
        clean_stale(&temp);
        // Prove we may write here.
        let probe = temp.join(format!("{}-probe", std::process::id()));
        File::create(&probe)?;
        fs::remove_file(&probe)?;
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            stream: StreamStore::new(client.clone(), handle.clone(), prefix),
            client,
            handle,
            pending: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
        });
        // A few blobs may wait for their commit while the next ones stream.
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
                        Job::Commit {
                            file,
                            tmp,
                            digest,
                            size,
                        } => {
                            let result = worker.commit(file, &tmp, &digest, size);
                            drop(tmp);
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

    /// Claims an on-disk blob; falls back to streaming `fallback` when containerd will not.
    fn claim(
        &self,
        digest: &Digest,
        size: u64,
        fallback: Option<&Path>,
    ) -> Result<bool, StoreError> {
        let reference = self.stream.next_ref();
        match self
            .handle
            .block_on(self.client.claim(&reference, digest, size))
        {
            Ok(claimed) => Ok(claimed),
            Err(e) => {
                let Some(path) = fallback else {
                    return Err(e.into());
                };
                tracing::warn!(%digest, error = %e, "claiming the on-disk blob failed; streaming it instead");
                let mut f = File::open(path)?;
                self.stream
                    .put(&mut f, size, Some(digest))
                    .map(|p| p.written > 0)
            }
        }
    }

    /// Makes a written temporary file durable, links it into place and claims it.
    fn commit(
        &self,
        file: File,
        tmp: &TempFile,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let tmp_path = tmp.0.as_deref().expect("armed temporary file");
        file.sync_all()?;
        drop(file);
        fs::set_permissions(tmp_path, fs::Permissions::from_mode(0o444))?;
        let target = self.blob_path(digest);
        match fs::hard_link(tmp_path, &target) {
            Ok(()) => sync_dir(target.parent().expect("blob path has a parent"))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        self.claim(digest, size, Some(tmp_path))?;
        Ok(())
    }
}

/// Removes temporary files left by airlift processes that no longer run.
pub fn clean_stale(temp: &Path) {
    let Ok(entries) = fs::read_dir(temp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid: Option<u32> = name.split('-').next().and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Removes a temporary file when dropped.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
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

    fn exists(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        if let Some(size) = self.shared.pending.lock().unwrap().get(digest) {
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
                && self.shared.claim(d, size, None).is_ok()
            {
                return Ok(present(d));
            }
        }
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_path = self.temp.join(format!("{}-{n}", std::process::id()));
        let tmp = TempFile(Some(tmp_path.clone()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)?;
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
        let job = Job::Commit {
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

    fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        self.flush()?;
        if self.exists(digest)?.is_none() {
            return Err(StoreError::NotFound(digest.clone()));
        }
        Ok(fs::read(self.shared.blob_path(digest))?)
    }
}

impl Drop for DirectStore {
    fn drop(&mut self) {
        // Pending commits finish (or fail) before the store goes; nothing is left half-done.
        let _ = self.flush();
    }
}
