//! Understand: turn what the walk found into a plan — which images to create, what they point
//! to, and which labels each blob needs.
//!
//! Input is an [`Inventory`]: every regular file with its verified digest, the links, the small
//! JSON documents and the layout files. Output is a [`Plan`]. Nothing here performs I/O; failures
//! and skips are per image, so one broken image never hides the intact ones beside it.

use super::oci::{self, Descriptor, DockerSaveImage, ImageConfig, Index, Manifest, OciLayout};
use crate::digest::Digest;
use crate::platform::{Platform, PlatformPolicy};
use crate::reference::{is_full_reference, Reference};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the walk learned about one regular file.
#[derive(Debug, Clone)]
pub struct FileRecord {
    /// The digest of its bytes, or why it is unusable (a hash or size mismatch, a failed write).
    pub digest: Result<Digest, String>,
    /// Its size.
    pub size: u64,
    /// Its first bytes (for layer media type detection).
    pub head: Vec<u8>,
}

/// Everything the walk collected from one archive.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Regular files by normalised name.
    pub files: HashMap<String, FileRecord>,
    /// Links: name → target (both normalised archive paths).
    pub links: HashMap<String, String>,
    /// Small JSON documents (manifests, indexes, configs) by digest.
    pub json: HashMap<Digest, Vec<u8>>,
    /// Blobs held only in memory (in `json`), not yet stored: stored after planning, and only
    /// when an image needs them, so documents no image uses never reach containerd.
    pub deferred: std::collections::HashSet<Digest>,
    /// `oci-layout`, `index.json` and `manifest.json`, when present.
    pub oci_layout: Option<Vec<u8>>,
    /// `index.json`.
    pub index_json: Option<Vec<u8>>,
    /// docker-save `manifest.json`.
    pub manifest_json: Option<Vec<u8>>,
}

/// How to build the plan.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Which platforms to import.
    pub platforms: PlatformPolicy,
    /// Repository for tag-only names (`--base-name`).
    pub base_name: Option<String>,
    /// Also name the whole index (`--index-name`).
    pub index_name: Option<String>,
    /// Also create `<repository>@<digest>` names (`--digest-refs`).
    pub digest_refs: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            platforms: PlatformPolicy::Host,
            base_name: None,
            index_name: None,
            digest_refs: false,
        }
    }
}

/// The archive's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCI image layout (including `ctr export`'s hybrid archives).
    OciLayout,
    /// docker save.
    DockerSave,
}

/// One image record to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlan {
    /// The normalised name.
    pub name: String,
    /// What it points to (manifest or index), with the index entry's annotations.
    pub target: Descriptor,
    /// Every blob it needs.
    pub blobs: BTreeSet<Digest>,
}

/// Something that did not become an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The image is broken; nothing was recorded for it.
    Failed {
        /// The image (a name, or the index entry).
        image: String,
        /// The archive entry at fault, when there is one.
        entry: Option<String>,
        /// What is wrong.
        cause: String,
    },
    /// The image was left out on purpose.
    Skipped {
        /// The image.
        image: String,
        /// Why.
        reason: String,
        /// An expected skip (another platform under the host default) rather than a warning.
        informational: bool,
    },
}

/// The outcome of understanding an archive.
#[derive(Debug, Default)]
pub struct Plan {
    /// The format, when recognised.
    pub format: Option<Format>,
    /// Images to record.
    pub images: Vec<ImagePlan>,
    /// Failures and skips.
    pub problems: Vec<Problem>,
    /// Labels every used blob should carry (GC references and distribution sources).
    pub labels: BTreeMap<Digest, BTreeMap<String, String>>,
    /// Blobs the plan created (docker manifests, indexes) that must be stored.
    pub synthesized: BTreeMap<Digest, Vec<u8>>,
}

/// Why the archive as a whole cannot be understood.
#[derive(Debug, thiserror::Error)]
pub enum UnderstandError {
    /// Neither an OCI layout nor docker save.
    #[error("not an image archive: it has neither oci-layout + index.json nor manifest.json")]
    Unrecognised,
    /// A layout file is not valid JSON of the expected shape.
    #[error("entry {entry:?}: invalid JSON: {cause}")]
    InvalidJson {
        /// The file.
        entry: String,
        /// The parser's complaint.
        cause: String,
    },
    /// An OCI layout version airlift does not know.
    #[error("entry \"oci-layout\": unsupported OCI layout version {0:?}")]
    LayoutVersion(String),
    /// `oci-layout` without `index.json`.
    #[error("OCI layout without index.json")]
    MissingIndex,
}

fn parse_json<T: serde::de::DeserializeOwned>(
    entry: &str,
    data: &[u8],
) -> Result<T, UnderstandError> {
    serde_json::from_slice(data).map_err(|e| UnderstandError::InvalidJson {
        entry: entry.to_string(),
        cause: e.to_string(),
    })
}

