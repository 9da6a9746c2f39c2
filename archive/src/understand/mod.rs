//! Understand: turn what the walk found into a plan — which images to create, what they point
//! to, and which labels each blob needs.
//!
//! Input is an [`Inventory`]: every regular file with its verified digest, the links, the small
//! JSON documents and the layout files. Output is a [`Plan`]. Nothing here performs I/O; failures
//! and skips are per image, so one broken image never hides the intact ones beside it.

pub mod attached;
mod docker;
mod layout;
mod names;

use crate::digest::Digest;
use crate::oci::{self, ChainError, Descriptor, OciLayout};
use crate::platform::{Platform, PlatformPolicy};
use crate::reference::{InvalidReference, Reference};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Why a file of the archive is no usable blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// Under `blobs/` but not named by a sha256 digest.
    #[error("blob path does not end in a sha256 digest: {0:?}")]
    Path(String),
    /// Under `blobs/<algorithm>/` for an algorithm other than sha256.
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    /// Its bytes hash to another digest than its name declares.
    #[error("content hashes to {actual}, not to {declared} as its name declares")]
    Mismatch {
        /// What the bytes hash to.
        actual: Digest,
        /// What the name declares.
        declared: Digest,
    },
}

/// What the walk learned about one regular file.
#[derive(Debug, Clone)]
pub struct FileRecord {
    /// The digest of its bytes, or why it is unusable (a hash mismatch, a name that is no
    /// digest).
    pub digest: Result<Digest, BlobError>,
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
#[derive(Clone)]
pub struct PlanOptions {
    /// Which platforms to import: the platforms the node runs.
    pub platforms: PlatformPolicy,
    /// Which platforms the node serves to others without running them (`serve_platforms`):
    /// their manifests, configs and layers are stored, labelled and held like the rest, but not
    /// unpacked; of an index, the one manifest a node of each such platform would pull. None by
    /// default.
    pub serve: PlatformPolicy,
    /// Repository for tag-only names (`--base-name`).
    pub base_name: Option<String>,
    /// Also name the whole index (`--index-name`).
    pub index_name: Option<String>,
    /// Also create `<repository>@<digest>` names (`--digest-refs`).
    pub digest_refs: bool,
    /// Names for images the archive leaves unnamed (`cosign save` layouts), by target digest:
    /// the digest lock's lines.
    pub named: BTreeMap<Digest, Vec<String>>,
}

/// As derived, but `serve` only when something is served: `airlift import` keeps this text in
/// its records' fingerprints, and records made before `serve` existed must still stand (an
/// upgraded airlift reads no archive again).
impl std::fmt::Debug for PlanOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("PlanOptions");
        s.field("platforms", &self.platforms);
        if !self.serve.is_none() {
            s.field("serve", &self.serve);
        }
        s.field("base_name", &self.base_name)
            .field("index_name", &self.index_name)
            .field("digest_refs", &self.digest_refs)
            .field("named", &self.named)
            .finish()
    }
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            platforms: PlatformPolicy::Host,
            serve: PlatformPolicy::Only(Vec::new()),
            base_name: None,
            index_name: None,
            digest_refs: false,
            named: BTreeMap::new(),
        }
    }
}

impl PlanOptions {
    /// Whether a manifest of platform `p`, standing alone (not among an index's others), is
    /// kept: `Some(false)` to run, `Some(true)` only to serve, `None` not at all. A platform
    /// both run and served is run.
    pub fn keep(&self, p: &Platform) -> Option<bool> {
        if self.platforms.matches(p) {
            Some(false)
        } else if self.serve.matches(p) {
            Some(true)
        } else {
            None
        }
    }

    /// The children of an index kept, each with whether it is kept only to serve: those
    /// without a platform and those the node runs, then for each served platform the one a
    /// node of that platform would pull (the best-ranked that it runs, as containerd ranks
    /// them), or, serving every platform, all of them.
    pub fn select(&self, children: &[Descriptor]) -> Vec<(Descriptor, bool)> {
        let mut kept: Vec<Option<bool>> = children
            .iter()
            .map(|c| match &c.platform {
                None => Some(false),
                Some(p) => self.platforms.matches(p).then_some(false),
            })
            .collect();
        match &self.serve {
            PlatformPolicy::Only(wants) => {
                for want in wants {
                    let best = children
                        .iter()
                        .enumerate()
                        .filter_map(|(i, c)| {
                            let p = c.platform.as_ref()?;
                            Some((crate::platform::preference(want, p)?, i))
                        })
                        .min();
                    if let Some((_, i)) = best {
                        kept[i].get_or_insert(true);
                    }
                }
            }
            PlatformPolicy::All | PlatformPolicy::Host => {
                for (i, c) in children.iter().enumerate() {
                    if c.platform.as_ref().is_some_and(|p| self.serve.matches(p)) {
                        kept[i].get_or_insert(true);
                    }
                }
            }
        }
        children
            .iter()
            .zip(kept)
            .filter_map(|(c, k)| k.map(|served| (c.clone(), served)))
            .collect()
    }

