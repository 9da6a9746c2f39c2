//! One archive's import, start to finish: its content store chosen and opened, the archive read
//! under a temporary lease (ingest, then the plan, then the synthesised blobs stored), then the
//! record step ([`super::record`]), with unpacking beside it when asked for, and the report.
//!
//! Ordering guarantees: every blob is committed and labelled, and held by the archive lease,
//! before any image record that refers to it is created or updated; the temporary lease is
//! released last, so garbage collection can never take content from under a running import.

use super::{record, ImportError, ImportOptions, Mode, Placement, Precedence, Report, Source};
use crate::archive::understand::{self, Plan, PlanOptions};
use crate::containerd::{Client, ContainerdError};
use crate::digest::Digest;
use crate::ingest::{self, Counters, CountingReader};
use crate::labels;
use crate::store::{direct::DirectStore, stream::StreamStore, ContentStore, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A name part unique to this import: this process's liveness token and a counter.
fn unique_suffix() -> String {
    static IMPORTS: AtomicU64 = AtomicU64::new(0);
    let n = IMPORTS.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", crate::liveness::token())
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
    let mut decided = Vec::new();
    let decisions = &mut decided;
    let result = async {
        let store = open_store(
            &leased,
            opts.mode,
            placement,
            &archive,
            format!("airlift-{suffix}"),
        )?;
        let scratch = scratch_dir(&store, opts);
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
        let (mut plan, counters) = ingest_and_plan(
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
        if let Some(gate) = &opts.verify {
            let signed_as = match (source, plan.format) {
                (Source::File(p), Some(understand::Format::DockerSave)) => {
                    match super::sidecar::path_of(p) {
                        Some(side) => {
                            let (store, scratch) = (store.clone(), scratch_dir(&store, opts));
                            tokio::task::spawn_blocking(move || {
                                super::sidecar::read(&side, store.as_ref(), &scratch)
                            })
                            .await
                            .expect("sidecar thread panicked")
                            .and_then(|inv| super::sidecar::matched(&inv, &plan))
                            .unwrap_or_else(|why| {
                                tracing::warn!(archive, "signatures file unreadable: {why}");
                                BTreeMap::new()
                            })
                        }
                        None => BTreeMap::new(),
                    }
                }
                _ => BTreeMap::new(),
            };
            *decisions = verified(gate, &mut plan, &signed_as, &leased, &archive).await;
        }
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
    let mut report = Report::new(
        archive,
        mode,
        recorded,
        &counters,
        progress.load(Ordering::Relaxed),
        started,
        unpack,
    );
    report.verifications(decided);
    Ok(report)
}

/// Where a decoder's scratch files go: the store's own, else the configured, else the system's.
fn scratch_dir(store: &Arc<dyn ContentStore>, opts: &ImportOptions) -> PathBuf {
    store
        .scratch_dir()
        .or_else(|| opts.scratch_dir.clone())
        .unwrap_or_else(std::env::temp_dir)
}

/// Verification at import: the images `gate` refuses leave `plan` (each a failure saying why,
/// logged once here), those it allows carry what they met in their record's labels.
async fn verified(
    gate: &crate::verify::Gate,
    plan: &mut Plan,
    signed_as: &BTreeMap<Digest, crate::verify::gate::SignedAs>,
    client: &Client,
    archive: &str,
) -> Vec<crate::verify::Decision> {
    let decisions = gate.apply(plan, signed_as, client.as_ref()).await;
    for d in &decisions {
        match &d.outcome {
            Ok(met) => {
                tracing::info!(archive, image = %d.image, "verified: {}", met.join("; "));
                let summary = crate::verify::gate::summary(met);
                for i in plan.images.iter_mut().filter(|i| i.name == d.image) {
                    i.labels.insert(
                        crate::verify::gate::VERIFIED_LABEL.to_string(),
                        summary.clone(),
                    );
                }
            }
            Err(why) => tracing::warn!(archive, image = %d.image, "{why}"),
        }
    }
    decisions
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
