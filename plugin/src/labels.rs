//! The names airlift writes into containerd: the labels of the images it imports and the ids of
//! the leases that hold their content. Everything that reads or writes them uses these.

use crate::digest::Digest;
use std::collections::BTreeMap;
use std::path::Path;

/// The label airlift sets on images it pins.
pub const PINNED: &str = "airlift.io/pinned";
/// The label naming the archive an image came from (and, on leases, the archive they hold).
pub const ARCHIVE: &str = "airlift.io/archive";
/// The label on a signature's image record (a `.sig` manifest's, or a referrers-tag index's)
/// naming the image target it signs, `sha256:<hex>`.
pub const SUBJECT: &str = crate::archive::understand::attached::SUBJECT_LABEL;
/// The CRI plugin's pin label, respected by kubelet's image garbage collection.
pub const CRI_PINNED: &str = "io.cri-containerd.pinned";
/// The CRI plugin's label marking images it manages.
pub const CRI_MANAGED: &str = "io.cri-containerd.image";

/// Prefix of the per-archive leases.
pub const ARCHIVE_LEASE_PREFIX: &str = "airlift-archive-";
/// Prefix of the temporary lease of one running import.
pub const IMPORT_LEASE_PREFIX: &str = "airlift-import-";

/// The archive lease id for an archive path: stable, so a re-import replaces it.
pub fn archive_lease(path: &Path) -> String {
    let d = Digest::of(path.as_os_str().as_encoded_bytes());
    format!("{ARCHIVE_LEASE_PREFIX}{}", &d.hex()[..32])
}

/// The labels an image record gets: CRI's managed label, the pins (when `pin`), the archive it
/// came from (for a file) and the extra labels.
pub fn image_labels(
    pin: bool,
    archive: Option<&Path>,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(CRI_MANAGED.to_string(), "managed".to_string());
    if pin {
        labels.insert(CRI_PINNED.to_string(), "pinned".to_string());
        labels.insert(PINNED.to_string(), "true".to_string());
    }
    if let Some(path) = archive {
        labels.insert(ARCHIVE.to_string(), crate::escape::shown(&path).to_string());
    }
    labels.extend(extra.clone());
    labels
}

/// Whether an image record's labels say airlift put it there (it pins it, or an archive of its
/// provides it): the images the registry endpoint serves by default. Whatever else airlift
/// comes to create images with must carry one of these labels too.
pub fn managed_by_airlift(labels: &std::collections::HashMap<String, String>) -> bool {
    labels.contains_key(PINNED) || labels.contains_key(ARCHIVE)
}

/// The label changes that unpin an image (and clear the archive it came from).
pub fn unpin() -> BTreeMap<String, Option<String>> {
    BTreeMap::from([
        (CRI_PINNED.to_string(), None),
        (PINNED.to_string(), None),
        (ARCHIVE.to_string(), None),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_stable_per_path_and_labels_follow_the_options() {
        let a = archive_lease(Path::new("/images/a.tar"));
        assert_eq!(a, archive_lease(Path::new("/images/a.tar")));
        assert_ne!(a, archive_lease(Path::new("/images/b.tar")));
        assert!(a.starts_with(ARCHIVE_LEASE_PREFIX) && a.len() == ARCHIVE_LEASE_PREFIX.len() + 32);
        let extra = BTreeMap::from([("team".to_string(), "edge".to_string())]);
        let l = image_labels(true, Some(Path::new("/images/a.tar")), &extra);
        assert_eq!(l[CRI_PINNED], "pinned");
        assert_eq!(l[PINNED], "true");
        assert_eq!(l[ARCHIVE], "/images/a.tar");
        assert_eq!(l["team"], "edge");
        let l = image_labels(false, None, &BTreeMap::new());
        assert_eq!(l.len(), 1, "{l:?}");
    }
}
