//! Attachments: the signatures, attestations and other OCI 1.1 referrers an OCI layout carries
//! for its images, found in every shape people make them — `sha256-<hex>.sig`/`.att` entries
//! (`skopeo copy`, `oras`, `crane`), `cosign save`'s `kind` entries without names, referrers-tag
//! indexes (`sha256-<hex>`), listed referrer manifests, and referrer manifests left unlisted in
//! `blobs/` (as `cosign save` leaves bundles). None of them is an image of its own: each is
//! recorded beside the images whose target it names, under the tags registries use
//! ([`attach`]), and its layers are the evidence verification reads.

use super::{Builder, ImagePlan, Inventory};
use crate::digest::Digest;
use crate::oci::{self, Descriptor, Index, Manifest};
use crate::reference::{is_full_reference, Reference};
use std::collections::{BTreeMap, BTreeSet};

/// cosign's `kind` annotation on `cosign save` index entries.
pub const COSIGN_KIND: &str = "kind";
/// The `kind` of a `.sig` manifest in a `cosign save` layout.
pub const KIND_SIGNATURES: &str = "dev.cosignproject.cosign/sigs";
/// The `kind` of a `.att` manifest in a `cosign save` layout.
pub const KIND_ATTESTATIONS: &str = "dev.cosignproject.cosign/atts";
/// The `kind` of the image itself in a `cosign save` layout (or `…/imageIndex`).
pub const KIND_IMAGE_PREFIX: &str = "dev.cosignproject.cosign/image";
/// The layer media type of a simple-signing signature.
const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The label of an attachment's image record: the target digest of the image it belongs to.
pub const SUBJECT_LABEL: &str = "airlift.io/subject";

/// The labels of an attachment's record.
fn subject_label(subject: &Digest) -> BTreeMap<String, String> {
    BTreeMap::from([(SUBJECT_LABEL.to_string(), subject.to_string())])
}

/// What an attachment is to its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// cosign's `.sig` manifest: one simple-signing layer per signature.
    Signatures,
    /// cosign's legacy `.att` manifest: DSSE attestations.
    Attestations,
    /// An OCI 1.1 referrer (a Sigstore bundle, an SBOM, …) of this artifact type.
    Referrer { artifact_type: String },
}

/// One layer of an attachment, with its bytes when the archive had them as a small document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The layer's descriptor (media type, digest, annotations such as cosign's signature).
    pub descriptor: Descriptor,
    /// Its exact bytes (payloads and bundles are small JSON documents).
    pub data: Option<Vec<u8>>,
}

/// A manifest the archive carries for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The digest of the image (manifest or index) it is for.
    pub subject: Digest,
    /// What it is.
    pub kind: Kind,
    /// Its manifest's descriptor (with `artifactType` for a referrer).
    pub manifest: Descriptor,
    /// Its layers, in order.
    pub layers: Vec<Layer>,
    /// Every blob of it present in the archive: the manifest, its config and layers.
    pub blobs: BTreeSet<Digest>,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// The digest a tag of the cosign/referrers-tag schema names: `sha256-<hex>` with an optional
/// `.sig`/`.att`/`.sbom` suffix, and the suffix.
pub fn tag_subject(tag: &str) -> Option<(Digest, &str)> {
    let rest = tag.strip_prefix("sha256-")?;
    // `get`, not slicing: a tag is the archive's text, and need not be ASCII.
    let (hex, suffix) = (rest.get(..64)?, rest.get(64..)?);
    if !matches!(suffix, "" | ".sig" | ".att" | ".sbom") {
        return None;
    }
    Digest::from_hex(hex).map(|d| (d, suffix))
}

/// The tag part of an index entry's name, when it has one (a tag-only ref name, or the tag of
/// a full reference).
fn entry_tag(entry: &Descriptor) -> Option<String> {
    let name = entry
        .annotations
        .get(oci::ANNOTATION_IMAGE_NAME)
        .or_else(|| entry.annotations.get(oci::ANNOTATION_REF_NAME))?;
    if !is_full_reference(name) {
        return Some(name.clone());
    }
    Reference::parse_normalized(name)
        .ok()
        .and_then(|r| r.tag().map(str::to_string))
}