    /// The served platforms none of `stored` (the platforms an image's content was kept for)
    /// gives a node of: what a node of those platforms cannot pull of the image from here.
    /// Platforms the node runs are not counted (their absence is no skip of serving).
    pub fn unserved(&self, stored: &[Platform]) -> Vec<Platform> {
        let PlatformPolicy::Only(wants) = &self.serve else {
            return Vec::new();
        };
        wants
            .iter()
            .filter(|w| !self.platforms.matches(w))
            .filter(|w| {
                !stored
                    .iter()
                    .any(|p| crate::platform::preference(w, p).is_some())
            })
            .cloned()
            .collect()
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
    /// The image manifests it reaches (one, or an index's selected ones): keys of
    /// [`Plan::manifests`].
    pub manifests: Vec<Digest>,
    /// For an attachment's record (`sha256-<hex>.sig`, a referrers-tag index), the target
    /// digest of the image it belongs to: recorded, pinned and leased with that image, never
    /// unpacked, and left out when that image is.
    pub subject: Option<Digest>,
    /// Labels of this image record alone (beside those every image of the import gets).
    pub labels: BTreeMap<String, String>,
    /// Every manifest it reaches was kept only to serve other platforms (`serve_platforms`):
    /// recorded, pinned and held, but not an image this node runs.
    pub served_only: bool,
}

/// One image manifest the plan keeps, as unpacking needs it: the config, the layers in order
/// and the diff IDs the config lists for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPlan {
    /// The config.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Kept only to serve another platform (`serve_platforms`): never unpacked.
    pub served: bool,
    /// The config's platform (what containerd's unpacker matches), when it names one.
    pub platform: Option<crate::platform::Platform>,
    /// The config's `rootfs.diff_ids`, or why they cannot be used (not a layer chain, not
    /// digests).
    pub diff_ids: Result<Vec<Digest>, ChainError>,
}

impl ManifestPlan {
    /// The manifest of `config` (whose JSON is `config_json`) and `layers`.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>, config_json: &[u8]) -> ManifestPlan {
        let parsed = serde_json::from_slice::<oci::ImageConfig>(config_json);
        let platform = parsed.as_ref().ok().and_then(|c| {
            (!c.platform.os.is_empty() || !c.platform.architecture.is_empty())
                .then(|| c.platform.clone().normalized())
        });
        let diff_ids = match parsed {
            Err(e) => Err(ChainError::Config {
                digest: config.digest.clone(),
                cause: e.to_string(),
            }),
            Ok(c) => oci::layer_chain(&c),
        };
        ManifestPlan {
            config,
            layers,
            served: false,
            platform,
            diff_ids,
        }
    }
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
    /// The image manifests the images reach, by digest.
    pub manifests: BTreeMap<Digest, ManifestPlan>,
    /// The signatures, attestations and referrers the archive carries for its images.
    pub attachments: Vec<attached::Attachment>,
    /// Served platforms an image has no manifest for (`IMAGE: linux/arm64, …`): nothing of it
    /// to serve to nodes of those platforms.
    pub unserved: Vec<String>,
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
    /// Of those, the manifests kept to run (the others are kept only to serve).
    run: usize,
    /// The platforms of the manifests kept only to serve.
    served: Vec<Platform>,
    /// Platforms that were not selected (for the skip message).
    other_platforms: BTreeSet<String>,
    /// The manifests kept, as unpacking needs them.
    layered: Vec<(Digest, ManifestPlan)>,
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
        return layout::OciPlanner { inv, opts }.plan(index);
    }
    if let Some(manifest) = &inv.manifest_json {
        return docker::DockerPlanner { inv, opts }.plan(manifest);
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

    /// Records a resolved root under its names.
    fn add(
        &mut self,
        subject: &str,
        target: Descriptor,
        names: Vec<Result<Reference, InvalidReference>>,
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
                        cause: cause.to_string(),
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
        let served_only = res.run == 0;
        let unserved = self.opts.unserved(&res.served);
        if !unserved.is_empty() {
            let list: Vec<String> = unserved.iter().map(Platform::to_string).collect();
            self.plan
                .unserved
                .push(format!("{subject}: {}", list.join(", ")));
        }
        let manifests: Vec<Digest> = res.layered.iter().map(|(d, _)| d.clone()).collect();
        for (d, m) in res.layered {
            self.plan.manifests.insert(d, m);
        }
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
                manifests: manifests.clone(),
                subject: None,
                labels: BTreeMap::new(),
                served_only,
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
                    let manifests = self.plan.manifests.keys().cloned().collect();
                    let served_only = !self.plan.manifests.is_empty()
                        && self.plan.manifests.values().all(|m| m.served);
                    self.plan.images.push(ImagePlan {
                        name: r.to_string(),
                        target: index,
                        blobs,
                        manifests,
                        subject: None,
                        labels: BTreeMap::new(),
                        served_only,
                    });
                }
            }
        }
        self.plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_options_read_as_before_when_nothing_is_served() {
        // The text airlift import's records were fingerprinted with before `serve` existed.
        assert_eq!(
            format!("{:?}", PlanOptions::default()),
            "PlanOptions { platforms: Host, base_name: None, index_name: None, \
             digest_refs: false, named: {} }"
        );
        let served = PlanOptions {
            serve: PlatformPolicy::All,
            ..PlanOptions::default()
        };
        assert!(format!("{served:?}").contains("serve: All"), "{served:?}");
    }
}
