//! Signatures for a docker-save archive, which cannot carry them: the file `<archive>.sigs`
//! beside it, an OCI layout (tar, compressed or not) holding each image's registry manifest —
//! the one cosign signed — with its `sha256-<hex>.sig` manifest and referrers, as
//! `skopeo copy --preserve-digests` or `cosign save` write them.
//!
//! docker save keeps an image's config and its uncompressed layers, not the registry manifest,
//! so the manifest airlift records has another digest than the one signed. The chain is checked
//! link by link instead: the signature covers the registry manifest; that manifest names the
//! config by digest, which is the config the archive holds (its file is checked against its
//! digest on the way in); the config lists the layers' diff IDs, which are the digests of the
//! archive's uncompressed layer tars. The image is then judged as the registry manifest (its
//! digest, its signatures). The sidecar is read at import, never imported itself: the daemon
//! takes no `.sigs` file for an archive.

use crate::archive::understand::{self, Inventory, Plan, PlanOptions};
use crate::digest::Digest;
use crate::ingest::{self, Counters, CountingReader};
use crate::oci::{Descriptor, Manifest};
use crate::store::ContentStore;
use crate::verify::gate::SignedAs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The suffix of a docker-save archive's signatures file.
pub const SUFFIX: &str = ".sigs";

/// The sidecar of `archive`, when there is one.
pub fn path_of(archive: &Path) -> Option<PathBuf> {
    let mut p = archive.as_os_str().to_os_string();
    p.push(SUFFIX);
    let p = PathBuf::from(p);
    p.is_file().then_some(p)
}

/// Reads the sidecar at `path` (blocking): its small documents stay in memory, nothing is
/// written to `store` unless it holds large blobs, which nothing then holds.
pub fn read(path: &Path, store: &dyn ContentStore, scratch: &Path) -> Result<Inventory, String> {
    let shown = crate::escape::shown(&path).to_string();
    let file = crate::sys::open_archive(path, false).map_err(|e| format!("{shown}: {e}"))?;
    let mut counters = Counters::default();
    let input = CountingReader::new(file, Arc::new(AtomicU64::new(0)));
    ingest::ingest_observed(input, store, scratch, &mut counters, &ingest::Unobserved)
        .map_err(|e| format!("{shown}: {e}"))
}

/// Matches the sidecar's manifests to the docker-save images of `plan`: by target digest of the
/// image recorded, the registry manifest signed for it.
pub fn matched(inv: &Inventory, plan: &Plan) -> Result<BTreeMap<Digest, SignedAs>, String> {
    let side = understand::plan(inv, &PlanOptions::default()).map_err(|e| e.to_string())?;
    let attachments = Arc::new(side.attachments);
    // Every manifest of the sidecar, by the config it names.
    let mut by_config: BTreeMap<Digest, Descriptor> = BTreeMap::new();
    for (digest, bytes) in &inv.json {
        if let Ok(m) = serde_json::from_slice::<Manifest>(bytes) {
            if m.subject.is_none() && !m.layers.is_empty() {
                let media_type = serde_json::from_slice::<serde_json::Value>(bytes)
                    .ok()
                    .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                    .unwrap_or_else(|| crate::oci::MEDIA_OCI_MANIFEST.to_string());
                by_config.insert(
                    m.config.digest.clone(),
                    Descriptor::new(&media_type, digest.clone(), bytes.len() as u64),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    for image in plan.images.iter().filter(|i| i.subject.is_none()) {
        let [only] = image.manifests.as_slice() else {
            continue;
        };
        let Some(m) = plan.manifests.get(only) else {
            continue;
        };
        // The config's diff IDs are the archive's layer tars: the link from config to content.
        let layers: Vec<&Digest> = m.layers.iter().map(|l| &l.digest).collect();
        match &m.diff_ids {
            Ok(ids) if ids.iter().collect::<Vec<_>>() == layers => {}
            _ => continue,
        }
        if let Some(manifest) = by_config.get(&m.config.digest) {
            out.insert(
                image.target.digest.clone(),
                SignedAs {
                    manifest: manifest.clone(),
                    attachments: attachments.clone(),
                },
            );
        }
    }
    Ok(out)
}