/// A per-image failure while resolving content.
struct Failure {
    entry: Option<String>,
    cause: String,
}

fn fail(entry: impl Into<Option<String>>, cause: impl Into<String>) -> Failure {
    Failure {
        entry: entry.into(),
        cause: cause.into(),
    }
}

/// The content one root resolved to.
#[derive(Default)]
struct Resolved {
    blobs: BTreeSet<Digest>,
    labels: BTreeMap<Digest, BTreeMap<String, String>>,
    /// Manifests that matched the platform policy and are present.
    manifests: usize,
    /// Platforms that were not selected (for the skip message).
    other_platforms: BTreeSet<String>,
}

/// Builds the plan for an inventory.
pub fn plan(inv: &Inventory, opts: &PlanOptions) -> Result<Plan, UnderstandError> {
    if let Some(layout) = &inv.oci_layout {
        let layout: OciLayout = parse_json("oci-layout", layout)?;
        if layout.image_layout_version != "1.0.0" {
            return Err(UnderstandError::LayoutVersion(layout.image_layout_version));
        }
        let index = inv
            .index_json
            .as_ref()
            .ok_or(UnderstandError::MissingIndex)?;
        return OciPlanner { inv, opts }.plan(index);
    }
    if let Some(manifest) = &inv.manifest_json {
        return DockerPlanner { inv, opts }.plan(manifest);
    }
    Err(UnderstandError::Unrecognised)
}

/// Shared steps of both formats.
struct Builder<'a> {
    opts: &'a PlanOptions,
    plan: Plan,
    /// Digests of all roots that resolved, for the index-name image.
    all_blobs: BTreeSet<Digest>,
    any_failed: bool,
}

impl<'a> Builder<'a> {
    fn new(opts: &'a PlanOptions, format: Format) -> Self {
        Builder {
            opts,
            plan: Plan {
                format: Some(format),
                ..Plan::default()
            },
            all_blobs: BTreeSet::new(),
            any_failed: false,
        }
    }

