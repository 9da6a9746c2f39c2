//! Pins: what containerd must show of a name airlift provides, and the one place that makes it
//! so. For every name, the daemon knows which present archive provides it (the winner, when
//! several do); [`decide`] compares that with the image record containerd holds and says what
//! to change: recreate a deleted record, re-point one someone re-tagged, restore stripped pins,
//! relabel it with its winner — or, when no present archive provides the name any more, unpin
//! it. An image of a present archive never loses its pin, and an image that names no archive of
//! airlift's is never touched.

use crate::containerd::{Containerd, ContainerdError, ImageRecord, ImageTarget, Labels};
use crate::labels;
use std::path::{Path, PathBuf};

/// What containerd should show of a name: the winning archive's target, with its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The archive the name comes from.
    pub archive: PathBuf,
    /// Its target.
    pub target: ImageTarget,
    /// The labels the image gets from that archive (pins and the archive label among them).
    pub labels: Labels,
}

/// Why an image record is written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Why {
    /// It was deleted.
    Deleted,
    /// It points at another target (someone re-tagged the name, or its winner changed).
    Repointed,
    /// A pin label is missing.
    Unpinned,
    /// Another of its labels is missing or different (the archive it names, say).
    Relabelled,
}

impl Why {
    /// The name in logs and metrics (`airlift_repairs_total{what}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Deleted => "deleted",
            Why::Repointed => "repointed",
            Why::Unpinned => "unpinned",
            Why::Relabelled => "relabelled",
        }
    }
}

/// What to do with one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing: it is as it should be, or none of airlift's business.
    Leave,
    /// Write the desired record.
    Put(Why),
    /// Nobody provides it any more: its pins and archive label go.
    Unpin,
}

/// What to do with `actual` (as containerd holds it, if it does) given what should be.
/// `released`, when an archive has just gone, lets its images be unpinned even if the record
/// naming them is already gone; images that name any other archive are left to their own.
pub fn decide(
    actual: Option<&ImageRecord>,
    desired: Option<&Desired>,
    released: Option<&Path>,
) -> Change {
    match (actual, desired) {
        (None, None) => Change::Leave,
        (None, Some(_)) => Change::Put(Why::Deleted),
        (Some(have), Some(want)) => {
            if have.digest != want.target.digest {
                return Change::Put(Why::Repointed);
            }
            let differs = |k: &str| have.labels.get(k) != want.labels.get(k);
            let pins = [labels::CRI_PINNED, labels::PINNED];
            if pins
                .iter()
                .any(|k| want.labels.contains_key(*k) && differs(k))
            {
                Change::Put(Why::Unpinned)
            } else if want.labels.keys().any(|k| differs(k)) {
                Change::Put(Why::Relabelled)
            } else {
                Change::Leave
            }
        }
        (Some(have), None) => {
            let named = have
                .labels
                .get(labels::ARCHIVE)
                .and_then(|l| crate::escape::unescape(l));
            if named.is_some() && named.as_deref() == released {
                Change::Unpin
            } else {
                Change::Leave
            }
        }
    }
}

/// Carries out `change` for `name`; `actual` is the record it was decided on.
pub async fn apply(
    client: &dyn Containerd,
    name: &str,
    actual: Option<&ImageRecord>,
    desired: Option<&Desired>,
    change: &Change,
) -> Result<(), ContainerdError> {
    match (change, desired, actual) {
        (Change::Put(_), Some(want), _) => client.put_image(&want.target, &want.labels).await,
        (Change::Unpin, _, Some(have)) => {
            client.set_image_labels(have, &labels::unpin()).await?;
            tracing::info!(image = %name, "unpinned: no archive provides it any more");
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    fn desired(archive: &str, digest: &str) -> Desired {
        Desired {
            archive: archive.into(),
            target: ImageTarget {
                name: "x:1".into(),
                media_type: "m".into(),
                digest: digest.into(),
                size: 1,
                annotations: BTreeMap::new(),
            },
            labels: labels::image_labels(true, Some(Path::new(archive)), &BTreeMap::new()),
        }
    }

    fn actual(digest: &str, labels: &BTreeMap<String, String>) -> ImageRecord {
        ImageRecord {
            name: "x:1".into(),
            media_type: "m".into(),
            digest: digest.into(),
            size: 1,
            labels: labels.clone().into_iter().collect::<HashMap<_, _>>(),
        }
    }

    #[test]
    fn decisions_follow_what_should_be() {
        let want = desired("/a.tar", "sha256:aa");
        let good = actual("sha256:aa", &want.labels);
        assert_eq!(decide(Some(&good), Some(&want), None), Change::Leave);
        assert_eq!(decide(None, Some(&want), None), Change::Put(Why::Deleted));
        let retagged = actual("sha256:bb", &want.labels);
        assert_eq!(
            decide(Some(&retagged), Some(&want), None),
            Change::Put(Why::Repointed)
        );
        let mut stripped = want.labels.clone();
        stripped.remove(labels::CRI_PINNED);
        assert_eq!(
            decide(Some(&actual("sha256:aa", &stripped)), Some(&want), None),
            Change::Put(Why::Unpinned)
        );
        // Named after another archive (its winner changed): relabelled, pins kept.
        let other = desired("/b.tar", "sha256:aa");
        assert_eq!(
            decide(Some(&actual("sha256:aa", &other.labels)), Some(&want), None),
            Change::Put(Why::Relabelled)
        );
        // Extra labels someone added are kept (not a reason to write).
        let mut extra = want.labels.clone();
        extra.insert("io.cattle.k3s.pinned".into(), "pinned".into());
        assert_eq!(
            decide(Some(&actual("sha256:aa", &extra)), Some(&want), None),
            Change::Leave
        );
    }

    #[test]
    fn only_images_of_the_archive_that_went_are_unpinned() {
        let a = desired("/a.tar", "sha256:aa");
        let img = actual("sha256:aa", &a.labels);
        assert_eq!(
            decide(Some(&img), None, Some(Path::new("/a.tar"))),
            Change::Unpin
        );
        assert_eq!(
            decide(Some(&img), None, Some(Path::new("/b.tar"))),
            Change::Leave
        );
        assert_eq!(decide(Some(&img), None, None), Change::Leave);
        let foreign = actual("sha256:aa", &BTreeMap::new());
        assert_eq!(
            decide(Some(&foreign), None, Some(Path::new("/a.tar"))),
            Change::Leave
        );
        assert_eq!(decide(None, None, Some(Path::new("/a.tar"))), Change::Leave);
    }

    #[tokio::test]
    async fn applying_writes_the_winner_or_takes_the_pins_off() {
        let fake = crate::testkit::fake::Fake::new();
        let c = fake.client();
        let want = desired("/a.tar", "sha256:aa");
        apply(
            c.as_ref(),
            "x:1",
            None,
            Some(&want),
            &Change::Put(Why::Deleted),
        )
        .await
        .unwrap();
        let img = fake.image("x:1").unwrap();
        assert_eq!(img.labels[labels::ARCHIVE], "/a.tar");
        apply(c.as_ref(), "x:1", Some(&img), None, &Change::Unpin)
            .await
            .unwrap();
        let img = fake.image("x:1").unwrap();
        assert!(!img.labels.contains_key(labels::CRI_PINNED));
        assert!(!img.labels.contains_key(labels::ARCHIVE));
        assert_eq!(img.digest, "sha256:aa", "unpinning keeps the target");
    }
}
