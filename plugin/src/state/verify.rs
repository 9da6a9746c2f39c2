//! Does a record still stand? The one answer for `airlift import`'s recall, the daemon's startup
//! and its repairs: every recorded image is there, points at its recorded target and carries the
//! labels it was given (pins among them), and the archive's lease exists. With repair, what
//! containerd lost is restored from the record — no archive byte read — as long as the content
//! is still there (the archive's lease holds it); otherwise the archive must be imported again.

use super::Record;
use crate::containerd::{Containerd, ContainerdError, ImageRecord};
use crate::labels;
use crate::pins::Why;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What containerd holds, read once for many records.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Every image of the namespace, by name.
    pub images: HashMap<String, ImageRecord>,
    /// The archive leases present.
    pub leases: BTreeSet<String>,
}

impl Snapshot {
    /// Reads every image and archive lease of the namespace.
    pub async fn take(client: &dyn Containerd) -> Result<Snapshot, ContainerdError> {
        let images = client
            .list_images(vec![])
            .await?
            .into_iter()
            .map(|i| (i.name.clone(), i))
            .collect();
        let leases = client
            .list_leases(&format!("id~=^{}", labels::ARCHIVE_LEASE_PREFIX))
            .await?
            .into_iter()
            .collect();
        Ok(Snapshot { images, leases })
    }
}

/// Whether to restore what is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Only look.
    No,
    /// Restore image records, labels and the lease from the record.
    Yes,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Everything is as recorded.
    Stands,
    /// Something was missing and has been restored (what, for the log, the report and the
    /// repair counts).
    Repaired(Vec<Fix>),
    /// Something is missing (not repaired: asked not to).
    Damaged(String),
    /// Content is gone (or a repair failed): the archive must be imported again.
    Gone(String),
}

/// One thing restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// What was wrong: `deleted`, `repointed`, `unpinned`, `relabelled` or `lease`.
    pub what: &'static str,
    /// What was wrong, in words (naming the image or lease).
    pub detail: String,
}

impl std::fmt::Display for Fix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl Standing {
    /// Whether the record stands now (as it was, or repaired).
    pub fn holds(&self) -> bool {
        matches!(self, Standing::Stands | Standing::Repaired(_))
    }
}

