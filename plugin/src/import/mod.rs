//! Import: one archive, start to finish — ingest under a temporary lease, plan, store the
//! synthesised blobs, then the record step ([`record`]: labels, the archive's pinned lease, the
//! image records), and a [`Report`] of what happened. With [`ImportOptions::unpack`], a
//! [`crate::unpack::Session`] unpacks the images beside it, starting while the archive is read,
//! and finishes before the temporary lease goes; its failures are reported, never fatal.
//!
//! Ordering guarantees: every blob is committed and labelled, and held by the archive lease,
//! before any image record that refers to it is created or updated; the temporary lease is
//! released last, so garbage collection can never take content from under a running import.
//!
//! Which content root to write into is decided by the caller ([`crate::service`]); this module
//! only chooses between the direct and the streaming store for it.

pub mod pull;
pub mod record;

use crate::archive::understand::{self, Plan, PlanOptions};
use crate::containerd::{Client, ContainerdError, ImageTarget};
use crate::digest::Digest;
use crate::ingest::{self, Counters, CountingReader, IngestError};
use crate::labels;
use crate::store::layout::ContentRoot;
use crate::store::{direct::DirectStore, stream::StreamStore, ContentStore, StoreError, StoreKind};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How blobs reach containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Direct when containerd's content root is reachable and writable, else stream.
    Auto,
    /// Write into containerd's content root and claim by digest.
    Direct,
    /// Stream data through containerd's Content API.
    Stream,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "direct" => Ok(Mode::Direct),
            "stream" => Ok(Mode::Stream),
            other => Err(format!(
                "unknown mode {other:?}: expected auto, direct or stream"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where the archive comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// Standard input.
    Stdin,
}

impl Source {
    /// How the archive is named in messages and labels.
    pub fn display_name(&self) -> String {
        match self {
            Source::File(p) => crate::escape::shown(&p).to_string(),
            Source::Stdin => "<stdin>".to_string(),
        }
    }

    /// The file's resolved path (what labels and records name), for a file.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Source::File(p) => Some(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
            Source::Stdin => None,
        }
    }
}

/// Options of one import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Platforms, names and index options.
    pub plan: PlanOptions,
    /// Extra image labels (`--label`).
    pub labels: BTreeMap<String, String>,
    /// Pin the images (default).
    pub pin: bool,
    /// How blobs travel.
    pub mode: Mode,
    /// Minimum expiry of the temporary import lease (it grows with the archive's size).
    pub lease_expiry: Duration,
    /// Set to abandon the import: reading stops, temporary files are removed, nothing is recorded.
    pub cancel: Arc<AtomicBool>,
    /// The content root the direct store writes into when containerd's introspection does not
    /// tell it: airlift's own store when containerd uses airlift as its content proxy plugin.
    pub content_root: Option<PathBuf>,
    /// Where a decoder's scratch files go (a spilled zstd window) when the store has no directory
    /// of its own: the state directory. Without either, the system's temporary directory.
    pub scratch_dir: Option<PathBuf>,
    /// A named pipe may be read as an archive (the command line's `<(zcat ...)`); the daemon
    /// reads regular files only.
    pub pipes: bool,
    /// The registry hosts directory (containerd's `certs.d`, hosts.toml files) the pulls of a
    /// pull list go through; containerd's default hosts when unset.
    pub hosts_dir: Option<PathBuf>,
    /// Unpack the images into this snapshotter (the platforms: [`crate::unpack::plan::policy`]
    /// of the import's).
    pub unpack: Option<String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            plan: PlanOptions::default(),
            labels: BTreeMap::new(),
            pin: true,
            mode: Mode::Auto,
            lease_expiry: Duration::from_secs(3600),
            cancel: Arc::new(AtomicBool::new(false)),
            content_root: None,
            scratch_dir: None,
            pipes: false,
            hosts_dir: None,
            unpack: None,
        }
    }
}

impl ImportOptions {
    /// The labels an image record of `archive` gets (see [`labels::image_labels`]).
    pub fn image_labels(&self, archive: Option<&Path>) -> BTreeMap<String, String> {
        labels::image_labels(self.pin, archive, &self.labels)
    }

    /// What to unpack into, when unpacking.
    pub fn unpack_options(&self) -> Option<crate::unpack::Options> {
        self.unpack
            .as_ref()
            .map(|snapshotter| crate::unpack::Options {
                snapshotter: snapshotter.clone(),
                platforms: crate::unpack::plan::policy(&self.plan.platforms),
            })
    }
}

