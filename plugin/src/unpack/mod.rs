//! Unpack: the station after the store — the images of the selected platforms unpacked into a
//! snapshotter through containerd's own services, so that containerd reports them unpacked and
//! a container starts without waiting for decompression and file writes.
//!
//! Each layer chain is committed as containerd's unpacker commits it ([`apply`]): an extraction
//! snapshot prepared on the parent chain, the layer applied by containerd's differ (airlift has
//! no layer-application code: whiteouts, ownership, extended attributes and links stay the
//! differ's), committed under its chain ID ([`chain`]). Then, as containerd does, each image's
//! config gets `containerd.io/gc.ref.snapshot.<snapshotter>=<top chain ID>` and each compressed
//! layer applied `containerd.io/uncompressed=<diff ID>` (containerd labels uncompressed layers
//! too, with their own digest, which nothing reads: airlift leaves that label off).
//!
//! During an import, unpacking overlaps reading: a [`Session`] hears of every blob stored and
//! every document read ([`crate::ingest::Observer`]) and commits a chain as soon as its layer's
//! blob is in and its parent chain committed ([`scheduler`]), while later blobs still stream in;
//! chains several images share are committed once ([`plan::graph`]), independent chains in
//! parallel up to a bound. Which images are unpacked is decided by the plan ([`plan`]).
//!
//! Leases: everything is prepared and committed under the import's temporary lease, so garbage
//! collection cannot take a chain in flight; at the end the top chains join the archive's lease
//! (`Leases.AddResource`, type `snapshots/<snapshotter>`), and the configs' labels keep them for
//! as long as the images are there. Deleting the images and the leases lets containerd's garbage
//! collector remove every snapshot.
//!
//! Failures never fail the import: they are reported ([`Report::errors`]) and unpacking is tried
//! again from containerd's content ([`from_content`]) when the record is next verified.

pub mod apply;
pub mod chain;
mod content;
pub mod plan;
pub mod scheduler;

pub use content::from_content;

use crate::archive::understand::Plan;
use crate::containerd::{Client, Containerd, ContainerdError, Labels};
use crate::digest::{Digest, InvalidDigest};
use crate::ingest::Observer;
use crate::platform::PlatformPolicy;
use crate::store::ContentStore;
use plan::Target;
use scheduler::{Input, Outcome, Scheduler, State};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// The snapshotter unpacking uses unless told otherwise (containerd's and CRI's default).
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// What to unpack into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The snapshotter (`overlayfs`, `native`, …).
    pub snapshotter: String,
    /// The platforms whose images are unpacked (see [`plan::policy`]).
    pub platforms: PlatformPolicy,
}

