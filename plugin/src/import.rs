//! Import: one archive, start to finish — ingest under a temporary lease, plan, store the
//! synthesised blobs, then record labels, the archive's pinned lease and the image records.
//!
//! Ordering guarantees: every blob is committed and labelled, and held by the archive lease,
//! before any image record that refers to it is created or updated; the temporary lease is
//! released last, so garbage collection can never take content from under a running import.

use crate::archive::understand::{self, Plan, PlanOptions, Problem};
use crate::containerd::{Containerd, ContainerdError};
use crate::digest::Digest;
use crate::ingest::{self, Counters, CountingReader, IngestError};
use crate::store::{direct::DirectStore, stream::StreamStore, ContentStore, StoreError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The label airlift sets on images it pins.
pub const LABEL_PINNED: &str = "airlift.io/pinned";
/// The label naming the archive an image came from.
pub const LABEL_ARCHIVE: &str = "airlift.io/archive";
/// The CRI plugin's pin label, respected by kubelet's image garbage collection.
pub const LABEL_CRI_PINNED: &str = "io.cri-containerd.pinned";
/// The CRI plugin's label marking images it manages.
pub const LABEL_CRI_MANAGED: &str = "io.cri-containerd.image";

/// How blobs reach containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Direct when containerd's content root is reachable and writable, else stream.
    Auto,
    /// Write into containerd's content root and claim by digest.
    Direct,
    /// Stream data through containerd's Content API.
    Stream,
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
            Source::File(p) => p.display().to_string(),
            Source::Stdin => "<stdin>".to_string(),
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
    /// The content root the direct store writes into, when containerd's introspection does not
    /// tell it: airlift's own store when containerd uses airlift as its content proxy plugin.
    pub content_root: Option<PathBuf>,
    /// Where a decoder's scratch files go (a spilled zstd window) when the store has no directory
    /// of its own: the state directory. Without either, the system's temporary directory.
    pub scratch_dir: Option<PathBuf>,
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
        }
    }
}

/// An image the import created or updated.
#[derive(Debug, Clone, Serialize)]
pub struct ImportedImage {
    /// Its name.
    pub name: String,
    /// Target media type.
    pub media_type: String,
    /// Target digest.
    pub digest: String,
    /// Target size.
    pub size: i64,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The archive.
    pub archive: String,
    /// Direct or stream.
    pub mode: String,
    /// Images created or updated.
    pub images: Vec<ImportedImage>,
    /// Images that failed.
    pub failed: Vec<String>,
    /// Images skipped, with the reason.
    pub skipped: Vec<String>,
    /// Informational skips (other platforms under the host default).
    pub not_selected: Vec<String>,
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
}

impl Report {
    /// Whether every image of the archive was imported (skips by platform are fine).
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
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
    /// A synthesised blob could not be stored.
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

impl ImportOptions {
    /// The labels an image record gets: CRI's managed label, the pins (unless `--no-pin`), the
    /// archive it came from (for a file) and the extra `--label`s.
    pub fn image_labels(&self, archive: Option<&Path>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_CRI_MANAGED.to_string(), "managed".to_string());
        if self.pin {
            labels.insert(LABEL_CRI_PINNED.to_string(), "pinned".to_string());
            labels.insert(LABEL_PINNED.to_string(), "true".to_string());
        }
        if let Some(path) = archive {
            labels.insert(LABEL_ARCHIVE.to_string(), path.display().to_string());
        }
        labels.extend(self.labels.clone());
        labels
    }
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
            ImportError::Ingest { cause, .. } => match cause {
                IngestError::Decode(_) | IngestError::Walk(_) => true,
                IngestError::Entry { cause, .. } => matches!(
                    cause,
                    StoreError::Source(_)
                        | StoreError::Truncated { .. }
                        | StoreError::DigestMismatch { .. }
                ),
            },
            _ => false,
        }
    }
}

/// The archive lease id for an archive path: stable, so a re-import replaces it.
pub fn archive_lease_id(path: &Path) -> String {
    let d = Digest::of(path.as_os_str().as_encoded_bytes());
    format!("airlift-archive-{}", &d.hex()[..32])
}

/// A name part unique to this import: this process's liveness token and a counter.
fn unique_suffix() -> String {
    static IMPORTS: AtomicU64 = AtomicU64::new(0);
    let n = IMPORTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", crate::liveness::token())
}