/// How an import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Read and recorded: every image imported.
    Imported,
    /// Read and recorded, but some images failed.
    Partial,
    /// Not read: unchanged since an import whose record still stands.
    Unchanged,
    /// Not read: unchanged, and what containerd had lost of its record was restored from it.
    Repaired,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The archive.
    pub archive: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Which store the blobs went through; `None` when nothing was stored (not read).
    pub mode: Option<StoreKind>,
    /// The images the archive provides (or, not read, the images of its record): created or
    /// updated, but for those in `shadowed`.
    pub images: Vec<ImageTarget>,
    /// Names the archive provides whose image records were left alone: another archive
    /// provides them and takes precedence (the daemon's rule for shared names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadowed: Vec<String>,
    /// Images that failed, each with its archive, entry and cause.
    pub failed: Vec<String>,
    /// Images skipped, with the reason.
    pub skipped: Vec<String>,
    /// Informational skips (other platforms under the host default).
    pub not_selected: Vec<String>,
    /// What a repair restored (image records, pins, the lease).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
    /// Blobs written.
    pub blobs_written: u64,
    /// Blobs already present.
    pub blobs_present: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Archive bytes read.
    pub archive_bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// The archive lease holding its content, if any.
    pub lease: Option<String>,
    /// Every blob the imported images use.
    pub blobs: Vec<String>,
    /// What unpacking did, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpack: Option<crate::unpack::Report>,
}

impl Report {
    /// Whether every image of the archive was imported (skips by platform are fine).
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Why unpacking failed (for some images), when it was asked for and did.
    pub fn unpack_error(&self) -> Option<String> {
        self.unpack.as_ref().and_then(crate::unpack::Report::error)
    }

    /// Whether the archive was read.
    pub fn was_read(&self) -> bool {
        matches!(self.outcome, Outcome::Imported | Outcome::Partial)
    }
}

/// Why an import stopped as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive could not be opened.
    #[error("{archive}: cannot open: {cause}")]
    Open {
        /// The archive.
        archive: String,
        /// Why.
        cause: std::io::Error,
    },
    /// Decoding, walking or storing failed.
    #[error("{archive}: {cause}")]
    Ingest {
        /// The archive.
        archive: String,
        /// Why.
        cause: IngestError,
    },
    /// The archive's structure is not understood.
    #[error("{archive}: {cause}")]
    Understand {
        /// The archive.
        archive: String,
        /// Why.
        cause: understand::UnderstandError,
    },
    /// containerd failed.
    #[error("{archive}: {cause}")]
    Containerd {
        /// The archive.
        archive: String,
        /// Why.
        cause: ContainerdError,
    },
    /// A blob could not be stored.
    #[error("{archive}: storing {what}: {cause}")]
    Store {
        /// The archive.
        archive: String,
        /// Which blob.
        what: String,
        /// Why.
        cause: StoreError,
    },
    /// Direct mode was asked for but is impossible.
    #[error("{archive}: direct mode unavailable: {cause}")]
    DirectUnavailable {
        /// The archive.
        archive: String,
        /// Why.
        cause: String,
    },
}

impl ImportError {
    /// Whether containerd failing (rather than the archive) stopped the import, so trying again
    /// once containerd answers may succeed.
    pub fn is_containerd_fault(&self) -> bool {
        match self {
            ImportError::Containerd { .. } => true,
            ImportError::Store { cause, .. } => matches!(cause, StoreError::Containerd(_)),
            ImportError::Ingest {
                cause: IngestError::Entry { cause, .. },
                ..
            } => matches!(cause, StoreError::Containerd(_)),
            _ => false,
        }
    }

    /// Whether the archive itself is at fault (unreadable, corrupt, not understood), so importing
    /// it again unchanged cannot succeed. Everything else (containerd, the local disk) may pass.
    pub fn is_archive_fault(&self) -> bool {
        match self {
            ImportError::Open { .. } | ImportError::Understand { .. } => true,
            ImportError::Ingest { cause, .. } => cause.is_archive_fault(),
            _ => false,
        }
    }
}

/// Who takes precedence for a name several archives provide: asked by the record step, once the
/// archive's images are known and just before their records are written.
pub trait Precedence: Send + Sync {
    /// The names among `images` whose records this import must leave alone, because another
    /// archive takes precedence for them. From this call on, the caller may count `images` as
    /// provided by this archive (an import that fails afterwards tells the caller so itself).
    fn claim(&self, images: &[ImageTarget]) -> BTreeSet<String>;

    /// Whether another archive takes precedence for `name` (asked of a pull list before its
    /// pull, which would write the record).
    fn yields(&self, _name: &str) -> bool {
        false
    }
}

/// Nobody else: every image record is written (`airlift import`).
pub struct Alone;

impl Precedence for Alone {
    fn claim(&self, _: &[ImageTarget]) -> BTreeSet<String> {
        BTreeSet::new()
    }
}

/// A name part unique to this import: this process's liveness token and a counter.
fn unique_suffix() -> String {
    static IMPORTS: AtomicU64 = AtomicU64::new(0);
    let n = IMPORTS.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", crate::liveness::token())
}