/// Why something could not be unpacked (or asked to be).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// A snapshotter name that cannot be one.
    #[error("invalid snapshotter {0:?}: expected a name such as overlayfs or native")]
    Snapshotter(String),
    /// The image's config gives no usable layer chain.
    #[error(transparent)]
    Chain(#[from] crate::oci::ChainError),
    /// The manifest and its config disagree on the number of layers.
    #[error("the manifest has {layers} layers but its config {config} lists {diff_ids} diff IDs")]
    LayerCount {
        /// Layers of the manifest.
        layers: usize,
        /// The config.
        config: Digest,
        /// Diff IDs of the config.
        diff_ids: usize,
    },
    /// A layer of the manifest whose media type is not a layer's.
    #[error("layer {digest} has media type {media_type:?}, which is not a layer")]
    NotALayer {
        /// The layer.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// An image record whose target is not a digest.
    #[error(transparent)]
    Target(#[from] InvalidDigest),
    /// A document could not be read from containerd's content.
    #[error("reading {digest}: {cause}")]
    Read {
        /// The document.
        digest: Digest,
        /// Why.
        cause: ContainerdError,
    },
    /// A document larger than airlift reads.
    #[error("{0} is larger than a document airlift reads")]
    TooLarge(Digest),
    /// An index of containerd's content that is not one.
    #[error("{0}")]
    Index(serde_json::Error),
    /// A manifest of containerd's content that is not one.
    #[error("manifest {digest}: {cause}")]
    Manifest {
        /// The manifest.
        digest: Digest,
        /// The parser's complaint.
        cause: serde_json::Error,
    },
    /// A chain could not be committed.
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    /// The chain below could not be committed.
    #[error("its parent chain failed: {0}")]
    Parent(Arc<UnpackError>),
    /// A layer of an image: its chain failed.
    #[error("layer {index}: {cause}")]
    Layer {
        /// The layer's position, base first.
        index: usize,
        /// Why its chain failed.
        cause: Arc<UnpackError>,
    },
    /// A layer whose chain was never committed (its blob never came).
    #[error("layer {index} ({blob}) was never applied")]
    NeverApplied {
        /// The layer's position, base first.
        index: usize,
        /// Its blob, or its diff ID when the blob is not known.
        blob: Digest,
    },
}

/// Whether `name` can be a snapshotter's name (a plugin id: letters, digits, `-`, `_`, `.`).
pub fn valid_snapshotter(name: &str) -> Result<(), UnpackError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(UnpackError::Snapshotter(name.to_string()))
    }
}

/// The label on an image config naming its unpacked top chain in `snapshotter`.
pub fn gc_label(snapshotter: &str) -> String {
    format!("containerd.io/gc.ref.snapshot.{snapshotter}")
}

/// The label on a compressed layer blob naming its diff ID.
pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// What unpacking did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The snapshotter.
    pub snapshotter: String,
    /// The images unpacked: every manifest of theirs of the selected platforms is committed.
    pub images: Vec<String>,
    /// Layers applied now.
    pub layers_applied: u64,
    /// Chains found committed already (shared with other images or imports).
    pub layers_present: u64,
    /// What failed, image by image.
    pub errors: Vec<String>,
    /// The top chains of the manifests unpacked (what the archive's lease holds).
    pub chains: Vec<String>,
    /// Wall time from the first layer's start to the last label.
    pub seconds: f64,
}

impl Report {
    /// Whether everything selected was unpacked.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors as one line, if any.
    pub fn error(&self) -> Option<String> {
        (!self.errors.is_empty()).then(|| self.errors.join("; "))
    }
}

/// The images of an import or a record, each with the manifests it reaches.
pub type Images = Vec<(String, Vec<Digest>)>;

/// The images of a plan.
pub fn images_of(plan: &Plan) -> Images {
    plan.images
        .iter()
        .map(|i| (i.name.clone(), i.manifests.clone()))
        .collect()
}

/// Forwards what the ingest sees to a session's scheduler.
struct Forward(mpsc::UnboundedSender<Input>);

impl Observer for Forward {
    fn stored(&self, digest: &Digest, size: u64) {
        let _ = self.0.send(Input::Stored(digest.clone(), size));
    }

    fn document(&self, digest: &Digest, json: &[u8]) {
        let _ = self.0.send(Input::Document(digest.clone(), json.to_vec()));
    }
}

/// The unpacking of one import, running beside it.
pub struct Session {
    options: Options,
    tx: mpsc::UnboundedSender<Input>,
    task: tokio::task::JoinHandle<Outcome>,
    /// The plan's targets, once known, and the manifests selected that cannot be unpacked.
    targets: Vec<Target>,
    unusable: Vec<(Digest, UnpackError)>,
    started: Instant,
}

