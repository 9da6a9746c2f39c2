//! What to unpack: the image manifests of the selected platforms ([`Target`]s), and the layer
//! chains they need as one graph in which every chain appears once ([`graph`]), however many
//! images share it. Nothing here talks to containerd.
//!
//! Targets come from two places. The archive's [`Plan`] is the authority: its manifests, of the
//! platforms unpacking selects (by the config's platform, as containerd's unpacker matches).
//! Before the plan exists — while the archive is still read — [`Early`] makes what it can of the
//! documents read so far: a config names its platform and its layers' diff IDs, and a layer
//! whose blob *is* its diff ID (an uncompressed layer, as `docker save` writes them) can be
//! applied as soon as that blob is stored; an OCI manifest read early also names its compressed
//! layers.

use super::UnpackError;
use crate::archive::understand::Plan;
use crate::containerd::Descriptor;
use crate::digest::Digest;
use crate::oci::{self, ChainError, Descriptor as SpecDescriptor, ImageConfig, Manifest};
use crate::platform::{Platform, PlatformPolicy};
use std::collections::{BTreeMap, HashMap};

/// The platforms unpacking selects for an import of `import`'s platforms: the same, but every
/// platform means the host's (an image the host cannot run is not worth unpacking).
pub fn policy(import: &PlatformPolicy) -> PlatformPolicy {
    match import {
        PlatformPolicy::All => PlatformPolicy::Host,
        other => other.clone(),
    }
}

/// One image manifest to unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The manifest.
    pub manifest: Digest,
    /// Its config, which gets the `containerd.io/gc.ref.snapshot.<snapshotter>` label.
    pub config: Digest,
    /// The layers' diff IDs, base first.
    pub diff_ids: Vec<Digest>,
    /// The layer blobs, by position; `None` while not known (before the plan).
    pub blobs: Vec<Option<Descriptor>>,
}

impl Target {
    /// The chain ID of each layer.
    pub fn chains(&self) -> Vec<Digest> {
        super::chain::chain_ids(&self.diff_ids)
    }

    /// The chain ID of the whole image (`None` without layers).
    pub fn top(&self) -> Option<Digest> {
        super::chain::top(&self.diff_ids)
    }
}

/// The descriptor the differ is handed for a layer of the archive.
pub fn layer(d: &SpecDescriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d.annotations.clone(),
    }
}

/// The targets of a plan: its manifests whose config's platform `policy` selects. Manifests that
/// are selected but cannot be unpacked come back as errors, by manifest digest.
pub fn from_plan(
    plan: &Plan,
    policy: &PlatformPolicy,
) -> (Vec<Target>, Vec<(Digest, UnpackError)>) {
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    for (digest, m) in &plan.manifests {
        // A manifest kept only to serve another platform is never unpacked.
        if m.served || !m.platform.as_ref().is_some_and(|p| policy.matches(p)) {
            continue;
        }
        match target(digest, &m.config.digest, &m.layers, &m.diff_ids) {
            Ok(t) => targets.push(t),
            Err(e) => errors.push((digest.clone(), e)),
        }
    }
    (targets, errors)
}

/// The target of one manifest, checking that its config and layers agree.
pub fn target(
    manifest: &Digest,
    config: &Digest,
    layers: &[SpecDescriptor],
    diff_ids: &Result<Vec<Digest>, ChainError>,
) -> Result<Target, UnpackError> {
    let diff_ids = diff_ids.clone()?;
    if diff_ids.len() != layers.len() {
        return Err(UnpackError::LayerCount {
            layers: layers.len(),
            config: config.clone(),
            diff_ids: diff_ids.len(),
        });
    }
    if let Some(l) = layers.iter().find(|l| !oci::is_layer(&l.media_type)) {
        return Err(UnpackError::NotALayer {
            digest: l.digest.clone(),
            media_type: l.media_type.clone(),
        });
    }
    Ok(Target {
        manifest: manifest.clone(),
        config: config.clone(),
        diff_ids,
        blobs: layers.iter().map(|l| Some(layer(l))).collect(),
    })
}