/// What is wrong with one recorded image in `snapshot`, if anything: `labels` are the labels
/// it was given (the archive label aside: a name several archives provide names its winner).
pub fn image_fault(
    want: &crate::containerd::ImageTarget,
    labels: &BTreeMap<String, String>,
    snapshot: &Snapshot,
) -> Option<Fix> {
    let fix = |why: Why, detail: String| {
        Some(Fix {
            what: why.as_str(),
            detail,
        })
    };
    let Some(have) = snapshot.images.get(&want.name) else {
        return fix(Why::Deleted, format!("image {} is gone", want.name));
    };
    if !want.points(have) {
        let detail = format!(
            "image {} points at {}, not {}",
            want.name, have.digest, want.digest
        );
        return fix(Why::Repointed, detail);
    }
    let missing: Vec<&str> = labels
        .iter()
        .filter(|(k, v)| *k != labels::ARCHIVE && have.labels.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    if missing.is_empty() {
        return None;
    }
    let pins = [labels::CRI_PINNED, labels::PINNED];
    let why = if missing.iter().any(|k| pins.contains(k)) {
        Why::Unpinned
    } else {
        Why::Relabelled
    };
    fix(
        why,
        format!("image {} lacks {}", want.name, missing.join(", ")),
    )
}

/// Checks `record` against `snapshot`; with [`Repair::Yes`], restores what is missing.
pub async fn check(
    client: &dyn Containerd,
    record: &Record,
    labels: &BTreeMap<String, String>,
    snapshot: &Snapshot,
    repair: Repair,
) -> Standing {
    let mut repaired = Vec::new();
    for want in &record.images {
        let Some(fault) = image_fault(want, labels, snapshot) else {
            continue;
        };
        if repair == Repair::No {
            return Standing::Damaged(fault.detail);
        }
        let Ok(digest) = want.digest.parse() else {
            return Standing::Gone(format!("image {}: bad recorded digest", want.name));
        };
        if !matches!(client.info(&digest).await, Ok(Some(_))) {
            return Standing::Gone(format!("{fault}, and its content {digest} is gone too"));
        }
        if let Err(e) = client.put_image(want, labels).await {
            return Standing::Gone(format!("{fault}; restoring it failed: {e}"));
        }
        repaired.push(fault);
    }
    if let Some(lease) = &record.lease {
        if !snapshot.leases.contains(lease) {
            if repair == Repair::No {
                return Standing::Damaged(format!("lease {lease} is gone"));
            }
            let l = BTreeMap::from([(
                labels::ARCHIVE.to_string(),
                crate::escape::shown(&record.path).to_string(),
            )]);
            if let Err(e) = client.create_lease(lease, l, None).await {
                return Standing::Gone(format!("lease {lease} is gone; recreating it failed: {e}"));
            }
            for b in &record.blobs {
                if let Err(e) = client.lease_resource(lease, b, true).await {
                    return Standing::Gone(format!("lease {lease}: adding {b} failed: {e}"));
                }
            }
            repaired.push(Fix {
                what: "lease",
                detail: format!("lease {lease} was gone"),
            });
        }
    }
    if repaired.is_empty() {
        Standing::Stands
    } else {
        Standing::Repaired(repaired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::ImageTarget;
    use crate::state::{Identity, Record};
    use crate::testkit::fake::Fake;
    use std::path::Path;

    fn setup() -> (Fake, Record, BTreeMap<String, String>) {
        let fake = Fake::new();
        let target = fake.add_blob(b"{\"manifest\":1}", &[]);
        let image = ImageTarget {
            name: "docker.io/library/x:1".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: target.to_string(),
            size: 14,
            annotations: Default::default(),
        };
        let mut record = Record::new(Path::new("/images/x.tar"), Identity::default());
        record.images = vec![image];
        record.blobs = vec![target.to_string()];
        record.lease = Some(labels::archive_lease(Path::new("/images/x.tar")));
        let labels = labels::image_labels(true, Some(Path::new("/images/x.tar")), &BTreeMap::new());
        (fake, record, labels)
    }

    async fn put_all(fake: &Fake, record: &Record, labels: &BTreeMap<String, String>) {
        let c = fake.client();
        for i in &record.images {
            c.put_image(i, labels).await.unwrap();
        }
        c.create_lease(record.lease.as_ref().unwrap(), Default::default(), None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_whole_record_stands_and_a_stripped_pin_is_damage() {
        let (fake, record, labels) = setup();
        put_all(&fake, &record, &labels).await;
        let c = fake.client();
        let snap = Snapshot::take(c.as_ref()).await.unwrap();
        assert_eq!(
            check(c.as_ref(), &record, &labels, &snap, Repair::No).await,
            Standing::Stands
        );
        // Someone strips the CRI pin.
        fake.state()
            .images
            .get_mut("docker.io/library/x:1")
            .unwrap()
            .labels
            .remove(labels::CRI_PINNED);
        let snap = Snapshot::take(c.as_ref()).await.unwrap();
        let s = check(c.as_ref(), &record, &labels, &snap, Repair::No).await;
        assert!(
            matches!(&s, Standing::Damaged(m) if m.contains(labels::CRI_PINNED)),
            "{s:?}"
        );
        assert_eq!(fake.count("put_image"), 1, "looking repaired nothing");
        let s = check(c.as_ref(), &record, &labels, &snap, Repair::Yes).await;
        assert!(matches!(s, Standing::Repaired(_)), "{s:?}");
        assert_eq!(
            fake.image("docker.io/library/x:1").unwrap().labels[labels::CRI_PINNED],
            "pinned"
        );
    }

    #[tokio::test]
    async fn deleted_images_and_leases_are_restored_from_the_record() {
        let (fake, record, labels) = setup();
        let c = fake.client();
        let snap = Snapshot::take(c.as_ref()).await.unwrap();
        let s = check(c.as_ref(), &record, &labels, &snap, Repair::Yes).await;
        assert_eq!(
            s,
            Standing::Repaired(vec![
                Fix {
                    what: "deleted",
                    detail: "image docker.io/library/x:1 is gone".into()
                },
                Fix {
                    what: "lease",
                    detail: format!("lease {} was gone", record.lease.as_ref().unwrap())
                },
            ])
        );
        let img = fake.image("docker.io/library/x:1").unwrap();
        assert_eq!(img.digest, record.images[0].digest);
        let held = c
            .lease_content(record.lease.as_ref().unwrap())
            .await
            .unwrap();
        assert_eq!(held, record.blobs);
        // No archive was needed: the fake saw no write or claim.
        assert_eq!(fake.count("write") + fake.count("claim"), 0);
    }

    #[tokio::test]
    async fn retagged_names_are_repointed_and_gone_content_means_reimport() {
        let (fake, record, labels) = setup();
        put_all(&fake, &record, &labels).await;
        let c = fake.client();
        fake.state()
            .images
            .get_mut("docker.io/library/x:1")
            .unwrap()
            .digest = "sha256:elsewhere".into();
        let snap = Snapshot::take(c.as_ref()).await.unwrap();
        let s = check(c.as_ref(), &record, &labels, &snap, Repair::Yes).await;
        assert!(
            matches!(&s, Standing::Repaired(m) if m[0].what == "repointed" && m[0].detail.contains("points at sha256:elsewhere")),
            "{s:?}"
        );
        assert_eq!(
            fake.image("docker.io/library/x:1").unwrap().digest,
            record.images[0].digest
        );
        // Content gone (the lease was removed and GC ran): a repair cannot help.
        fake.state().images.clear();
        fake.state().leases.clear();
        fake.collect_garbage();
        let snap = Snapshot::take(c.as_ref()).await.unwrap();
        let s = check(c.as_ref(), &record, &labels, &snap, Repair::Yes).await;
        assert!(
            matches!(&s, Standing::Gone(m) if m.contains("content")),
            "{s:?}"
        );
        assert!(!s.holds());
    }

    #[tokio::test]
    async fn the_archive_label_may_name_another_provider() {
        let (fake, record, labels) = setup();
        put_all(&fake, &record, &labels).await;
        fake.state()
            .images
            .get_mut("docker.io/library/x:1")
            .unwrap()
            .labels
            .insert(labels::ARCHIVE.into(), "/images/other.tar".into());
        let c = fake.client();
        let snap = Snapshot::take(c.as_ref()).await.unwrap();
        assert_eq!(
            check(c.as_ref(), &record, &labels, &snap, Repair::No).await,
            Standing::Stands
        );
    }

    #[tokio::test]
    async fn looking_only_reports_a_missing_lease() {
        let (fake, record, labels) = setup();
        put_all(&fake, &record, &labels).await;
        fake.state().leases.clear();
        let c = fake.client();
        let snap = Snapshot::take(c.as_ref()).await.unwrap();
        let s = check(c.as_ref(), &record, &labels, &snap, Repair::No).await;
        assert!(
            matches!(&s, Standing::Damaged(m) if m.contains("lease")),
            "{s:?}"
        );
        assert!(fake.state().leases.is_empty(), "looking created a lease");
    }
}