impl Session {
    /// Starts unpacking with `options` through `leased` (the import's lease); `store` is where
    /// the import writes (its staged blobs are claimed early when needed).
    pub fn start(
        leased: Client,
        options: &Options,
        store: Option<Arc<dyn ContentStore>>,
    ) -> Session {
        let (tx, rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::new(
            leased,
            &options.snapshotter,
            options.platforms.clone(),
            store,
        );
        Session {
            options: options.clone(),
            tx,
            task: tokio::spawn(scheduler.run(rx)),
            targets: Vec::new(),
            unusable: Vec::new(),
            started: Instant::now(),
        }
    }

    /// What the ingest tells of each blob and document.
    pub fn observer(&self) -> Arc<dyn Observer> {
        Arc::new(Forward(self.tx.clone()))
    }

    /// The plan is made: from now on its targets alone are unpacked. Returns once no early
    /// claim is in flight (the record step may claim blobs then).
    pub async fn planned(&mut self, plan: &Plan) {
        let (targets, unusable) = plan::from_plan(plan, &self.options.platforms);
        self.set_targets(targets, unusable).await;
    }

    async fn set_targets(&mut self, targets: Vec<Target>, unusable: Vec<(Digest, UnpackError)>) {
        let (quiet, wait) = tokio::sync::oneshot::channel();
        self.targets = targets.clone();
        self.unusable = unusable;
        if self.tx.send(Input::Plan(targets, quiet)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Stops: what runs is finished (nothing new starts), nothing is labelled or reported.
    pub async fn abandon(self) {
        drop(self.tx);
        let _ = self.task.await;
    }

    /// Every blob is in the namespace (the record step is done): the rest is committed, then
    /// the configs and compressed layers are labelled through `leased` and the top chains join
    /// `archive_lease` through `client` — before the import's lease goes. `images` are the
    /// images to report on.
    pub async fn finish(
        self,
        client: &Client,
        leased: &Client,
        archive_lease: Option<&str>,
        images: &Images,
    ) -> Report {
        let _ = self.tx.send(Input::Recorded);
        drop(self.tx);
        let outcome = self.task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "the unpack scheduler failed");
            Outcome::default()
        });
        let mut report = conclude(
            &self.options.snapshotter,
            &self.targets,
            &self.unusable,
            &outcome,
            images,
        );
        label(
            client,
            leased,
            &self.options.snapshotter,
            &self.targets,
            &outcome,
            archive_lease,
            &mut report,
        )
        .await;
        report.seconds = self.started.elapsed().as_secs_f64();
        for e in &report.errors {
            tracing::warn!("unpacking failed: {e}");
        }
        report
    }
}

/// The chain that failed first for `target`, with why; `None` when its top chain is committed.
/// Chains are looked at base first, so the first that failed failed on its own (a chain whose
/// parent failed comes after that parent).
fn failure(target: &Target, outcome: &Outcome) -> Option<UnpackError> {
    let top = target.top()?;
    if matches!(outcome.states.get(&top), Some(State::Done(_))) {
        return None;
    }
    for (index, chain) in target.chains().iter().enumerate() {
        match outcome.states.get(chain) {
            Some(State::Done(_)) => continue,
            Some(State::Failed(e)) => {
                return Some(UnpackError::Layer {
                    index,
                    cause: e.clone(),
                })
            }
            _ => {
                let blob = target.blobs.get(index).cloned().flatten();
                return Some(UnpackError::NeverApplied {
                    index,
                    blob: blob.map_or_else(|| target.diff_ids[index].clone(), |b| b.digest),
                });
            }
        }
    }
    None
}

