//! Visibility: what others see of an image in containerd — a Spegel-style walk of its content
//! (every blob present, each with the `containerd.io/distribution.source.<registry>` label
//! naming its repository, without which a peer cannot advertise it) and kubelet's view through
//! CRI (present, pinned, with a repo digest). `airlift verify` reports both; the tests that
//! prove imports shareable use the walk. Served platforms (`serve_platforms`) are walked like
//! the rest, and asked for ([`walk_serving`]), the manifest a node of each would pull must be
//! there.

use crate::archive::understand::PlanOptions;
use crate::containerd::{Containerd, ImageRecord};
use crate::digest::Digest;
use crate::oci::{self, ImageConfig, Index, Manifest};
use crate::platform::{Platform, PlatformPolicy};
use crate::reference::Reference;
use std::collections::BTreeSet;

/// The largest manifest or index read.
const MAX_DOCUMENT: u64 = 4 << 20;

/// Indexes followed below an image at most.
const MAX_DEPTH: usize = 8;

/// What a Spegel-style walk of `image` finds wrong (nothing: a peer can serve all of it). An
/// index's manifests that are absent are platforms not imported, as for containerd; every blob
/// of a manifest that is there must be.
pub async fn walk(client: &dyn Containerd, image: &ImageRecord) -> Vec<String> {
    walk_serving(client, image, &PlatformPolicy::Only(Vec::new()))
        .await
        .problems
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walked {
    /// What is wrong (nothing: a peer can serve all of it).
    pub problems: Vec<String>,
    /// The platforms of the manifests present (by their index entry, else their config).
    pub platforms: Vec<Platform>,
}

impl Walked {
    /// Whether a manifest this host runs is present (or no manifest names a platform): what
    /// CRI needs to list the image. An image of other platforms alone is held to serve them.
    pub fn runs_here(&self) -> bool {
        self.platforms.is_empty()
            || self
                .platforms
                .iter()
                .any(|p| PlatformPolicy::Host.matches(p))
    }
}

/// [`walk`], where of every index the manifest a node of each `serve` platform would pull (see
/// [`PlanOptions::select`]) must be present too; it also tells the platforms present.
pub async fn walk_serving(
    client: &dyn Containerd,
    image: &ImageRecord,
    serve: &PlatformPolicy,
) -> Walked {
    let mut walked = Walked::default();
    let problems = &mut walked.problems;
    let reference = match Reference::parse_normalized(&image.name) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("its name is not a reference: {e}"));
            return walked;
        }
    };
    let key = format!("containerd.io/distribution.source.{}", reference.domain());
    let Ok(target) = image.digest.parse::<Digest>() else {
        problems.push(format!("its target digest {:?} is not valid", image.digest));
        return walked;
    };
    // Of an index, the children a node of a served platform would pull.
    let serving = PlanOptions {
        platforms: PlatformPolicy::Only(Vec::new()),
        serve: serve.clone(),
        ..PlanOptions::default()
    };
    let mut todo: Vec<(Digest, String, usize, bool, Option<Platform>)> =
        vec![(target, image.media_type.clone(), 0usize, false, None)];
    let mut seen = BTreeSet::new();
    while let Some((digest, media_type, depth, optional, platform)) = todo.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let info = match client.info(&digest).await {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("blob {digest}: {e}"));
                continue;
            }
        };
        let Some(info) = info else {
            match (&platform, optional) {
                (Some(p), false) if oci::is_manifest(&media_type) => problems.push(format!(
                    "blob {digest} (the {p} manifest, a served platform) is missing: nodes of {p} cannot pull it from here"
                )),
                (_, false) => problems.push(format!("blob {digest} ({media_type}) is missing")),
                _ => {}
            }
            continue;
        };
        let sourced = info
            .labels
            .get(&key)
            .is_some_and(|v| v.split(',').any(|repo| repo == reference.path()));
        if !sourced {
            problems.push(format!(
                "blob {digest} has no {key} label naming {}",
                reference.path()
            ));
        }
        let is_index = oci::is_index(&media_type);
        if !is_index && !oci::is_manifest(&media_type) {
            continue;
        }
        if depth >= MAX_DEPTH || info.size > MAX_DOCUMENT {
            problems.push(format!("blob {digest}: too deep or too large to walk"));
            continue;
        }
        let data = match client.read(&digest, 0, info.size).await {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("blob {digest}: {e}"));
                continue;
            }
        };
        if is_index {
            match serde_json::from_slice::<Index>(&data) {
                Ok(index) => {
                    let served = serving.select(&index.manifests);
                    for m in index.manifests {
                        let required = served.iter().any(|(c, s)| *s && *c == m);
                        let platform = m.platform.clone().map(Platform::normalized);
                        todo.push((m.digest, m.media_type, depth + 1, !required, platform));
                    }
                }
                Err(e) => problems.push(format!("index {digest}: {e}")),
            }
        } else {
            match serde_json::from_slice::<Manifest>(&data) {
                Ok(manifest) => {
                    let platform = match platform {
                        Some(p) => Some(p),
                        None => config_platform(client, &manifest.config.digest).await,
                    };
                    walked.platforms.extend(platform);
                    for d in std::iter::once(manifest.config).chain(manifest.layers) {
                        // Foreign layers carry URLs instead of content.
                        let optional = d.media_type.contains("foreign")
                            || d.media_type.contains("nondistributable");
                        todo.push((d.digest, d.media_type, depth + 1, optional, None));
                    }
                }
                Err(e) => problems.push(format!("manifest {digest}: {e}")),
            }
        }
    }
    walked
}

