//! Visibility: what others see of an image in containerd — a Spegel-style walk of its content
//! (every blob present, each with the `containerd.io/distribution.source.<registry>` label
//! naming its repository, without which a peer cannot advertise it) and kubelet's view through
//! CRI (present, pinned, with a repo digest). `airlift verify` reports both; the tests that
//! prove imports shareable use the walk.

use crate::containerd::{Containerd, ImageRecord};
use crate::digest::Digest;
use crate::oci::{self, Index, Manifest};
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
    let mut problems = Vec::new();
    let reference = match Reference::parse_normalized(&image.name) {
        Ok(r) => r,
        Err(e) => return vec![format!("its name is not a reference: {e}")],
    };
    let key = format!("containerd.io/distribution.source.{}", reference.domain());
    let Ok(target) = image.digest.parse::<Digest>() else {
        return vec![format!("its target digest {:?} is not valid", image.digest)];
    };
    let mut todo = vec![(target, image.media_type.clone(), 0usize, false)];
    let mut seen = BTreeSet::new();
    while let Some((digest, media_type, depth, optional)) = todo.pop() {
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
            if !optional {
                problems.push(format!("blob {digest} ({media_type}) is missing"));
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
                    for m in index.manifests {
                        todo.push((m.digest, m.media_type, depth + 1, true));
                    }
                }
                Err(e) => problems.push(format!("index {digest}: {e}")),
            }
        } else {
            match serde_json::from_slice::<Manifest>(&data) {
                Ok(manifest) => {
                    for d in std::iter::once(manifest.config).chain(manifest.layers) {
                        // Foreign layers carry URLs instead of content.
                        let optional = d.media_type.contains("foreign")
                            || d.media_type.contains("nondistributable");
                        todo.push((d.digest, d.media_type, depth + 1, optional));
                    }
                }
                Err(e) => problems.push(format!("manifest {digest}: {e}")),
            }
        }
    }
    problems
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
        // A missing layer of a present manifest is a problem.
        fake.state().blobs.remove(&layer);
        let problems = walk(c.as_ref(), &image).await;
        assert!(
            problems.iter().any(|p| p.contains("is missing")),
            "{problems:?}"
        );
    }
}
