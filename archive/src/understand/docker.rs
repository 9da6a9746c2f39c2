//! docker save: `manifest.json` and the Docker schema 2 manifests (and the index) containerd's
//! importer synthesises for it, byte for byte.

use super::{
    fail, parse_json, Builder, Failure, FileRecord, Format, Inventory, ManifestPlan, Plan,
    PlanOptions, Resolved, UnderstandError,
};
use crate::digest::Digest;
use crate::oci::{self, Descriptor, DockerSaveImage, ImageConfig};
use crate::platform::Platform;
use crate::reference::Reference;

pub(super) struct DockerPlanner<'a> {
    pub(super) inv: &'a Inventory,
    pub(super) opts: &'a PlanOptions,
}

impl DockerPlanner<'_> {
    /// Follows links to the regular file a name refers to.
    fn file(&self, name: &str) -> Option<(&str, &FileRecord)> {
        let mut name = crate::walk::normalize(name).ok()?;
        for _ in 0..16 {
            if let Some(rec) = self.inv.files.get(&name) {
                return Some((self.inv.files.get_key_value(&name)?.0.as_str(), rec));
            }
            name = self.inv.links.get(&name)?.clone();
        }
        None
    }

    pub(super) fn plan(&self, manifest_json: &[u8]) -> Result<Plan, UnderstandError> {
        let images: Vec<DockerSaveImage> = parse_json("manifest.json", manifest_json)?;
        let mut b = Builder::new(self.opts, Format::DockerSave);
        let mut index_entries = Vec::new();
        for (i, image) in images.iter().enumerate() {
            let tags = image.repo_tags.clone().unwrap_or_default();
            let subject = tags
                .first()
                .cloned()
                .unwrap_or_else(|| format!("manifest.json entry {i}"));
            match self.synthesize(image) {
                Err(f) => b.add(
                    &subject,
                    Descriptor::new("", Digest::of(b""), 0),
                    Vec::new(),
                    None,
                    Err(f),
                ),
                Ok((desc, bytes, mut res, platform)) => {
                    let mut entry = desc.clone();
                    entry.platform = platform.clone();
                    // containerd's importer puts one index entry per tag.
                    if tags.is_empty() {
                        index_entries.push(entry.clone());
                    }
                    let mut names = Vec::new();
                    for tag in &tags {
                        let mut e = entry.clone();
                        match Reference::parse_normalized(tag) {
                            Ok(r) => {
                                e.annotations
                                    .insert(oci::ANNOTATION_IMAGE_NAME.into(), r.to_string());
                                e.annotations
                                    .insert(oci::ANNOTATION_REF_NAME.into(), r.object());
                                names.push(Ok(r));
                            }
                            Err(err) => names.push(Err(err)),
                        }
                        index_entries.push(e);
                    }
                    match platform.as_ref().map(|p| (p, self.opts.keep(p))) {
                        Some((p, None)) => {
                            res.manifests = 0;
                            res.other_platforms.insert(p.to_string());
                        }
                        Some((p, Some(true))) => {
                            res.run = 0;
                            res.served.push(p.clone());
                            for (_, m) in &mut res.layered {
                                m.served = true;
                            }
                        }
                        _ => {}
                    }
                    if res.manifests > 0 {
                        b.plan.synthesized.insert(desc.digest.clone(), bytes);
                    }
                    let unnamed = tags
                        .is_empty()
                        .then(|| "the image has no RepoTags".to_string());
                    b.add(&subject, desc, names, unnamed, Ok(res));
                }
            }
        }
        let kept: Vec<Descriptor> = index_entries
            .iter()
            .filter(|e| {
                e.platform
                    .as_ref()
                    .is_none_or(|p| self.opts.keep(p).is_some())
            })
            .cloned()
            .collect();
        let index_bytes = oci::go_json(&oci::SynthesizedIndex {
            schema_version: 2,
            manifests: &index_entries,
        });
        let index = Descriptor::new(
            oci::MEDIA_OCI_INDEX,
            Digest::of(&index_bytes),
            index_bytes.len() as u64,
        );
        Ok(b.finish(index, &kept, Some(index_bytes)))
    }

    /// Builds the Docker schema 2 manifest containerd's importer would write for one image.
    fn synthesize(
        &self,
        image: &DockerSaveImage,
    ) -> Result<(Descriptor, Vec<u8>, Resolved, Option<Platform>), Failure> {
        let (config_name, config_rec) = self.file(&image.config).ok_or_else(|| {
            fail(
                image.config.clone(),
                "image config is missing from the archive",
            )
        })?;
        let config_digest = config_rec
            .digest
            .clone()
            .map_err(|why| fail(config_name.to_string(), why.to_string()))?;
        let config_bytes = self.inv.json.get(&config_digest).ok_or_else(|| {
            fail(
                config_name.to_string(),
                "image config is not a JSON document",
            )
        })?;
        let config: ImageConfig = serde_json::from_slice(config_bytes)
            .map_err(|e| fail(config_name.to_string(), format!("invalid JSON: {e}")))?;
        let diff_ids = config
            .rootfs
            .as_ref()
            .map(|r| r.diff_ids.clone())
            .unwrap_or_default();
        let config_desc = Descriptor::new(oci::MEDIA_DOCKER_CONFIG, config_digest, config_rec.size);
        let mut layers = Vec::new();
        for (i, layer) in image.layers.iter().enumerate() {
            let (name, rec) = self
                .file(layer)
                .ok_or_else(|| fail(layer.clone(), "layer is missing from the archive"))?;
            let digest = rec
                .digest
                .clone()
                .map_err(|why| fail(name.to_string(), why.to_string()))?;
            let compressed = crate::decode::layer_is_compressed(&rec.head);
            if !compressed {
                // An uncompressed layer's digest is its diff ID: the config vouches for it.
                if let Some(want) = diff_ids.get(i) {
                    if *want != digest.to_string() {
                        return Err(fail(
                            name.to_string(),
                            format!("layer content hashes to {digest} but the image config lists diff ID {want}"),
                        ));
                    }
                }
            }
            let media = if compressed {
                oci::MEDIA_DOCKER_LAYER_GZIP
            } else {
                oci::MEDIA_DOCKER_LAYER
            };
            layers.push(Descriptor::new(media, digest, rec.size));
        }
        let bytes = oci::go_json(&oci::SynthesizedManifest {
            schema_version: 2,
            media_type: oci::MEDIA_DOCKER_MANIFEST,
            config: &config_desc,
            layers: &layers,
        });
        let desc = Descriptor::new(
            oci::MEDIA_DOCKER_MANIFEST,
            Digest::of(&bytes),
            bytes.len() as u64,
        );
        let platform = (!config.platform.os.is_empty() || !config.platform.architecture.is_empty())
            .then(|| config.platform.clone().normalized());
        let mut res = Resolved::default();
        let mut children = vec![config_desc.clone()];
        children.extend(layers.iter().cloned());
        for c in &children {
            res.blobs.insert(c.digest.clone());
        }
        res.blobs.insert(desc.digest.clone());
        res.labels
            .insert(desc.digest.clone(), oci::gc_labels(&children));
        res.manifests = 1;
        res.run = 1;
        res.layered.push((
            desc.digest.clone(),
            ManifestPlan::new(config_desc, layers, config_bytes),
        ));
        Ok((desc, bytes, res, platform))
    }
}