/// The platform a config names, when it is readable and names one.
async fn config_platform(client: &dyn Containerd, config: &Digest) -> Option<Platform> {
    let info = client.info(config).await.ok()??;
    if info.size > MAX_DOCUMENT {
        return None;
    }
    let data = client.read(config, 0, info.size).await.ok()?;
    let c: ImageConfig = serde_json::from_slice(&data).ok()?;
    (!c.platform.os.is_empty()).then(|| c.platform.normalized())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::fake::Fake;
    use std::collections::HashMap;

    fn record(name: &str, digest: &Digest, media_type: &str) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            media_type: media_type.into(),
            digest: digest.to_string(),
            size: 1,
            labels: HashMap::new(),
        }
    }

    #[tokio::test]
    async fn every_blob_present_and_sourced() {
        let fake = Fake::new();
        let source = [("containerd.io/distribution.source.docker.io", "library/x")];
        let config = fake.add_blob(b"{\"os\":\"linux\"}", &source);
        let layer = fake.add_blob(b"layer", &[]);
        let manifest = format!(
            "{{\"schemaVersion\":2,\"config\":{{\"mediaType\":\"{}\",\"digest\":\"{config}\",\"size\":14}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{layer}\",\"size\":5}}]}}",
            oci::MEDIA_OCI_CONFIG
        );
        let m = fake.add_blob(manifest.as_bytes(), &source);
        let absent = Digest::of(b"another platform");
        let index = format!(
            "{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"{0}\",\"digest\":\"{m}\",\"size\":{1}}},{{\"mediaType\":\"{0}\",\"digest\":\"{absent}\",\"size\":3}}]}}",
            oci::MEDIA_OCI_MANIFEST,
            manifest.len()
        );
        let i = fake.add_blob(index.as_bytes(), &source);
        let c = fake.client();
        let image = record("docker.io/library/x:1", &i, oci::MEDIA_OCI_INDEX);
        // The layer lacks its label; the other platform's manifest is absent, which is fine.
        let problems = walk(c.as_ref(), &image).await;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains(&layer.to_string()), "{problems:?}");
        fake.state().blobs.get_mut(&layer).unwrap().labels.insert(
            "containerd.io/distribution.source.docker.io".into(),
            "library/other,library/x".into(),
        );
        assert_eq!(walk(c.as_ref(), &image).await, Vec::<String>::new());
        // Under another name (another repository), the labels do not name it.
        let other = record("quay.io/y/z:1", &i, oci::MEDIA_OCI_INDEX);
        assert_eq!(walk(c.as_ref(), &other).await.len(), 4);
        // Serving the other platform, its absent manifest is a problem naming it.
        let arm64 = PlatformPolicy::parse_served(&["linux/arm64"]).unwrap();
        let mut index: serde_json::Value = serde_json::from_str(&index).unwrap();
        index["manifests"][0]["platform"] =
            serde_json::json!({"os": "linux", "architecture": "s390x"});
        index["manifests"][1]["platform"] =
            serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
        let with_platforms = fake.add_blob(index.to_string().as_bytes(), &source);
        let image = record(
            "docker.io/library/x:1",
            &with_platforms,
            oci::MEDIA_OCI_INDEX,
        );
        let walked = walk_serving(c.as_ref(), &image, &arm64).await;
        assert_eq!(walked.problems.len(), 1, "{:?}", walked.problems);
        assert!(
            walked.problems[0].contains(&absent.to_string())
                && walked.problems[0].contains("linux/arm64"),
            "{:?}",
            walked.problems
        );
        // What is present is s390x alone: not this node's platform, so held only to serve.
        assert_eq!(walked.platforms, [Platform::new("linux", "s390x", "")]);
        assert_eq!(walked.runs_here(), Platform::host().architecture == "s390x");
        let none = walk_serving(
            c.as_ref(),
            &image,
            &PlatformPolicy::parse_served::<&str>(&[]).unwrap(),
        )
        .await;
        assert!(none.problems.is_empty(), "{:?}", none.problems);
        // A missing layer of a present manifest is a problem.
        fake.state().blobs.remove(&layer);
        let problems = walk(c.as_ref(), &image).await;
        assert!(
            problems.iter().any(|p| p.contains("is missing")),
            "{problems:?}"
        );
    }
}
