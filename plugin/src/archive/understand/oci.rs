//! The OCI image layout (and `ctr export`'s hybrid archives): `index.json` and the blobs it
//! reaches, nested indexes included, resolved per platform.

use super::{
    fail, parse_json, Builder, Failure, FileRecord, Format, Inventory, Plan, PlanOptions, Problem,
    Resolved, UnderstandError,
};
use crate::archive::spec::{self, Descriptor, ImageConfig, Index, Manifest};
use crate::digest::Digest;
use crate::reference::Reference;

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
            if let Some(p) = &entry.platform {
                if !self.opts.platforms.matches(p) {
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
            let (names, unnamed) = b.names_from_annotations(&entry.annotations);
            let subject = subject_of(&names, i, entry);
            let mut res = Resolved::default();
            let outcome = self.resolve(entry, true, &mut res).map(|_| res);
            b.add(&subject, entry.clone(), names, unnamed, outcome);
        }
        let index_desc = Descriptor::new(
            spec::MEDIA_OCI_INDEX,
            Digest::of(index_bytes),
            index_bytes.len() as u64,
        );
        Ok(b.finish(index_desc, &top_children, Some(index_bytes.to_vec())))
    }

    /// Looks a blob up by digest, checking the size the descriptor declares.
    fn blob(&self, desc: &Descriptor) -> Result<Option<&FileRecord>, Failure> {
        let path = blob_path(&desc.digest);
        let Some(rec) = self.inv.files.get(&path) else {
            return Ok(None);
        };
        match &rec.digest {
            Err(why) => Err(fail(path, why.clone())),
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

    /// Resolves one descriptor and everything below it into `res`.
    fn resolve(&self, desc: &Descriptor, top: bool, res: &mut Resolved) -> Result<(), Failure> {
        let path = blob_path(&desc.digest);
        if spec::is_index(&desc.media_type) {
            if self.blob(desc)?.is_none() {
                return Err(fail(path, "index blob is missing from the archive"));
            }
            let index: Index = self.json(desc)?;
            let mut kept = Vec::new();
            for child in &index.manifests {
                if let Some(p) = &child.platform {
                    if !self.opts.platforms.matches(p) {
                        res.other_platforms
                            .insert(p.clone().normalized().to_string());
                        continue;
                    }
                }
                kept.push(child.clone());
            }
            for child in &kept {
                // A selected manifest absent from the archive was not exported (`ctr export
                // --platform`): skip it. Present but broken is an error.
                if spec::is_manifest(&child.media_type) && self.blob(child)?.is_none() {
                    continue;
                }
                self.resolve(child, false, res)?;
            }
            res.blobs.insert(desc.digest.clone());
            res.labels
                .entry(desc.digest.clone())
                .or_default()
                .extend(spec::gc_labels(&kept));
            Ok(())
        } else if spec::is_manifest(&desc.media_type) {
            if self.blob(desc)?.is_none() {
                return Err(fail(path, "manifest blob is missing from the archive"));
            }
            let manifest: Manifest = self.json(desc)?;
            if top && desc.platform.is_none() {
                // A single-platform image: its platform is in its config.
                if let Ok(config) = self.json::<ImageConfig>(&manifest.config) {
                    let p = config.platform.normalized();
                    if !p.os.is_empty() && !self.opts.platforms.matches(&p) {
                        res.other_platforms.insert(p.to_string());
                        return Ok(());
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
                    if i > 0 && spec::is_non_distributable(&child.media_type) {
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
                .extend(spec::gc_labels(&children));
            res.manifests += 1;
            Ok(())
        } else {
            Err(fail(
                path,
                format!("unsupported media type {:?}", desc.media_type),
            ))
        }
    }
}

fn subject_of(names: &[Result<Reference, String>], i: usize, entry: &Descriptor) -> String {
    match names.first() {
        Some(Ok(r)) => r.to_string(),
        _ => entry
            .annotations
            .get(spec::ANNOTATION_REF_NAME)
            .map(|r| format!("{r} (index.json entry {i})"))
            .unwrap_or_else(|| format!("index.json entry {i} ({})", entry.digest)),
    }
}