/// One layer chain to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its chain ID: the name of the committed snapshot.
    pub chain: Digest,
    /// The chain below, if any.
    pub parent: Option<Digest>,
    /// The diff ID of its top layer.
    pub diff_id: Digest,
    /// The blob of its top layer, when known.
    pub blob: Option<Descriptor>,
}

/// Every chain the targets need, once each: chains shared by several images (a common base)
/// appear once, with the first blob known for their top layer.
pub fn graph(targets: &[Target]) -> BTreeMap<Digest, Node> {
    let mut nodes: BTreeMap<Digest, Node> = BTreeMap::new();
    for t in targets {
        let chains = t.chains();
        for (i, chain) in chains.iter().enumerate() {
            let blob = t.blobs.get(i).cloned().flatten();
            let node = nodes.entry(chain.clone()).or_insert_with(|| Node {
                chain: chain.clone(),
                parent: i.checked_sub(1).map(|p| chains[p].clone()),
                diff_id: t.diff_ids[i].clone(),
                blob: None,
            });
            if node.blob.is_none() {
                node.blob = blob;
            }
        }
    }
    nodes
}

/// What a config document says, for unpacking.
#[derive(Debug, Clone)]
struct ConfigDoc {
    platform: Option<Platform>,
    diff_ids: Vec<Digest>,
}

/// What the documents read so far tell, before the plan exists.
#[derive(Debug, Default)]
pub struct Early {
    /// Configs with a layer chain, by digest.
    configs: HashMap<Digest, ConfigDoc>,
    /// Manifests by the config they name: (manifest digest, layers).
    manifests: HashMap<Digest, (Digest, Vec<SpecDescriptor>)>,
}

impl Early {
    /// Takes in one JSON document of the archive: a manifest or a config (anything else, an
    /// index, is of no use yet).
    pub fn document(&mut self, digest: &Digest, json: &[u8]) {
        if let Ok(m) = serde_json::from_slice::<Manifest>(json) {
            self.manifests
                .insert(m.config.digest.clone(), (digest.clone(), m.layers));
            return;
        }
        let Ok(config) = serde_json::from_slice::<ImageConfig>(json) else {
            return;
        };
        if config.rootfs.is_none() {
            return;
        }
        let Ok(diff_ids) = oci::layer_chain(&config) else {
            return;
        };
        let platform = (!config.platform.os.is_empty() || !config.platform.architecture.is_empty())
            .then(|| config.platform.clone().normalized());
        self.configs
            .insert(digest.clone(), ConfigDoc { platform, diff_ids });
    }

