//! `GET /v2/<name>/referrers/<digest>`, distribution-spec 1.1's Listing Referrers: an OCI image
//! index of the manifests of `<name>` whose `subject` is `<digest>` (cosign's Sigstore bundles,
//! attestations, SBOMs), filtered on `artifactType` when the query asks.
//!
//! What is found:
//! - the manifests listed by the referrers tag `<name>:sha256-<hex>`: an image record whose
//!   target is an index, as registries without the API keep referrers and as airlift records
//!   them at import; looked up in containerd at each request, served by the rule of
//!   [`Listing::of`](super::served::Listing::of);
//! - any manifest or index reachable from a served image of `<name>` whose `subject` is
//!   `<digest>`: [`served`](super::served) reads every reachable manifest anyway, once per
//!   image target.
//!
//! What is not: a manifest that only the content store holds, with no served image record
//! reaching it (a referrer pushed by digest alone, with no referrers tag); the referrers of
//! another repository.
//!
//! Each descriptor is made from the referrer itself when its manifest is in the content store,
//! as the spec says: its `artifactType` (else a manifest's config media type), its
//! annotations. cosign's referrers tag index records the config media type and no annotations
//! instead, so what an index records is used only for a manifest that is not there, and a
//! manifest there whose `subject` is another digest is left out. The list is never paginated.

use super::http::{Body, Request, Response};
use super::names::Repository;
use super::served::MAX_MANIFEST;
use super::Registry;
use crate::digest::Digest;
use crate::oci::{MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST};
use std::collections::{BTreeMap, HashSet};

/// The query parameter that filters, and the `OCI-Filters-Applied` value saying it did.
pub const ARTIFACT_TYPE: &str = "artifactType";

/// A referrer's descriptor in the list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The referrer's media type (a manifest's or an index's).
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// What kind of artifact it is; omitted for an index without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A manifest or index that refers to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// The digest its `subject` names.
    pub subject: Digest,
    /// Its descriptor in the subject's referrers list.
    pub descriptor: Descriptor,
}

/// The referrer that the manifest or index `json` (`digest`, `size` bytes, of `media_type`
/// when known) is; `None` when it has no `subject`.
pub fn referrer(
    digest: &Digest,
    media_type: &str,
    size: u64,
    json: &serde_json::Value,
) -> Option<Referrer> {
    let subject = json["subject"]["digest"].as_str()?.parse().ok()?;
    Some(Referrer {
        subject,
        descriptor: descriptor(digest, media_type, size, json),
    })
}

/// The descriptor of the manifest or index `json` by the spec's rules.
pub fn descriptor(
    digest: &Digest,
    media_type: &str,
    size: u64,
    json: &serde_json::Value,
) -> Descriptor {
    let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let index = json["manifests"].is_array();
    let media_type = match media_type {
        "" => text(&json["mediaType"]).unwrap_or_else(|| {
            if index {
                MEDIA_OCI_INDEX
            } else {
                MEDIA_OCI_MANIFEST
            }
            .to_string()
        }),
        m => m.to_string(),
    };
    let artifact_type = text(&json["artifactType"]).or_else(|| {
        if index {
            None
        } else {
            text(&json["config"]["mediaType"])
        }
    });
    Descriptor {
        media_type,
        digest: digest.clone(),
        size,
        artifact_type,
        annotations: annotations(&json["annotations"]),
    }
}

fn annotations(v: &serde_json::Value) -> Option<BTreeMap<String, String>> {
    serde_json::from_value::<BTreeMap<String, String>>(v.clone())
        .ok()
        .filter(|a| !a.is_empty())
}

/// A descriptor as an index lists it; `None` without a digest or a size.
fn listed(v: &serde_json::Value) -> Option<Descriptor> {
    Some(Descriptor {
        media_type: v["mediaType"]
            .as_str()
            .unwrap_or(MEDIA_OCI_MANIFEST)
            .to_string(),
        digest: v["digest"].as_str()?.parse().ok()?,
        size: v["size"].as_u64()?,
        artifact_type: v["artifactType"].as_str().map(str::to_string),
        annotations: annotations(&v["annotations"]),
    })
}

/// The response body: an OCI image index of `manifests`.
pub fn index(manifests: &[Descriptor]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("JSON of strings")
}

impl Registry {
    /// The referrers of `digest` in `repo`: 404 `NAME_UNKNOWN` when no image of `repo` is
    /// served, otherwise 200 with the list, empty when nothing refers to `digest`.
    pub(super) async fn referrers(
        &self,
        req: &Request,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<Response, Response> {
        let (client, source) = self.backend().await?;
        let images = self.images(&client, repo).await?;
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let tag = super::signatures::referrers_tag(digest);
        if let Some((target, _)) = self.served_tag(&client, repo, &tag).await? {
            let data = source
                .read(&target, MAX_MANIFEST)
                .await
                .map_err(|e| self.failed(&e))?
                .unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
            for d in json["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(listed)
            {
                let d = match source
                    .read(&d.digest, MAX_MANIFEST)
                    .await
                    .map_err(|e| self.failed(&e))?
                {
                    None => d,
                    Some(data) => {
                        let json = serde_json::from_slice(&data).unwrap_or_default();
                        match referrer(&d.digest, &d.media_type, data.len() as u64, &json) {
                            Some(r) if r.subject != *digest => continue,
                            Some(r) => r.descriptor,
                            None => descriptor(&d.digest, &d.media_type, d.size, &json),
                        }
                    }
                };
                if seen.insert(d.digest.clone()) {
                    found.push(d);
                }
            }
        }
        let mut reached = Vec::new();
        for image in &images {
            let reach = self
                .served
                .reach(&source, image)
                .await
                .map_err(|e| self.failed(&e))?;
            for m in reach.manifests.values() {
                if let Some(r) = m.referrer.as_ref().filter(|r| r.subject == *digest) {
                    if seen.insert(r.descriptor.digest.clone()) {
                        reached.push(r.descriptor.clone());
                    }
                }
            }
        }
        reached.sort_by(|a, b| a.digest.cmp(&b.digest));
        found.extend(reached);
        let wanted = req
            .param(ARTIFACT_TYPE)
            .filter(|t| !t.is_empty())
            .map(|t| super::routes::decode(t).unwrap_or_else(|| t.to_string()));
        if let Some(t) = &wanted {
            found.retain(|d| d.artifact_type.as_deref() == Some(t.as_str()));
        }
        let resp =
            Response::new(200, Body::Bytes(index(&found))).with("Content-Type", MEDIA_OCI_INDEX);
        Ok(match wanted {
            Some(_) => resp.with("OCI-Filters-Applied", ARTIFACT_TYPE),
            None => resp,
        })
    }
}