/// Where the import may write: a content root on this machine, or why there is none.
#[derive(Debug, Clone)]
pub enum Placement {
    /// containerd's (or airlift's own) content root, here.
    Local(ContentRoot),
    /// No content root here; why (for the direct-mode error and the log).
    Remote(String),
}

/// Chooses and opens the content store for `mode`, under `client`'s lease.
fn open_store(
    client: &Client,
    mode: Mode,
    placement: &Placement,
    archive: &str,
    prefix: String,
) -> Result<Arc<dyn ContentStore>, ImportError> {
    let handle = tokio::runtime::Handle::current();
    let stream = || {
        Arc::new(StreamStore::new(
            client.clone(),
            handle.clone(),
            prefix.clone(),
        )) as Arc<dyn ContentStore>
    };
    if mode == Mode::Stream {
        return Ok(stream());
    }
    let direct = match placement {
        Placement::Local(root) => {
            DirectStore::open(root, client.clone(), handle.clone(), prefix.clone())
                .map_err(|e| format!("content root {}: {e}", crate::escape::shown(&root.path())))
        }
        Placement::Remote(why) => Err(why.clone()),
    };
    match (direct, mode) {
        (Ok(d), _) => Ok(Arc::new(d)),
        (Err(cause), Mode::Direct) => Err(ImportError::DirectUnavailable {
            archive: archive.to_string(),
            cause,
        }),
        (Err(cause), _) => {
            tracing::info!(%cause, "direct mode unavailable; streaming blobs through containerd");
            Ok(stream())
        }
    }
}

/// Imports one archive into the content store `placement` allows. `progress` receives the
/// number of archive bytes read so far. Image records `precedence` claims for other archives
/// are left alone (their content is stored and held all the same).
pub async fn run(
    client: &Client,
    placement: &Placement,
    source: &Source,
    opts: &ImportOptions,
    progress: Arc<AtomicU64>,
    precedence: &dyn Precedence,
) -> Result<Report, ImportError> {
    if let Source::File(p) = source {
        if pull::is_list(p) {
            let path = source.path().unwrap_or_else(|| p.clone());
            return pull::run(client, &path, opts, precedence).await;
        }
    }
    let started = Instant::now();
    let archive = source.display_name();
    let cd_err = |cause: ContainerdError| ImportError::Containerd {
        archive: archive.clone(),
        cause,
    };
    let input: Box<dyn Read + Send> = match source {
        Source::File(p) => Box::new(crate::sys::open_archive(p, opts.pipes).map_err(|cause| {
            ImportError::Open {
                archive: archive.clone(),
                cause,
            }
        })?),
        Source::Stdin => Box::new(std::io::stdin()),
    };
    if let Placement::Local(root) = placement {
        // Marks this process alive where other airlift processes look for leftovers — before
        // anything named after it (its import lease, ingests, staged files) exists, so that a
        // cleaner never takes a live process's lease for a dead one's, and a process killed
        // right after creating its lease leaves a lock-less token behind for the next cleaner.
        let temp = root.temp();
        if root.path().parent().is_some_and(Path::is_dir) && std::fs::create_dir_all(&temp).is_ok()
        {
            let _ = crate::liveness::hold(&temp);
        }
    }
    let suffix = unique_suffix();
    let lease = format!("{}{suffix}", labels::IMPORT_LEASE_PREFIX);
    let lease_labels = BTreeMap::from([(labels::ARCHIVE.to_string(), archive.clone())]);
    // containerd leases cannot be extended, so the expiry covers even a slow import: the
    // configured minimum, plus one minute per 50 MB of archive (read at 0.8 MB/s, the import
    // would still finish first). Standard input, of unknown size, gets a day.
    let expiry = match source {
        Source::File(p) => {
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            opts.lease_expiry + Duration::from_secs(60 * (size / 50_000_000))
        }
        Source::Stdin => opts.lease_expiry.max(Duration::from_secs(24 * 3600)),
    };
    client
        .create_lease(&lease, lease_labels, Some(expiry))
        .await
        .map_err(cd_err)?;
    let leased = client.with_lease(Some(&lease));
    let mut session = None;
    let result = async {
        let store = open_store(
            &leased,
            opts.mode,
            placement,
            &archive,
            format!("airlift-{suffix}"),
        )?;
        let scratch = store
            .scratch_dir()
            .or_else(|| opts.scratch_dir.clone())
            .unwrap_or_else(std::env::temp_dir);
        let unpack = opts
            .unpack_options()
            .map(|u| crate::unpack::Session::start(leased.clone(), &u, Some(store.clone())));
        let observer = unpack.as_ref().map(|s| s.observer());
        let session = session.insert(unpack);
        // Unpacking can start before the configs are reached in the archive when they can be
        // read first.
        if let (Some(o), Source::File(path)) = (observer.clone(), source) {
            let path = path.clone();
            let _ = tokio::task::spawn_blocking(move || ingest::prescan(&path, o.as_ref())).await;
        }
        let (plan, counters) = ingest_and_plan(
            store.clone(),
            scratch,
            input,
            &archive,
            &opts.plan,
            progress.clone(),
            opts.cancel.clone(),
            observer,
        )
        .await?;
        if let Some(s) = session.as_mut() {
            s.planned(&plan).await;
        }
        let recorded = record::record(
            client,
            &leased,
            store.clone(),
            source,
            &archive,
            &plan,
            opts,
            precedence,
        )
        .await?;
        let unpacked = match session.take() {
            Some(s) => Some(
                s.finish(
                    client,
                    &leased,
                    recorded.lease.as_deref(),
                    &crate::unpack::images_of(&plan),
                )
                .await,
            ),
            None => None,
        };
        Ok::<_, ImportError>((store.kind(), counters, recorded, unpacked))
    }
    .await;
    // A failed import finishes what unpacking runs (under the lease), and reports nothing of it.
    if let Some(Some(s)) = session {
        s.abandon().await;
    }
    if let Err(e) = client.delete_lease(&lease, false).await {
        tracing::warn!(%lease, error = %e, "could not release the import lease; it expires by itself");
    }
    let (mode, counters, recorded, unpack) = result?;
    let record::Recorded {
        images,
        shadowed,
        lease,
        blobs,
        failed,
        skipped,
        not_selected,
    } = recorded;
    Ok(Report {
        archive,
        outcome: if failed.is_empty() {
            Outcome::Imported
        } else {
            Outcome::Partial
        },
        mode: Some(mode),
        images,
        shadowed,
        failed,
        skipped,
        not_selected,
        repaired: Vec::new(),
        blobs_written: counters.blobs_written,
        blobs_present: counters.blobs_present,
        bytes_written: counters.bytes_written,
        archive_bytes: progress.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        lease,
        blobs,
        unpack,
    })
}

