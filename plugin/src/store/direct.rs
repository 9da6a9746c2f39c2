//! The direct store: blobs are written into containerd's content root on this machine and
//! claimed into the namespace by digest, so no blob data crosses the socket.
//!
//! Each blob is streamed into a temporary file beside the blobs (same filesystem, outside
//! containerd's `ingest/`), hashed on the way, fsynced, made read-only and linked into place as
//! `blobs/sha256/<hex>`. Then a `Content.Write` STAT + COMMIT carrying only the expected digest and
//! size makes containerd's shared content policy commit the on-disk blob into the namespace.
//! Should the claim fail (containerd sees a different filesystem, or its garbage collector removed
//! the unclaimed file meanwhile), the blob is streamed from the temporary file instead.

use super::stream::StreamStore;
use super::{copy_verified, ContentStore, Put, StoreError};
use crate::containerd::Containerd;
use crate::digest::Digest;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::runtime::Handle;

/// Numbers temporary files uniquely within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Name of airlift's temporary directory inside the content root.
pub const TEMP_DIR: &str = "airlift.tmp";

/// Writes into a content root that containerd shares with this process.
pub struct DirectStore {
    root: PathBuf,
    temp: PathBuf,
    stream: StreamStore,
    client: Containerd,
    handle: Handle,
}

impl DirectStore {
    /// Opens the content root `root`, checking it looks like containerd's local store and is
    /// writable. Temporary files of dead airlift processes are removed.
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
        Ok(DirectStore {
            root: root.to_path_buf(),
            temp,
            stream: StreamStore::new(client.clone(), handle.clone(), prefix),
            client,
            handle,
        })
    }

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

/// Removes a temporary file when dropped (unless disarmed).
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

impl ContentStore for DirectStore {
    fn kind(&self) -> &'static str {
        "direct"
    }

    fn exists(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.stream.exists(digest)
    }

    fn put(
        &self,
        data: &mut dyn Read,
        size: u64,
        expected: Option<&Digest>,
    ) -> Result<Put, StoreError> {
        if let Some(d) = expected {
            if let Some(present) = self.exists(d)? {
                return Ok(Put {
                    digest: d.clone(),
                    size: present,
                    written: 0,
                });
            }
            // On disk already (another namespace has it): claim without writing.
            if fs::metadata(self.blob_path(d)).is_ok_and(|m| m.len() == size)
                && self.claim(d, size, None).is_ok()
            {
                return Ok(Put {
                    digest: d.clone(),
                    size,
                    written: 0,
                });
            }
        }
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_path = self.temp.join(format!("{}-{n}", std::process::id()));
        let tmp = TempFile(Some(tmp_path.clone()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)?;
        let digest = copy_verified(data, size, expected, |chunk| {
            file.write_all(chunk).map_err(StoreError::Io)
        })?;
        file.sync_all()?;
        drop(file);
        fs::set_permissions(&tmp_path, fs::Permissions::from_mode(0o444))?;
        let target = self.blob_path(&digest);
        let linked = match fs::hard_link(&tmp_path, &target) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e.into()),
        };
        if linked {
            sync_dir(target.parent().expect("blob path has a parent"))?;
        }
        let claimed = self.claim(&digest, size, Some(&tmp_path))?;
        drop(tmp);
        let written = if linked || claimed { size } else { 0 };
        Ok(Put {
            digest,
            size,
            written,
        })
    }

    fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        if self.exists(digest)?.is_none() {
            return Err(StoreError::NotFound(digest.clone()));
        }
        Ok(fs::read(self.blob_path(digest))?)
    }
}
