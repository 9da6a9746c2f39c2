//! Verification of what a pull list pulled, before it is pinned: the image's signatures fetched
//! from the same hosts as the image (cosign's `sha256-<hex>.sig` tag and the referrers tag
//! `sha256-<hex>`, by airlift's registry client through the same hosts directory or peer), then
//! the gate's decision ([`crate::verify::Gate::decide_stored`]). A refused image is not pinned,
//! and is removed when the pull made it (a record that was there before gets its old target
//! back); its signature records go with it.

use crate::archive::understand::attached::SUBJECT_LABEL;
use crate::containerd::{Client, ImageRecord, ImageTarget, Pull};
use crate::oci::Descriptor;
use crate::reference::Reference;
use crate::verify::Gate;
use std::collections::BTreeMap;

/// What verification made of one pulled image.
pub struct Checked {
    /// Allowed, with what it met; refused, and why.
    pub outcome: Result<Vec<String>, String>,
    /// The signature records fetched for it (to be pinned with it when allowed).
    pub attachments: Vec<ImageTarget>,
}

/// The signature tags of `image` (targeting `digest`): `.sig`, then the referrers tag.
fn tags(image: &Reference, digest: &str) -> Vec<String> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let repo = image.repository();
    vec![
        format!("{repo}:sha256-{hex}.sig"),
        format!("{repo}:sha256-{hex}"),
    ]
}

/// Fetches the signatures of `pulled` the way `pull` fetched it, and decides.
pub async fn check(
    gate: &Gate,
    leased: &Client,
    pull: &Pull,
    reference: &Reference,
    pulled: &ImageRecord,
    from: impl Fn(&Reference) -> Option<String>,
) -> Checked {
    let mut attachments = Vec::new();
    for tag in tags(reference, &pulled.digest) {
        let Ok(r) = Reference::parse_normalized(&tag) else {
            continue;
        };
        let sig = Pull {
            reference: tag.clone(),
            labels: BTreeMap::from([(SUBJECT_LABEL.to_string(), pulled.digest.clone())]),
            platforms: Vec::new(),
            from: from(&r),
            ..pull.clone()
        };
        match crate::pull::pull(leased, &sig).await {
            Ok(()) => {
                if let Ok(Some(rec)) = leased.get_image(&tag).await {
                    attachments.push(ImageTarget::of(rec));
                }
            }
            Err(e) => tracing::debug!(image = %pulled.name, tag, error = %e, "no signatures there"),
        }
    }
    let target = Descriptor::new(
        &pulled.media_type,
        pulled
            .digest
            .parse()
            .unwrap_or_else(|_| crate::digest::Digest::of(b"")),
        pulled.size as u64,
    );
    let outcome = gate
        .decide_stored(&pulled.name, &target, leased.as_ref())
        .await;
    Checked {
        outcome,
        attachments,
    }
}

/// Takes back what a refused pull made: the image record (or its previous target, when the name
/// was there before) and the signature records fetched for it.
pub async fn undo(
    client: &Client,
    pulled: &ImageRecord,
    before: Option<&ImageRecord>,
    attachments: &[ImageTarget],
) {
    let result = match before {
        Some(b) if b.digest != pulled.digest => {
            let labels = b.labels.clone().into_iter().collect();
            client.put_image(&ImageTarget::of(b.clone()), &labels).await
        }
        Some(_) => Ok(()),
        None => client.delete_image(&pulled.name, &pulled.digest).await,
    };
    if let Err(e) = result {
        tracing::warn!(image = %pulled.name, error = %e, "could not take back the refused image");
    }
    for a in attachments {
        let _ = client.delete_image(&a.name, &a.digest).await;
    }
}
