//! The OCI image layout (and `ctr export`'s hybrid archives): `index.json` and the blobs it
//! reaches, nested indexes included, resolved per platform.

use super::{
    attached, fail, parse_json, Builder, Failure, FileRecord, Format, Inventory, ManifestPlan,
    Plan, PlanOptions, Problem, Resolved, UnderstandError,
};
use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageConfig, Index, Manifest};
use crate::platform::Platform;
use crate::reference::{InvalidReference, Reference};
use std::collections::BTreeSet;

/// The most indexes one path from `index.json` may pass through (real archives have one or two):
/// a deeper image fails, rather than the stack of the thread planning it.
pub(super) const NESTING_LIMIT: usize = 32;

pub(super) struct OciPlanner<'a> {
    pub(super) inv: &'a Inventory,
    pub(super) opts: &'a PlanOptions,
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

impl OciPlanner<'_> {
    pub(super) fn plan(&self, index_bytes: &[u8]) -> Result<Plan, UnderstandError> {
        let index: Index = parse_json("index.json", index_bytes)?;
        let mut b = Builder::new(self.opts, Format::OciLayout);
        let mut top_children = Vec::new();
        for (i, entry) in index.manifests.iter().enumerate() {
            if b.take_attachment(self.inv, entry) {
                continue;
            }
            let mut served = false;
            if let Some(p) = &entry.platform {
                if let Some(s) = self.opts.keep(p) {
                    served = s;
                } else {
                    let (names, _) = b.names_from_annotations(&entry.annotations);
                    let subject = subject_of(&names, i, entry);
                    b.plan.problems.push(Problem::Skipped {
                        image: subject,
                        reason: format!("its platform {} is not selected", p.clone().normalized()),
                        informational: self.opts.platforms.is_host_default(),
                    });
                    continue;
                }
            }
            top_children.push(entry.clone());
            let (mut names, mut unnamed) = b.names_from_annotations(&entry.annotations);
            if names.is_empty() {
                if let Some(locked) = self.opts.named.get(&entry.digest) {
                    names = locked
                        .iter()
                        .map(|n| Reference::parse_normalized(n))
                        .collect();
                } else if cosign_image(entry) {
                    unnamed = Some(COSIGN_UNNAMED.to_string());
                }
            }
            let subject = subject_of(&names, i, entry);
            let mut res = Resolved::default();
            let outcome = self
                .resolve(entry, true, served, &mut res, &mut BTreeSet::new(), 0)
                .map(|_| res);
            b.add(&subject, entry.clone(), names, unnamed, outcome);
        }
        let index_desc = Descriptor::new(
            oci::MEDIA_OCI_INDEX,
            Digest::of(index_bytes),
            index_bytes.len() as u64,
        );
        b.take_unlisted_referrers(self.inv);
        let mut plan = b.finish(index_desc, &top_children, Some(index_bytes.to_vec()));
        attached::attach(&mut plan);
        Ok(plan)
    }

    /// Looks a blob up by digest, checking the size the descriptor declares.
    fn blob(&self, desc: &Descriptor) -> Result<Option<&FileRecord>, Failure> {
        let path = blob_path(&desc.digest);
        let Some(rec) = self.inv.files.get(&path) else {
            return Ok(None);
        };
        match &rec.digest {
            Err(why) => Err(fail(path, why.to_string())),
            Ok(_) if rec.size as i64 != desc.size => Err(fail(
                path,
                format!(
                    "size is {} bytes but the descriptor declares {}",
                    rec.size, desc.size
                ),
            )),
            Ok(_) => Ok(Some(rec)),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, desc: &Descriptor) -> Result<T, Failure> {
        let path = blob_path(&desc.digest);
        let data = self
            .inv
            .json
            .get(&desc.digest)
            .ok_or_else(|| fail(path.clone(), "not a JSON document, or larger than 20 MiB"))?;
        serde_json::from_slice(data).map_err(|e| fail(path, format!("invalid JSON: {e}")))
    }

    /// Resolves one descriptor and everything below it into `res`; `served`: it is kept only to
    /// serve another platform; `indexes` are those resolved already for this root, `depth` how
    /// many indexes lead here.
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &self,
        desc: &Descriptor,
        top: bool,
        served: bool,
        res: &mut Resolved,
        indexes: &mut BTreeSet<Digest>,
        depth: usize,
    ) -> Result<(), Failure> {
        let path = blob_path(&desc.digest);
        if oci::is_index(&desc.media_type) {
            if depth >= NESTING_LIMIT {
                return Err(fail(
                    path,
                    format!("indexes nest more than {NESTING_LIMIT} deep"),
                ));
            }
            // An index listed again (under several parents) adds nothing new: resolved once, or
            // its descendants would be followed once per path to them.
            if !indexes.insert(desc.digest.clone()) {
                return Ok(());
            }
            if self.blob(desc)?.is_none() {
                return Err(fail(path, "index blob is missing from the archive"));
            }
            let index: Index = self.json(desc)?;
            let selected = self.opts.select(&index.manifests);
            for child in &index.manifests {
                if let Some(p) = &child.platform {
                    if !selected.iter().any(|(c, _)| c == child) {
                        res.other_platforms
                            .insert(p.clone().normalized().to_string());
                    }
                }
            }
            let kept: Vec<Descriptor> = selected.iter().map(|(c, _)| c.clone()).collect();
            for (child, child_served) in &selected {
                // A selected manifest absent from the archive was not exported (`ctr export
                // --platform`): skip it. Present but broken is an error.
                if oci::is_manifest(&child.media_type) && self.blob(child)?.is_none() {
                    continue;
                }
                let served = served || *child_served;
                self.resolve(child, false, served, res, indexes, depth + 1)?;
            }
            res.blobs.insert(desc.digest.clone());
            // References are only ever added, as containerd adds them: children another
            // import kept (k3s imports every platform; an earlier import served more) stay
            // referred to while the index is there.
            res.labels
                .entry(desc.digest.clone())
                .or_default()
                .extend(oci::gc_labels(&kept));
            Ok(())
        } else if oci::is_manifest(&desc.media_type) {
            if self.blob(desc)?.is_none() {
                return Err(fail(path, "manifest blob is missing from the archive"));
            }
            let manifest: Manifest = self.json(desc)?;
            let mut served = served;
            if top && desc.platform.is_none() {
                // A single-platform image: its platform is in its config.
                if let Ok(config) = self.json::<ImageConfig>(&manifest.config) {
                    let p = config.platform.normalized();
                    if !p.os.is_empty() {
                        match self.opts.keep(&p) {
                            None => {
                                res.other_platforms.insert(p.to_string());
                                return Ok(());
                            }
                            Some(s) => served = s,
                        }
                    }
                }
            }
            let mut children = vec![manifest.config.clone()];
            children.extend(manifest.layers.iter().cloned());
            for (i, child) in children.iter().enumerate() {
                let what = if i == 0 {
                    "config".to_string()
                } else {
                    format!("layer {}", i - 1)
                };
                if self.blob(child)?.is_none() {
                    if i > 0 && oci::is_non_distributable(&child.media_type) {
                        // Absent by design (containerd imports such images too): labelled as
                        // a child like any layer, neither stored nor held.
                        continue;
                    }
                    return Err(fail(
                        blob_path(&child.digest),
                        format!(
                            "{what} of manifest {} is missing from the archive",
                            desc.digest
                        ),
                    ));
                }
                res.blobs.insert(child.digest.clone());
            }
            res.blobs.insert(desc.digest.clone());
            res.labels
                .entry(desc.digest.clone())
                .or_default()
                .extend(oci::gc_labels(&children));
            res.manifests += 1;
            let config_json = self
                .inv
                .json
                .get(&manifest.config.digest)
                .map_or(&[][..], Vec::as_slice);
            let mut plan = ManifestPlan::new(manifest.config, manifest.layers, config_json);
            plan.served = served;
            if served {
                let p = desc.platform.clone().or_else(|| plan.platform.clone());
                res.served.extend(p.map(Platform::normalized));
            } else {
                res.run += 1;
            }
            res.layered.push((desc.digest.clone(), plan));
            Ok(())
        } else {
            Err(fail(
                path,
                format!("unsupported media type {:?}", desc.media_type),
            ))
        }
    }
}