/// What an import stores once its plan is made: the synthesised blobs and the documents kept back
/// from the walk that the planned images need, then a flush of the store — after which every blob
/// of every planned image is in `store`. A failure names what was being stored.
pub fn store_planned(
    inv: &understand::Inventory,
    plan: &Plan,
    store: &dyn ContentStore,
    counters: &mut Counters,
) -> Result<(), (String, StoreError)> {
    let needed: BTreeSet<&Digest> = plan.images.iter().flat_map(|i| i.blobs.iter()).collect();
    let deferred = inv
        .deferred
        .iter()
        .filter_map(|d| inv.json.get(d).map(|b| (d, b)));
    for (digest, bytes) in plan.synthesized.iter().chain(deferred) {
        if !needed.contains(digest) {
            continue;
        }
        let put = store
            .put(&mut &bytes[..], bytes.len() as u64, Some(digest))
            .map_err(|cause| (format!("blob {digest}"), cause))?;
        counters.count(&put);
    }
    store.flush().map_err(|cause| ("blobs".to_string(), cause))
}

/// Runs ingest and planning on a blocking thread, then stores the synthesised blobs; `observer`
/// hears of the blobs and documents as they come.
#[allow(clippy::too_many_arguments)]
async fn ingest_and_plan(
    store: Arc<dyn ContentStore>,
    scratch: PathBuf,
    input: Box<dyn Read + Send>,
    archive: &str,
    plan_opts: &PlanOptions,
    progress: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
    observer: Option<Arc<dyn ingest::Observer>>,
) -> Result<(Plan, Counters), ImportError> {
    let archive = archive.to_string();
    let plan_opts = plan_opts.clone();
    tokio::task::spawn_blocking(move || {
        let mut counters = Counters::default();
        let counted = CountingReader::new(input, progress).cancellable(cancel);
        let observer = observer.unwrap_or_else(|| Arc::new(ingest::Unobserved));
        let inv = ingest::ingest_observed(
            counted,
            store.as_ref(),
            &scratch,
            &mut counters,
            observer.as_ref(),
        )
        .map_err(|cause| ImportError::Ingest {
            archive: archive.clone(),
            cause,
        })?;
        drop(observer);
        let plan = understand::plan(&inv, &plan_opts).map_err(|cause| ImportError::Understand {
            archive: archive.clone(),
            cause,
        })?;
        store_planned(&inv, &plan, store.as_ref(), &mut counters).map_err(|(what, cause)| {
            ImportError::Store {
                archive: archive.clone(),
                what,
                cause,
            }
        })?;
        Ok((plan, counters))
    })
    .await
    .expect("ingest thread panicked")
}

#[cfg(test)]
mod tests;