    /// The targets known so far whose platform `policy` selects, with the layer blobs known: a
    /// manifest's layers, or else, for a layer whose blob `stored` has under its diff ID, that
    /// uncompressed blob.
    pub fn targets(&self, policy: &PlatformPolicy, stored: &HashMap<Digest, u64>) -> Vec<Target> {
        let mut out = Vec::new();
        for (config, doc) in &self.configs {
            if doc.diff_ids.is_empty() || !doc.platform.as_ref().is_some_and(|p| policy.matches(p))
            {
                continue;
            }
            let manifest = self.manifests.get(config);
            let blobs = match manifest {
                Some((_, layers)) if layers.len() == doc.diff_ids.len() => {
                    layers.iter().map(|l| Some(layer(l))).collect()
                }
                Some(_) => continue,
                None => doc
                    .diff_ids
                    .iter()
                    .map(|d| {
                        stored.get(d).map(|size| Descriptor {
                            media_type: oci::MEDIA_DOCKER_LAYER.to_string(),
                            digest: d.clone(),
                            size: *size as i64,
                            annotations: BTreeMap::new(),
                        })
                    })
                    .collect(),
            };
            out.push(Target {
                manifest: manifest.map_or_else(|| config.clone(), |(m, _)| m.clone()),
                config: config.clone(),
                diff_ids: doc.diff_ids.clone(),
                blobs,
            });
        }
        out.sort_by(|a, b| a.config.cmp(&b.config));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::understand::{self, Inventory, PlanOptions};

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn config_json(arch: &str, diff_ids: &[Digest]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "rootfs": {
                "type": "layers",
                "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            },
        }))
        .unwrap()
    }

    fn target(config: &str, layers: &[&str]) -> Target {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| d(l)).collect();
        Target {
            manifest: d(&format!("m-{config}")),
            config: d(config),
            blobs: diff_ids
                .iter()
                .map(|x| {
                    Some(Descriptor {
                        media_type: oci::MEDIA_DOCKER_LAYER.into(),
                        digest: x.clone(),
                        size: 1,
                        annotations: BTreeMap::new(),
                    })
                })
                .collect(),
            diff_ids,
        }
    }

    #[test]
    fn a_shared_base_is_one_chain() {
        let a = target("a", &["base", "app-a", "top-a"]);
        let b = target("b", &["base", "app-b"]);
        let c = target("c", &["base", "app-a", "top-c"]);
        let g = graph(&[a.clone(), b.clone(), c.clone()]);
        // base, base+app-a, base+app-a+top-a, base+app-b, base+app-a+top-c.
        assert_eq!(g.len(), 5);
        let base = &g[&d("base")];
        assert_eq!(base.parent, None);
        let ca = a.chains();
        let cb = b.chains();
        assert_eq!(g[&cb[1]].parent.as_ref(), Some(&ca[0]));
        assert_eq!(g[&c.chains()[2]].parent.as_ref(), Some(&ca[1]));
        assert_eq!(g[&ca[2]].diff_id, d("top-a"));
        // The same layers in another order are another chain.
        let swapped = target("s", &["app-a", "base"]);
        assert!(!graph(&[swapped]).contains_key(&ca[1]));
    }

    #[test]
    fn a_chain_takes_the_first_blob_known_for_it() {
        let mut early = target("a", &["base"]);
        early.blobs = vec![None];
        let late = target("b", &["base"]);
        let g = graph(&[early.clone(), late.clone()]);
        assert_eq!(g[&d("base")].blob, late.blobs[0]);
        assert_eq!(graph(&[early])[&d("base")].blob, None);
    }

    /// A docker-save archive's inventory: two images of different architectures sharing a base.
    fn two_arch_inventory() -> (Inventory, Digest, Digest) {
        let mut inv = Inventory::default();
        let (base, amd, arm) = (
            b"base layer".to_vec(),
            b"amd64 app".to_vec(),
            b"arm64 app".to_vec(),
        );
        for (name, data) in [("base", &base), ("amd", &amd), ("arm", &arm)] {
            inv.files.insert(
                format!("{name}/layer.tar"),
                understand::FileRecord {
                    digest: Ok(Digest::of(data)),
                    size: data.len() as u64,
                    head: Vec::new(),
                },
            );
        }
        let mut manifest = Vec::new();
        for (arch, app) in [("amd64", &amd), ("arm64", &arm)] {
            let cfg = config_json(arch, &[Digest::of(&base), Digest::of(app)]);
            let cd = Digest::of(&cfg);
            inv.files.insert(
                format!("{}.json", cd.hex()),
                understand::FileRecord {
                    digest: Ok(cd.clone()),
                    size: cfg.len() as u64,
                    head: cfg.clone(),
                },
            );
            inv.json.insert(cd.clone(), cfg);
            let name = if arch == "amd64" { "amd" } else { "arm" };
            manifest.push(serde_json::json!({
                "Config": format!("{}.json", cd.hex()),
                "RepoTags": [format!("example.com/app:{arch}")],
                "Layers": ["base/layer.tar", format!("{name}/layer.tar")],
            }));
        }
        inv.manifest_json = Some(serde_json::to_vec(&manifest).unwrap());
        (inv, Digest::of(&base), Digest::of(&amd))
    }

    #[test]
    fn only_the_selected_platforms_are_targets() {
        let (inv, base, amd) = two_arch_inventory();
        let plan = understand::plan(
            &inv,
            &PlanOptions {
                platforms: PlatformPolicy::All,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(plan.images.len(), 2);
        let amd64 = PlatformPolicy::Only(vec![Platform::new("linux", "amd64", "")]);
        let (targets, errors) = from_plan(&plan, &amd64);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].diff_ids, vec![base.clone(), amd.clone()]);
        assert_eq!(
            targets[0].blobs[1].as_ref().unwrap().media_type,
            oci::MEDIA_DOCKER_LAYER
        );
        let both = PlatformPolicy::Only(vec![
            Platform::new("linux", "amd64", ""),
            Platform::new("linux", "arm64", ""),
        ]);
        let (targets, _) = from_plan(&plan, &both);
        assert_eq!(targets.len(), 2);
        // Two images, three chains: the base once.
        assert_eq!(graph(&targets).len(), 3);
        // Importing every platform unpacks the host's only.
        assert_eq!(policy(&PlatformPolicy::All), PlatformPolicy::Host);
        assert_eq!(policy(&amd64), amd64);
    }

    #[test]
    fn a_config_that_disagrees_with_its_manifest_is_an_error() {
        let l = SpecDescriptor::new(oci::MEDIA_DOCKER_LAYER, d("l"), 1);
        let e = super::target(&d("m"), &d("c"), &[l.clone(), l.clone()], &Ok(vec![d("l")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 layers") && e.contains("1 diff IDs"), "{e}");
        let bad = ChainError::NotLayers("bad config".into());
        let e = super::target(&d("m"), &d("c"), &[l], &Err(bad.clone())).unwrap_err();
        assert!(matches!(&e, UnpackError::Chain(c) if *c == bad), "{e}");
        let odd = SpecDescriptor::new("application/json", d("l"), 1);
        let e = super::target(&d("m"), &d("c"), &[odd], &Ok(vec![d("l")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a layer"), "{e}");
    }

    #[test]
    fn early_configs_use_uncompressed_blobs_and_manifests_name_the_rest() {
        let (base, app) = (d("base"), d("app"));
        let mut early = Early::default();
        let cfg = config_json(&Platform::host().architecture, &[base.clone(), app.clone()]);
        early.document(&Digest::of(&cfg), &cfg);
        // An index or an unrelated document is no target.
        early.document(&d("index"), br#"{"schemaVersion":2,"manifests":[]}"#);
        let other = config_json("s390x", std::slice::from_ref(&base));
        early.document(&Digest::of(&other), &other);
        let host = PlatformPolicy::Host;
        let stored = HashMap::from([(base.clone(), 10u64)]);
        let t = early.targets(&host, &stored);
        assert_eq!(t.len(), 1, "only the host's config: {t:?}");
        assert_eq!(t[0].blobs[0].as_ref().map(|b| &b.digest), Some(&base));
        assert_eq!(t[0].blobs[1], None, "the app layer is not stored yet");
        // A manifest naming compressed layers for that config.
        let gz =
            |x: &str| SpecDescriptor::new("application/vnd.oci.image.layer.v1.tar+gzip", d(x), 5);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::MEDIA_OCI_MANIFEST,
            "config": SpecDescriptor::new(oci::MEDIA_OCI_CONFIG, Digest::of(&cfg), cfg.len() as u64),
            "layers": [gz("base.gz"), gz("app.gz")],
        });
        let mj = serde_json::to_vec(&manifest).unwrap();
        early.document(&Digest::of(&mj), &mj);
        let t = early.targets(&host, &stored);
        assert_eq!(t[0].manifest, Digest::of(&mj));
        assert_eq!(
            t[0].blobs[1].as_ref().map(|b| &b.digest),
            Some(&d("app.gz"))
        );
    }
}
