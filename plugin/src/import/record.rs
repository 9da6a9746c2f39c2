//! The record step of an import, last station of the journey: the archive's lease, the blobs'
//! claims and labels, then the image records — in that order, so no image record ever refers to
//! content that is not committed, labelled and held. A pull list ends in the same step: its
//! lease made by [`source_lease`], its image records written by [`write_images`].

use super::{ImportError, ImportOptions, Source};
use crate::archive::understand::{Plan, Problem};
use crate::containerd::{Client, ContainerdError, ImageTarget, Labels};
use crate::digest::Digest;
use crate::labels;
use crate::store::{ContentStore, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// Image records sent to containerd at the same time (one metadata transaction each).
const IMAGES_IN_FLIGHT: usize = 8;

/// What the record step made.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The images the archive provides.
    pub images: Vec<ImageTarget>,
    /// Those whose records were left alone: another archive takes precedence.
    pub shadowed: Vec<String>,
    /// Names a pull list did not pull: another archive takes precedence.
    pub yielded: Vec<String>,
    /// The archive's lease, when it holds anything.
    pub lease: Option<String>,
    /// Every blob the images use.
    pub blobs: Vec<String>,
    /// Images that failed.
    pub failed: Vec<String>,
    /// Images skipped, with the reason.
    pub skipped: Vec<String>,
    /// Images of platforms not selected.
    pub not_selected: Vec<String>,
    /// Images kept only to serve other platforms (not this node's to run).
    pub served_only: Vec<String>,
    /// Served platforms images have no manifest for, as `IMAGE: PLATFORM, …`.
    pub unserved: Vec<String>,
}

/// Labels content, updates the archive lease and creates the image records (but those
/// `precedence` leaves to other archives). `client` is the plain connection, `leased` the one under the import's temporary
/// lease.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    client: &Client,
    leased: &Client,
    store: Arc<dyn ContentStore>,
    source: &Source,
    archive: &str,
    plan: &Plan,
    opts: &ImportOptions,
    precedence: &dyn super::Precedence,
) -> Result<Recorded, ImportError> {
    let cd_err = |cause: ContainerdError| ImportError::Containerd {
        archive: archive.to_string(),
        cause,
    };
    let store_err = |cause: StoreError| ImportError::Store {
        archive: archive.to_string(),
        what: "blobs".into(),
        cause,
    };
    let needed: BTreeSet<&Digest> = plan.images.iter().flat_map(|i| i.blobs.iter()).collect();
    let archive_path = source.path();

    // 1. The archive's own lease (a file source only), created before anything joins it.
    let lease = match &archive_path {
        Some(path) if !needed.is_empty() => {
            let id = source_lease(client, path).await.map_err(cd_err)?;
            fail::fail_point!("lease", |_| crate::sys::crash());
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
    let claimed = match store.staging() {
        None => BTreeSet::new(),
        Some(_) => {
            let claimer = match &lease {
                Some(id) => client.with_lease(Some(id)),
                None => leased.clone(),
            };
            let labels = plan.labels.clone();
            let wanted: BTreeSet<Digest> = needed.iter().map(|d| (*d).clone()).collect();
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let refs: BTreeSet<&Digest> = wanted.iter().collect();
                let staging = store.staging().expect("checked above");
                staging.claim_staged(claimer.as_ref(), &labels, &refs)
            })
            .await
            .expect("claim thread panicked")
            .map_err(store_err)?
        }
    };

    // 3. Every other blob: labels (garbage-collection references, distribution sources) and its
    //    place in the archive's lease; blobs the archive no longer needs leave the lease.
    for digest in needed.iter().filter(|d| !claimed.contains(**d)) {
        fail::fail_point!("label", |_| crate::sys::crash());
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

    // 4. Image records, last, a few at a time.
    let labels = opts.image_labels(archive_path.as_deref());
    let images: Vec<ImageTarget> = plan
        .images
        .iter()
        .map(|i| ImageTarget {
            name: i.name.clone(),
            media_type: i.target.media_type.clone(),
            digest: i.target.digest.to_string(),
            size: i.target.size,
            annotations: i.target.annotations.clone(),
        })
        .collect();
    let own: BTreeMap<String, Labels> = plan
        .images
        .iter()
        .filter(|i| !i.labels.is_empty())
        .map(|i| (i.name.clone(), i.labels.clone()))
        .collect();
    let shadowed = write_images(
        leased, &images, &labels, &own, precedence, archive, "imported",
    )
    .await
    .map_err(cd_err)?;
    let served: BTreeSet<&str> = plan
        .images
        .iter()
        .filter(|i| i.served_only)
        .map(|i| i.name.as_str())
        .collect();
    for name in &served {
        tracing::info!(
            archive,
            image = %name,
            "held to serve other platforms only: this node runs none of its platforms"
        );
    }
    for u in &plan.unserved {
        tracing::info!(
            archive,
            "nothing to serve for {u}: the archive has no manifest of it"
        );
    }
    let mut recorded = Recorded {
        served_only: served.iter().map(|n| n.to_string()).collect(),
        unserved: plan.unserved.clone(),
        images,
        shadowed,
        lease: if needed.is_empty() { None } else { lease },
        blobs: needed.iter().map(|d| d.to_string()).collect(),
        ..Recorded::default()
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
                recorded.failed.push(msg);
            }
            Problem::Skipped {
                image,
                reason,
                informational,
            } => {
                tracing::debug!(archive, image = %image, "skipped: {reason}");
                let list = if *informational {
                    &mut recorded.not_selected
                } else {
                    &mut recorded.skipped
                };
                list.push(format!("{image}: {reason}"));
            }
        }
    }
    Ok(recorded)
}

/// The lease of a file source (an archive, a pull list), named after its path and labelled with
/// it, created before anything joins it (one that exists is fine); its id.
pub async fn source_lease(client: &Client, path: &Path) -> Result<String, ContainerdError> {
    let id = labels::archive_lease(path);
    let l = BTreeMap::from([(
        labels::ARCHIVE.to_string(),
        crate::escape::shown(&path).to_string(),
    )]);
    client.create_lease(&id, l, None).await?;
    Ok(id)
}

/// Writes the image records of `images` with `labels` (and, for an image named in `own`, its
/// labels too), a few at a time — but those `precedence` leaves to other archives, whose names
/// are returned. Each is logged as `done` (`imported`, `pulled`).
pub async fn write_images(
    client: &Client,
    images: &[ImageTarget],
    labels: &Labels,
    own: &BTreeMap<String, Labels>,
    precedence: &dyn super::Precedence,
    archive: &str,
    done: &'static str,
) -> Result<Vec<String>, ContainerdError> {
    let shadowed = precedence.claim(images);
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(IMAGES_IN_FLIGHT));
    for image in images.iter().filter(|i| !shadowed.contains(&i.name)) {
        let mut labels = labels.clone();
        if let Some(extra) = own.get(&image.name) {
            labels.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let (client, image, limit) = (client.clone(), image.clone(), limit.clone());
        tasks.spawn(async move {
            let _slot = limit.acquire_owned().await;
            fail::fail_point!("image", |_| crate::sys::crash());
            client.put_image(&image, &labels).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("image task panicked")?;
    }
    let mut left = Vec::new();
    for image in images {
        if shadowed.contains(&image.name) {
            tracing::info!(archive, image = %image.name, "provided by another archive too, which takes precedence");
            left.push(image.name.clone());
        } else {
            tracing::info!(archive, image = %image.name, digest = %image.digest, "{done}");
        }
    }
    Ok(left)
}
