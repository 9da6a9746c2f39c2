//! Unpacking from what containerd holds rather than from an archive being read: the images'
//! manifests, configs and layers found in the namespace, down from each image's target (what
//! verification does for a record whose images are not unpacked).

use super::plan::{self, Target};
use super::{Images, Options, Report, Session, UnpackError};
use crate::containerd::{Client, Containerd, ImageTarget};
use crate::digest::Digest;
use crate::oci;
use crate::platform::PlatformPolicy;
use std::collections::BTreeSet;
use std::time::Instant;

/// Unpacks `images` from what containerd holds (their manifests, configs and layers in the
/// namespace): what verification does for a record whose images are not unpacked. `leased`
/// holds what is in flight; the top chains join `archive_lease` through `client`.
pub async fn from_content(
    client: &Client,
    leased: &Client,
    options: &Options,
    images: &[ImageTarget],
    archive_lease: Option<&str>,
) -> Report {
    let started = Instant::now();
    let mut targets = Vec::new();
    let mut unusable = Vec::new();
    let mut reached: Images = Vec::new();
    for image in images {
        let mut manifests = Vec::new();
        match image.digest.parse::<Digest>() {
            Ok(d) => {
                resolve(
                    client.as_ref(),
                    &options.platforms,
                    &image.media_type,
                    &d,
                    0,
                    &mut manifests,
                    &mut targets,
                    &mut unusable,
                )
                .await
            }
            Err(e) => unusable.push((Digest::of(image.digest.as_bytes()), e.into())),
        }
        reached.push((image.name.clone(), manifests));
    }
    // Manifests several images share are one target.
    let mut seen = BTreeSet::new();
    targets.retain(|t: &Target| seen.insert(t.manifest.clone()));
    let mut session = Session::start(leased.clone(), options, None);
    session.set_targets(targets, unusable).await;
    let mut report = session
        .finish(client, leased, archive_lease, &reached)
        .await;
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Follows one descriptor of the namespace down to its manifests: each manifest reached goes
/// into `manifests`, and those of a selected platform into `targets` (or `unusable`).
#[allow(clippy::too_many_arguments)]
fn resolve<'a>(
    client: &'a dyn Containerd,
    policy: &'a PlatformPolicy,
    media_type: &'a str,
    digest: &'a Digest,
    depth: usize,
    manifests: &'a mut Vec<Digest>,
    targets: &'a mut Vec<Target>,
    unusable: &'a mut Vec<(Digest, UnpackError)>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let read = |digest: Digest| async move {
            let bytes = match client.read(&digest, 0, 0).await {
                Ok(b) => b,
                Err(cause) => return Err(UnpackError::Read { digest, cause }),
            };
            if bytes.len() as u64 > crate::ingest::JSON_LIMIT {
                return Err(UnpackError::TooLarge(digest));
            }
            Ok(bytes)
        };
        if oci::is_index(media_type) && depth < 8 {
            let index = match read(digest.clone())
                .await
                .and_then(|b| serde_json::from_slice::<oci::Index>(&b).map_err(UnpackError::Index))
            {
                Ok(i) => i,
                Err(e) => {
                    manifests.push(digest.clone());
                    unusable.push((digest.clone(), e));
                    return;
                }
            };
            for child in &index.manifests {
                if child.platform.as_ref().is_some_and(|p| !policy.matches(p)) {
                    continue;
                }
                // A child of the index that is not here was not imported (another platform).
                if oci::is_manifest(&child.media_type)
                    && !matches!(client.info(&child.digest).await, Ok(Some(_)))
                {
                    continue;
                }
                resolve(
                    client,
                    policy,
                    &child.media_type,
                    &child.digest,
                    depth + 1,
                    manifests,
                    targets,
                    unusable,
                )
                .await;
            }
        } else if oci::is_manifest(media_type) {
            manifests.push(digest.clone());
            let result = async {
                let m: oci::Manifest = serde_json::from_slice(&read(digest.clone()).await?)
                    .map_err(|cause| UnpackError::Manifest {
                        digest: digest.clone(),
                        cause,
                    })?;
                let config = read(m.config.digest.clone()).await?;
                let mp = crate::archive::understand::ManifestPlan::new(
                    m.config.clone(),
                    m.layers.clone(),
                    &config,
                );
                if !mp.platform.as_ref().is_some_and(|p| policy.matches(p)) {
                    return Ok(None);
                }
                plan::target(digest, &m.config.digest, &mp.layers, &mp.diff_ids).map(Some)
            }
            .await;
            match result {
                Ok(Some(t)) => targets.push(t),
                Ok(None) => {}
                Err(e) => unusable.push((digest.clone(), e)),
            }
        }
    })
}