/// Why a `cosign save` layout's image is not imported without a name.
const COSIGN_UNNAMED: &str = "a cosign save layout names no image: a line of the digest lock \
    (--lock, NAME@DIGEST) for its digest names it";

/// Whether an index.json entry is the image of a `cosign save` layout.
fn cosign_image(entry: &Descriptor) -> bool {
    entry
        .annotations
        .get(attached::COSIGN_KIND)
        .is_some_and(|k| k.starts_with(attached::KIND_IMAGE_PREFIX))
}

fn subject_of(
    names: &[Result<Reference, InvalidReference>],
    i: usize,
    entry: &Descriptor,
) -> String {
    match names.first() {
        Some(Ok(r)) => r.to_string(),
        _ => entry
            .annotations
            .get(oci::ANNOTATION_REF_NAME)
            .map(|r| format!("{r} (index.json entry {i})"))
            .unwrap_or_else(|| format!("index.json entry {i} ({})", entry.digest)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{plan, FileRecord, Inventory, PlanOptions, Problem};
    use super::NESTING_LIMIT;
    use crate::digest::Digest;
    use crate::oci;
    use crate::platform::PlatformPolicy;
    use serde_json::{json, Value};

    /// Puts a blob in `inv` as the ingest would; returns its descriptor.
    fn blob(inv: &mut Inventory, media_type: &str, bytes: Vec<u8>) -> Value {
        let d = Digest::of(&bytes);
        let record = FileRecord {
            digest: Ok(d.clone()),
            size: bytes.len() as u64,
            head: bytes[..bytes.len().min(16)].to_vec(),
        };
        inv.files
            .insert(format!("blobs/sha256/{}", d.hex()), record);
        let size = bytes.len();
        if bytes.starts_with(b"{") {
            inv.json.insert(d.clone(), bytes);
        }
        json!({"mediaType": media_type, "digest": d.to_string(), "size": size})
    }

    /// One image whose manifest is under `depth` indexes, each listing the next `fanout` times.
    fn nested(depth: usize, fanout: usize) -> Inventory {
        let mut inv = Inventory::default();
        let config = json!({"architecture": "amd64", "os": "linux"}).to_string();
        let config = blob(&mut inv, oci::MEDIA_OCI_CONFIG, config.into_bytes());
        let layer = "application/vnd.oci.image.layer.v1.tar";
        let layer = blob(&mut inv, layer, b"layer".to_vec());
        let manifest = json!({"schemaVersion": 2, "config": config, "layers": [layer]});
        let mut child = blob(
            &mut inv,
            oci::MEDIA_OCI_MANIFEST,
            manifest.to_string().into(),
        );
        for _ in 0..depth {
            let index = json!({"schemaVersion": 2, "manifests": vec![child; fanout]});
            child = blob(&mut inv, oci::MEDIA_OCI_INDEX, index.to_string().into());
        }
        child["annotations"] = json!({oci::ANNOTATION_IMAGE_NAME: "example.com/nested:1"});
        inv.oci_layout = Some(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
        inv.index_json = Some(
            json!({"schemaVersion": 2, "manifests": [child]})
                .to_string()
                .into(),
        );
        inv
    }

    fn all() -> PlanOptions {
        PlanOptions {
            platforms: PlatformPolicy::All,
            ..PlanOptions::default()
        }
    }

    #[test]
    fn indexes_nested_too_deep_fail_their_image_not_the_stack() {
        let p = plan(&nested(NESTING_LIMIT, 1), &all()).unwrap();
        assert_eq!(p.images.len(), 1, "{:?}", p.problems);
        assert_eq!(p.images[0].blobs.len(), NESTING_LIMIT + 3);
        // Followed, this would overflow the stack of the thread planning it.
        let p = plan(&nested(20_000, 1), &all()).unwrap();
        assert!(p.images.is_empty());
        assert!(
            matches!(&p.problems[..], [Problem::Failed { cause, .. }] if cause.contains("nest")),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn an_index_listed_again_is_resolved_once() {
        // 2^30 paths lead to the manifest: followed one by one, planning would never end.
        let p = plan(&nested(30, 2), &all()).unwrap();
        assert_eq!(p.images.len(), 1, "{:?}", p.problems);
        assert_eq!(p.images[0].blobs.len(), 30 + 3);
    }
}