impl Builder<'_> {
    /// Whether index.json's `entry` is an attachment rather than an image; if so it is
    /// collected (with, for a referrers-tag index, the referrers it lists).
    pub(super) fn take_attachment(&mut self, inv: &Inventory, entry: &Descriptor) -> bool {
        let kind = entry.annotations.get(COSIGN_KIND).map(String::as_str);
        let tagged =
            entry_tag(entry).and_then(|t| tag_subject(&t).map(|(d, s)| (d, s.to_string())));
        match (kind, tagged) {
            (Some(KIND_SIGNATURES), t) => {
                self.collect(inv, entry, t.map(|(d, _)| d), Some(Kind::Signatures))
            }
            (Some(KIND_ATTESTATIONS), t) => {
                self.collect(inv, entry, t.map(|(d, _)| d), Some(Kind::Attestations))
            }
            (_, Some((subject, suffix))) => match suffix.as_str() {
                ".sig" => self.collect(inv, entry, Some(subject), Some(Kind::Signatures)),
                ".att" => self.collect(inv, entry, Some(subject), Some(Kind::Attestations)),
                ".sbom" => self.collect(inv, entry, Some(subject), None),
                _ if oci::is_index(&entry.media_type) => {
                    // A referrers-tag index: each manifest it lists is a referrer.
                    if let Some(index) = json::<Index>(inv, &entry.digest) {
                        for child in &index.manifests {
                            self.collect(inv, child, Some(subject.clone()), None);
                        }
                    }
                }
                _ => self.collect(inv, entry, Some(subject), None),
            },
            _ => match json::<Manifest>(inv, &entry.digest) {
                Some(m) if oci::is_manifest(&entry.media_type) && m.subject.is_some() => {
                    self.collect(inv, entry, None, None)
                }
                _ => return false,
            },
        }
        true
    }

    /// Collects the referrer manifests the archive has in `blobs/` but does not list (cosign
    /// save leaves bundles so): every manifest with a `subject` not collected yet.
    pub(super) fn take_unlisted_referrers(&mut self, inv: &Inventory) {
        let mut digests: Vec<&Digest> = inv
            .json
            .iter()
            .filter(|(_, bytes)| memchr_subject(bytes))
            .map(|(d, _)| d)
            .collect();
        digests.sort();
        for digest in digests {
            if self
                .plan
                .attachments
                .iter()
                .any(|a| &a.manifest.digest == digest)
            {
                continue;
            }
            let Some(m) = json::<Manifest>(inv, digest) else {
                continue;
            };
            let Some(rec) = inv.files.get(&format!("blobs/sha256/{}", digest.hex())) else {
                continue;
            };
            if m.subject.is_none() {
                continue;
            }
            let media_type = m_media_type(inv, digest);
            let desc = Descriptor::new(&media_type, digest.clone(), rec.size);
            self.collect(inv, &desc, None, None);
        }
    }

    /// Reads the attachment manifest `desc`; `subject` is what its tag names (else its
    /// `subject` field, else its simple-signing payload says), `kind` what its tag or `kind`
    /// says (else it is a referrer). Unreadable ones are skipped: they are evidence, and
    /// evidence that cannot be read is no evidence.
    fn collect(
        &mut self,
        inv: &Inventory,
        desc: &Descriptor,
        subject: Option<Digest>,
        kind: Option<Kind>,
    ) {
        let Some(manifest) = json::<Manifest>(inv, &desc.digest) else {
            return;
        };
        let layers: Vec<Layer> = manifest
            .layers
            .iter()
            .map(|l| Layer {
                descriptor: l.clone(),
                data: inv.json.get(&l.digest).cloned(),
            })
            .collect();
        let subject = subject
            .or_else(|| manifest.subject.as_ref().map(|s| s.digest.clone()))
            .or_else(|| layers.iter().find_map(signed_digest));
        let Some(subject) = subject else {
            return;
        };
        let artifact_type = if manifest.artifact_type.is_empty() {
            manifest.config.media_type.clone()
        } else {
            manifest.artifact_type.clone()
        };
        let kind = kind.unwrap_or(Kind::Referrer {
            artifact_type: artifact_type.clone(),
        });
        let mut descriptor = Descriptor::new(
            if desc.media_type.is_empty() {
                oci::MEDIA_OCI_MANIFEST
            } else {
                &desc.media_type
            },
            desc.digest.clone(),
            desc.size as u64,
        );
        descriptor.artifact_type = artifact_type;
        descriptor.annotations = manifest.annotations.clone();
        let mut blobs = BTreeSet::from([desc.digest.clone()]);
        let mut children = vec![manifest.config.clone()];
        children.extend(manifest.layers.iter().cloned());
        for child in &children {
            if inv
                .files
                .contains_key(&format!("blobs/sha256/{}", child.digest.hex()))
            {
                blobs.insert(child.digest.clone());
            }
        }
        self.plan
            .labels
            .entry(desc.digest.clone())
            .or_default()
            .extend(oci::gc_labels(&children));
        if self
            .plan
            .attachments
            .iter()
            .any(|a| a.manifest.digest == desc.digest)
        {
            return;
        }
        self.plan.attachments.push(Attachment {
            subject,
            kind,
            manifest: descriptor,
            layers,
            blobs,
            annotations: manifest.annotations,
        });
    }
}

/// Whether a document mentions a `subject` at all (a cheap test before parsing it).
fn memchr_subject(bytes: &[u8]) -> bool {
    bytes.windows(9).any(|w| w == b"\"subject\"")
}

/// The media type a manifest declares of itself, OCI's when it declares none.
fn m_media_type(inv: &Inventory, digest: &Digest) -> String {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    json::<Typed>(inv, digest)
        .map(|t| t.media_type)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| oci::MEDIA_OCI_MANIFEST.to_string())
}

/// A document of the archive, parsed.
fn json<T: serde::de::DeserializeOwned>(inv: &Inventory, digest: &Digest) -> Option<T> {
    serde_json::from_slice(inv.json.get(digest)?).ok()
}