/// The report: which images are unpacked, what failed and why, what was applied.
fn conclude(
    snapshotter: &str,
    targets: &[Target],
    unusable: &[(Digest, UnpackError)],
    outcome: &Outcome,
    images: &Images,
) -> Report {
    // What failed of each manifest, said; none: unpacked.
    let mut by_manifest: HashMap<&Digest, Option<String>> = HashMap::new();
    for t in targets {
        by_manifest.insert(&t.manifest, failure(t, outcome).map(|e| e.to_string()));
    }
    for (m, e) in unusable {
        by_manifest.insert(m, Some(e.to_string()));
    }
    let mut report = Report {
        snapshotter: snapshotter.to_string(),
        ..Report::default()
    };
    for (name, manifests) in images {
        let mine: Vec<(&Digest, &Option<String>)> = manifests
            .iter()
            .filter_map(|m| by_manifest.get(m).map(|r| (m, r)))
            .collect();
        if mine.is_empty() {
            continue; // nothing of a selected platform
        }
        let errors: Vec<String> = mine
            .iter()
            .filter_map(|(m, r)| r.as_ref().map(|e| format!("manifest {m}: {e}")))
            .collect();
        if errors.is_empty() {
            report.images.push(name.clone());
        } else {
            report
                .errors
                .push(format!("image {name}: {}", errors.join("; ")));
        }
    }
    let wanted: BTreeSet<&Digest> = outcome.nodes.keys().collect();
    for (chain, state) in &outcome.states {
        if let State::Done(c) = state {
            if wanted.contains(chain) {
                match c {
                    apply::Committed::Applied => report.layers_applied += 1,
                    apply::Committed::Present => report.layers_present += 1,
                }
            }
        }
    }
    let tops: BTreeSet<String> = targets
        .iter()
        .filter(|t| failure(t, outcome).is_none())
        .filter_map(|t| t.top().map(|c| c.to_string()))
        .collect();
    report.chains = tops.into_iter().collect();
    report
}

/// Labels the configs of the unpacked targets and the compressed layers applied, and makes the
/// archive's lease hold exactly the unpacked top chains. Failures become report errors.
async fn label(
    client: &Client,
    leased: &Client,
    snapshotter: &str,
    targets: &[Target],
    outcome: &Outcome,
    archive_lease: Option<&str>,
    report: &mut Report,
) {
    let mut updates: BTreeMap<Digest, Labels> = BTreeMap::new();
    for t in targets {
        if let (None, Some(top)) = (failure(t, outcome), t.top()) {
            updates
                .entry(t.config.clone())
                .or_default()
                .insert(gc_label(snapshotter), top.to_string());
        }
    }
    for (blob, diff_id) in &outcome.applied {
        if blob != diff_id {
            updates
                .entry(blob.clone())
                .or_default()
                .insert(UNCOMPRESSED.to_string(), diff_id.to_string());
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    for (digest, labels) in updates {
        let (leased, limit) = (leased.clone(), limit.clone());
        tasks.spawn(async move {
            let _slot = limit.acquire_owned().await;
            leased.set_blob_labels(&digest, &labels).await
        });
    }
    if let Some(lease) = archive_lease {
        let (client, lease, sn) = (client.clone(), lease.to_string(), snapshotter.to_string());
        let chains = report.chains.clone();
        tasks.spawn(async move { hold(client.as_ref(), &lease, &sn, &chains).await });
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.expect("label task panicked") {
            report
                .errors
                .push(format!("labelling the unpacked images: {e}"));
        }
    }
}

/// Makes `lease` hold exactly `chains` of `snapshotter`.
pub async fn hold(
    client: &dyn Containerd,
    lease: &str,
    snapshotter: &str,
    chains: &[String],
) -> crate::containerd::Result<()> {
    let held: BTreeSet<String> = client
        .lease_snapshots(lease, snapshotter)
        .await?
        .into_iter()
        .collect();
    let want: BTreeSet<String> = chains.iter().cloned().collect();
    for c in want.difference(&held) {
        client.lease_snapshot(lease, snapshotter, c, true).await?;
    }
    for c in held.difference(&want) {
        client.lease_snapshot(lease, snapshotter, c, false).await?;
    }
    Ok(())
}

/// Whether every chain of `chains` is committed in `snapshotter`.
pub async fn committed(
    client: &dyn Containerd,
    snapshotter: &str,
    chains: &[String],
) -> crate::containerd::Result<bool> {
    for c in chains {
        if client.stat_snapshot(snapshotter, c).await?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