/// Chooses and opens the content store for `mode`.
async fn open_store(
    client: &Containerd,
    mode: Mode,
    content_root: Option<&Path>,
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
    let root = match content_root {
        Some(r) => Ok(Some(r.to_path_buf())),
        None => client
            .content_root()
            .await
            .map_err(|cause| ImportError::Containerd {
                archive: archive.to_string(),
                cause,
            }),
    };
    // Mark this process alive where other airlift processes look for leftovers.
    if let Ok(Some(root)) = &root {
        let temp = root.join(crate::store::direct::TEMP_DIR);
        if temp.parent().is_some_and(Path::is_dir) && std::fs::create_dir_all(&temp).is_ok() {
            let _ = crate::liveness::hold(&temp);
        }
    }
    if mode == Mode::Stream {
        return Ok(stream());
    }
    let direct = match root {
        Ok(Some(root)) => DirectStore::open(&root, client.clone(), handle.clone(), prefix.clone())
            .map_err(|e| format!("content root {}: {e}", root.display())),
        Ok(None) => Err(
            "containerd does not report a content root (is its content store a proxy plugin?)"
                .to_string(),
        ),
        Err(e) => Err(e.to_string()),
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

/// Imports one archive. `progress` receives the number of archive bytes read so far.
pub async fn import(
    client: &Containerd,
    source: &Source,
    opts: &ImportOptions,
    progress: Arc<AtomicU64>,
) -> Result<Report, ImportError> {
    let started = Instant::now();
    let archive = source.display_name();
    let cd_err = |cause: ContainerdError| ImportError::Containerd {
        archive: archive.clone(),
        cause,
    };
    let input: Box<dyn Read + Send> = match source {
        Source::File(p) => Box::new(std::fs::File::open(p).map_err(|cause| ImportError::Open {
            archive: archive.clone(),
            cause,
        })?),
        Source::Stdin => Box::new(std::io::stdin()),
    };
    let suffix = unique_suffix();
    let lease = format!("airlift-import-{suffix}");
    let mut lease_labels = HashMap::new();
    lease_labels.insert(LABEL_ARCHIVE.to_string(), archive.clone());
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
    let result = async {
        let store = open_store(
            &leased,
            opts.mode,
            opts.content_root.as_deref(),
            &archive,
            format!("airlift-{suffix}"),
        )
        .await?;
        let scratch = store
            .scratch_dir()
            .or_else(|| opts.scratch_dir.clone())
            .unwrap_or_else(std::env::temp_dir);
        let (plan, counters) = ingest_and_plan(
            store.clone(),
            scratch,
            input,
            &archive,
            &opts.plan,
            progress.clone(),
            opts.cancel.clone(),
        )
        .await?;
        let mut report = record(
            client,
            &leased,
            store.clone(),
            source,
            &archive,
            &plan,
            opts,
        )
        .await?;
        report.mode = store.kind().to_string();
        report.blobs_written = counters.blobs_written;
        report.blobs_present = counters.blobs_present;
        report.bytes_written = counters.bytes_written;
        Ok(report)
    }
    .await;
    if let Err(e) = client.delete_lease(&lease).await {
        tracing::warn!(%lease, error = %e, "could not release the import lease; it expires by itself");
    }
    let mut report = result?;
    report.archive_bytes = progress.load(std::sync::atomic::Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Runs ingest and planning on a blocking thread, then stores the synthesised blobs.
async fn ingest_and_plan(
    store: Arc<dyn ContentStore>,
    scratch: PathBuf,
    input: Box<dyn Read + Send>,
    archive: &str,
    plan_opts: &PlanOptions,
    progress: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
) -> Result<(Plan, Counters), ImportError> {
    let archive = archive.to_string();
    let plan_opts = plan_opts.clone();
    tokio::task::spawn_blocking(move || {
        let mut counters = Counters::default();
        let counted = CountingReader::new(input, progress).cancellable(cancel);
        let inv =
            ingest::ingest(counted, store.as_ref(), &scratch, &mut counters).map_err(|cause| {
                ImportError::Ingest {
                    archive: archive.clone(),
                    cause,
                }
            })?;
        let plan = understand::plan(&inv, &plan_opts).map_err(|cause| ImportError::Understand {
            archive: archive.clone(),
            cause,
        })?;
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
                .map_err(|cause| ImportError::Store {
                    archive: archive.clone(),
                    what: format!("blob {digest}"),
                    cause,
                })?;
            if put.written > 0 {
                counters.blobs_written += 1;
                counters.bytes_written += put.written;
            } else {
                counters.blobs_present += 1;
            }
        }
        store.flush().map_err(|cause| ImportError::Store {
            archive: archive.clone(),
            what: "blobs".into(),
            cause,
        })?;
        Ok((plan, counters))
    })
    .await
    .expect("ingest thread panicked")
}

/// Labels content, updates the archive lease and creates the image records.
async fn record(
    client: &Containerd,
    leased: &Containerd,
    store: Arc<dyn ContentStore>,
    source: &Source,
    archive: &str,
    plan: &Plan,
    opts: &ImportOptions,
) -> Result<Report, ImportError> {
    let cd_err = |cause: ContainerdError| ImportError::Containerd {
        archive: archive.to_string(),
        cause,
    };
    let needed: BTreeSet<&Digest> = plan.images.iter().flat_map(|i| i.blobs.iter()).collect();

    let archive_path = match source {
        Source::File(path) => Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone())),
        Source::Stdin => None,
    };

    // 1. The archive's own lease (a file source only), created before anything joins it.
    let lease = match &archive_path {
        Some(path) if !needed.is_empty() => {
            let id = archive_lease_id(path);
            let mut labels = HashMap::new();
            labels.insert(LABEL_ARCHIVE.to_string(), path.display().to_string());
            client
                .create_lease(&id, labels, None)
                .await
                .map_err(cd_err)?;
            Some(id)
        }
        _ => None,
    };
    let held: BTreeSet<String> = match &lease {
        Some(id) => client
            .lease_content(id)
            .await
            .map_err(cd_err)?
            .into_iter()
            .collect(),
        None => BTreeSet::new(),
    };

    // 2. Staged blobs are claimed with their labels under the archive's lease: one containerd
    //    transaction each (direct mode).
    let claimer = match &lease {
        Some(id) => client.with_lease(Some(id)),
        None => leased.clone(),
    };
    let claimed = {
        let labels = plan.labels.clone();
        let wanted: BTreeSet<Digest> = needed.iter().map(|d| (*d).clone()).collect();
        tokio::task::spawn_blocking(move || {
            let refs: BTreeSet<&Digest> = wanted.iter().collect();
            store.claim_staged(&claimer, &labels, &refs)
        })
        .await
        .expect("claim thread panicked")
        .map_err(|cause| ImportError::Store {
            archive: archive.to_string(),
            what: "blobs".into(),
            cause,
        })?
    };

    // 3. Every other blob: labels (garbage-collection references, distribution sources) and its
    //    place in the archive's lease; blobs the archive no longer needs leave the lease.
    for digest in needed.iter().filter(|d| !claimed.contains(**d)) {
        if let Some(labels) = plan.labels.get(*digest) {
            leased
                .set_blob_labels(digest, labels)
                .await
                .map_err(cd_err)?;
        }
        if let Some(id) = &lease {
            if !held.contains(&digest.to_string()) {
                client
                    .lease_resource(id, &digest.to_string(), true)
                    .await
                    .map_err(cd_err)?;
            }
        }
    }
    if let Some(id) = &lease {
        let want: BTreeSet<String> = needed.iter().map(|d| d.to_string()).collect();
        for d in held.difference(&want) {
            client.lease_resource(id, d, false).await.map_err(cd_err)?;
        }
    }

    // 3. Image records, last.
    let labels = opts.image_labels(archive_path.as_deref());
    // Image records go concurrently, a few at a time (one metadata transaction each).
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    for image in &plan.images {
        let target = containerd_client::types::Descriptor {
            media_type: image.target.media_type.clone(),
            digest: image.target.digest.to_string(),
            size: image.target.size,
            annotations: image.target.annotations.clone().into_iter().collect(),
        };
        let (leased, labels, name, limit) = (
            leased.clone(),
            labels.clone(),
            image.name.clone(),
            limit.clone(),
        );
        tasks.spawn(async move {
            let _slot = limit.acquire_owned().await;
            leased.put_image(&name, target, &labels).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("image task panicked").map_err(cd_err)?;
    }
    let mut images = Vec::new();
    for image in &plan.images {
        tracing::info!(archive, image = %image.name, digest = %image.target.digest, "imported");
        images.push(ImportedImage {
            name: image.name.clone(),
            media_type: image.target.media_type.clone(),
            digest: image.target.digest.to_string(),
            size: image.target.size,
        });
    }

    let mut report = Report {
        archive: archive.to_string(),
        mode: String::new(),
        images,
        failed: Vec::new(),
        skipped: Vec::new(),
        not_selected: Vec::new(),
        blobs_written: 0,
        blobs_present: 0,
        bytes_written: 0,
        archive_bytes: 0,
        seconds: 0.0,
        lease: if needed.is_empty() { None } else { lease },
        blobs: needed.iter().map(|d| d.to_string()).collect(),
    };
    for p in &plan.problems {
        match p {
            Problem::Failed {
                image,
                entry,
                cause,
            } => {
                let msg = match entry {
                    Some(e) => format!("{archive}: image {image}: entry {e:?}: {cause}"),
                    None => format!("{archive}: image {image}: {cause}"),
                };
                tracing::debug!("{msg}");
                report.failed.push(msg);
            }
            Problem::Skipped {
                image,
                reason,
                informational: true,
            } => {
                tracing::debug!(archive, image = %image, "skipped: {reason}");
                report.not_selected.push(format!("{image}: {reason}"));
            }
            Problem::Skipped {
                image,
                reason,
                informational: false,
            } => {
                tracing::debug!(archive, image = %image, "skipped: {reason}");
                report.skipped.push(format!("{image}: {reason}"));
            }
        }
    }
    Ok(report)
}