/// The image digest a simple-signing payload layer names (`critical.image.docker-manifest-digest`).
fn signed_digest(layer: &Layer) -> Option<Digest> {
    if layer.descriptor.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
        return None;
    }
    let payload: serde_json::Value = serde_json::from_slice(layer.data.as_ref()?).ok()?;
    let d = payload
        .get("critical")?
        .get("image")?
        .get("docker-manifest-digest")?
        .as_str()?;
    d.parse().ok()
}

/// The repository part of an image name (`docker.io/library/nginx:1` → `docker.io/library/nginx`).
pub fn repository(name: &str) -> Option<String> {
    Reference::parse_normalized(name)
        .ok()
        .map(|r| r.repository())
}

/// Adds the image records of the attachments: for every planned image whose target an
/// attachment names, in that image's repository, the `.sig` and `.att` manifests under
/// `sha256-<hex>.sig`/`.att` (cosign's tags) and the referrers under the referrers-tag index
/// `sha256-<hex>` (OCI 1.1's fallback tag schema), synthesised to list them. Each such record
/// has [`ImagePlan::subject`] set: stored, pinned and leased with its image, never unpacked.
pub fn attach(plan: &mut super::Plan) {
    let mut added: Vec<ImagePlan> = Vec::new();
    let mut seen: BTreeSet<String> = plan.images.iter().map(|i| i.name.clone()).collect();
    let mut pairs: BTreeSet<(String, Digest)> = BTreeSet::new();
    for image in plan.images.iter().filter(|i| i.subject.is_none()) {
        if let Some(repo) = repository(&image.name) {
            pairs.insert((repo, image.target.digest.clone()));
        }
    }
    for (repo, subject) in pairs {
        let of: Vec<&Attachment> = plan
            .attachments
            .iter()
            .filter(|a| a.subject == subject)
            .collect();
        let mut referrers: Vec<&Attachment> = Vec::new();
        for a in of {
            let suffix = match a.kind {
                Kind::Signatures => ".sig",
                Kind::Attestations => ".att",
                Kind::Referrer { .. } => {
                    referrers.push(a);
                    continue;
                }
            };
            let name = format!("{repo}:sha256-{}{suffix}", subject.hex());
            if seen.insert(name.clone()) {
                added.push(ImagePlan {
                    name,
                    target: a.manifest.clone(),
                    blobs: a.blobs.clone(),
                    manifests: Vec::new(),
                    subject: Some(subject.clone()),
                    labels: subject_label(&subject),
                    served_only: false,
                });
            }
        }
        if referrers.is_empty() {
            continue;
        }
        let children: Vec<Descriptor> = referrers.iter().map(|a| a.manifest.clone()).collect();
        let bytes = referrers_index(&children);
        let digest = Digest::of(&bytes);
        let target = Descriptor::new(oci::MEDIA_OCI_INDEX, digest.clone(), bytes.len() as u64);
        plan.labels
            .entry(digest.clone())
            .or_default()
            .extend(oci::gc_labels(&children));
        let mut blobs: BTreeSet<Digest> = referrers
            .iter()
            .flat_map(|a| a.blobs.iter().cloned())
            .collect();
        blobs.insert(digest.clone());
        plan.synthesized.insert(digest, bytes);
        let name = format!("{repo}:sha256-{}", subject.hex());
        if seen.insert(name.clone()) {
            added.push(ImagePlan {
                name,
                target,
                blobs,
                manifests: Vec::new(),
                subject: Some(subject.clone()),
                labels: subject_label(&subject),
                served_only: false,
            });
        }
    }
    plan.images.extend(added);
}

/// The referrers-tag index listing `children` (OCI 1.1's fallback: an image index whose
/// descriptors carry each referrer's `artifactType` and annotations).
pub fn referrers_index(children: &[Descriptor]) -> Vec<u8> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_OCI_INDEX,
        "manifests": children,
    });
    serde_json::to_vec(&index).expect("an index serialises")
}

#[cfg(test)]
mod tests {
    use super::tag_subject;

    #[test]
    fn tags_of_the_cosign_and_referrers_schemas_name_their_subject() {
        let hex = "2d8e3c3af836a2e8c6aec90af2c7547315fb88586cb38645e32b1e8657585fbd";
        for (tag, suffix) in [
            ("", ""),
            (".sig", ".sig"),
            (".att", ".att"),
            (".sbom", ".sbom"),
        ] {
            let t = format!("sha256-{hex}{tag}");
            let (d, s) = tag_subject(&t).unwrap();
            assert_eq!((d.hex(), s), (hex, suffix));
        }
        for tag in [
            "1.36".to_string(),
            format!("sha256-{hex}.tar"),
            format!("sha256-{}", &hex[1..]),
            format!("sha256-{}é{}", &hex[..63], ".sig"),
            format!("sha256-{}", "é".repeat(40)),
            format!("sha512-{hex}"),
        ] {
            assert!(tag_subject(&tag).is_none(), "{tag}");
        }
    }
}