    /// Names an image root from an index entry's annotations.
    fn names_from_annotations(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> (Vec<Result<Reference, String>>, Option<String>) {
        if let Some(name) = annotations.get(oci::ANNOTATION_IMAGE_NAME) {
            return (
                vec![Reference::parse_normalized(name).map_err(|e| e.to_string())],
                None,
            );
        }
        match annotations.get(oci::ANNOTATION_REF_NAME) {
            Some(r) if is_full_reference(r) => (
                vec![Reference::parse_normalized(r).map_err(|e| e.to_string())],
                None,
            ),
            Some(tag) => match &self.opts.base_name {
                Some(base) => (
                    vec![Reference::parse_normalized(&format!("{base}:{tag}"))
                        .map_err(|e| e.to_string())],
                    None,
                ),
                None => (
                    Vec::new(),
                    Some(format!(
                        "tag-only reference name {tag:?}; pass --base-name to name it"
                    )),
                ),
            },
            None => (Vec::new(), Some("no image name in the archive".to_string())),
        }
    }

    /// Records a resolved root under its names.
    fn add(
        &mut self,
        subject: &str,
        target: Descriptor,
        names: Vec<Result<Reference, String>>,
        unnamed: Option<String>,
        res: Result<Resolved, Failure>,
    ) {
        let res = match res {
            Err(f) => {
                self.any_failed = true;
                self.plan.problems.push(Problem::Failed {
                    image: subject.to_string(),
                    entry: f.entry,
                    cause: f.cause,
                });
                return;
            }
            Ok(r) => r,
        };
        if res.manifests == 0 {
            let others: Vec<String> = res.other_platforms.into_iter().collect();
            let reason = if others.is_empty() {
                "no manifest for the selected platforms is in the archive".to_string()
            } else {
                format!(
                    "no manifest for the selected platforms (the archive has {})",
                    others.join(", ")
                )
            };
            self.plan.problems.push(Problem::Skipped {
                image: subject.to_string(),
                reason,
                informational: self.opts.platforms.is_host_default(),
            });
            return;
        }
        let mut good = Vec::new();
        for n in names {
            match n {
                Ok(r) => good.push(r),
                Err(cause) => {
                    self.any_failed = true;
                    self.plan.problems.push(Problem::Failed {
                        image: subject.to_string(),
                        entry: None,
                        cause,
                    });
                }
            }
        }
        let named = !good.is_empty();
        if !named && self.opts.index_name.is_none() {
            if let Some(reason) = unnamed {
                self.plan.problems.push(Problem::Skipped {
                    image: subject.to_string(),
                    reason,
                    informational: false,
                });
            }
            return;
        }
        // distribution sources: registry → repositories, for every blob of the image.
        let mut sources: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in &good {
            sources
                .entry(r.domain().to_string())
                .or_default()
                .insert(r.path().to_string());
        }
        for (digest, labels) in res.labels {
            self.plan.labels.entry(digest).or_default().extend(labels);
        }
        for digest in &res.blobs {
            let labels = self.plan.labels.entry(digest.clone()).or_default();
            for (domain, repos) in &sources {
                let key = format!("containerd.io/distribution.source.{domain}");
                let mut all: BTreeSet<String> = labels
                    .get(&key)
                    .map(|v| v.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                all.extend(repos.iter().cloned());
                labels.insert(key, all.into_iter().collect::<Vec<_>>().join(","));
            }
        }
        self.all_blobs.extend(res.blobs.iter().cloned());
        let mut names: Vec<String> = Vec::new();
        for r in &good {
            names.push(r.to_string());
            if self.opts.digest_refs {
                names.push(r.with_digest(&target.digest).to_string());
            }
        }
        for name in names {
            if self.plan.images.iter().any(|i| i.name == name) {
                continue;
            }
            self.plan.images.push(ImagePlan {
                name,
                target: target.clone(),
                blobs: res.blobs.clone(),
            });
        }
    }

    /// Adds the `--index-name` image for the archive's whole index.
    fn finish(
        mut self,
        index: Descriptor,
        index_children: &[Descriptor],
        index_bytes: Option<Vec<u8>>,
    ) -> Plan {
        if let Some(name) = self.opts.index_name.clone() {
            match Reference::parse_normalized(&name) {
                Err(e) => self.plan.problems.push(Problem::Failed {
                    image: name,
                    entry: None,
                    cause: e.to_string(),
                }),
                Ok(_) if self.any_failed || self.all_blobs.is_empty() => self.plan.problems.push(Problem::Skipped {
                    image: name,
                    reason: "not every image of the archive could be imported, so the index is incomplete".into(),
                    informational: false,
                }),
                Ok(r) => {
                    let mut blobs = std::mem::take(&mut self.all_blobs);
                    blobs.insert(index.digest.clone());
                    self.plan
                        .labels
                        .entry(index.digest.clone())
                        .or_default()
                        .extend(oci::gc_labels(index_children));
                    if let Some(bytes) = index_bytes {
                        self.plan.synthesized.insert(index.digest.clone(), bytes);
                    }
                    self.plan.images.push(ImagePlan {
                        name: r.to_string(),
                        target: index,
                        blobs,
                    });
                }
            }
        }
        self.plan
    }
}

struct OciPlanner<'a> {
    inv: &'a Inventory,
    opts: &'a PlanOptions,
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

impl OciPlanner<'_> {
    fn plan(&self, index_bytes: &[u8]) -> Result<Plan, UnderstandError> {
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
            oci::MEDIA_OCI_INDEX,
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
        if oci::is_index(&desc.media_type) {
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
                if oci::is_manifest(&child.media_type) && self.blob(child)?.is_none() {
                    continue;
                }
                self.resolve(child, false, res)?;
            }
            res.blobs.insert(desc.digest.clone());
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
            .get(oci::ANNOTATION_REF_NAME)
            .map(|r| format!("{r} (index.json entry {i})"))
            .unwrap_or_else(|| format!("index.json entry {i} ({})", entry.digest)),
    }
}

struct DockerPlanner<'a> {
    inv: &'a Inventory,
    opts: &'a PlanOptions,
}

impl DockerPlanner<'_> {
    /// Follows links to the regular file a name refers to.
    fn file(&self, name: &str) -> Option<(&str, &FileRecord)> {
        let mut name = super::walk::normalize(name).ok()?;
        for _ in 0..16 {
            if let Some(rec) = self.inv.files.get(&name) {
                return Some((self.inv.files.get_key_value(&name)?.0.as_str(), rec));
            }
            name = self.inv.links.get(&name)?.clone();
        }
        None
    }

    fn plan(&self, manifest_json: &[u8]) -> Result<Plan, UnderstandError> {
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
                            Err(err) => names.push(Err(err.to_string())),
                        }
                        index_entries.push(e);
                    }
                    if let Some(p) = &platform {
                        if !self.opts.platforms.matches(p) {
                            res.manifests = 0;
                            res.other_platforms.insert(p.to_string());
                        }
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
                    .is_none_or(|p| self.opts.platforms.matches(p))
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
            .map_err(|why| fail(config_name.to_string(), why))?;
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
                .map_err(|why| fail(name.to_string(), why))?;
            let compressed = super::decode::layer_is_compressed(&rec.head);
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
        Ok((desc, bytes, res, platform))
    }
}
