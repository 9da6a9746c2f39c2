//! Pins: which images lose their pin when an archive goes or stops providing them, and the one
//! place pins are taken off. An image another present archive provides never loses its pin — it
//! is relabelled with that archive instead — and an image that names another archive (or none)
//! is not touched at all.

use crate::containerd::{Containerd, ImageRecord};
use crate::labels;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What becomes of one image an archive let go of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the image is gone, or names another archive (or none).
    Leave,
    /// Another present archive provides it: it keeps its pins and names that archive.
    Relabel(PathBuf),
    /// Nobody provides it any more: its pins go.
    Unpin,
}

/// What to do with `image` (as containerd holds it, if it does), let go of by `archive`, when
/// `providers` maps the names other present archives provide to one of those archives.
pub fn decide(
    image: Option<&ImageRecord>,
    archive: &Path,
    providers: &HashMap<String, PathBuf>,
) -> Change {
    let Some(image) = image else {
        return Change::Leave;
    };
    let named = image.labels.get(labels::ARCHIVE).map(PathBuf::from);
    if named.as_deref() != Some(archive) {
        return Change::Leave;
    }
    match providers.get(&image.name) {
        Some(other) => Change::Relabel(other.clone()),
        None => Change::Unpin,
    }
}

/// Lets go of `names`, which `archive` provided: each is unpinned, relabelled or left as
/// [`decide`] says. Returns the names unpinned. Failures are logged; the next verification
/// tries again.
pub async fn release(
    client: &dyn Containerd,
    names: &[String],
    archive: &Path,
    providers: &HashMap<String, PathBuf>,
) -> Vec<String> {
    let mut unpinned = Vec::new();
    for name in names {
        let image = match client.get_image(name).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(image = %name, error = %e, "could not look the image up");
                continue;
            }
        };
        let (change, image) = match image {
            Some(i) => (decide(Some(&i), archive, providers), i),
            None => continue,
        };
        let update = match &change {
            Change::Leave => continue,
            Change::Relabel(other) => BTreeMap::from([(
                labels::ARCHIVE.to_string(),
                Some(other.display().to_string()),
            )]),
            Change::Unpin => labels::unpin(),
        };
        match client.set_image_labels(&image, &update).await {
            Ok(()) if change == Change::Unpin => {
                tracing::info!(image = %name, archive = %archive.display(), "unpinned");
                unpinned.push(name.clone());
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(image = %name, error = %e, "could not unpin"),
        }
    }
    unpinned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::fake::Fake;
    use crate::containerd::ImageTarget;

    fn target(name: &str) -> ImageTarget {
        ImageTarget {
            name: name.into(),
            media_type: "m".into(),
            digest: "sha256:00".into(),
            size: 1,
            annotations: Default::default(),
        }
    }

    async fn pinned(fake: &Fake, name: &str, archive: &str) {
        let l = labels::image_labels(true, Some(Path::new(archive)), &BTreeMap::new());
        fake.client().put_image(&target(name), &l).await.unwrap();
    }

    #[tokio::test]
    async fn only_images_nobody_else_provides_lose_their_pins() {
        let fake = Fake::new();
        pinned(&fake, "a:1", "/images/gone.tar").await;
        pinned(&fake, "shared:1", "/images/gone.tar").await;
        pinned(&fake, "other:1", "/images/kept.tar").await;
        let providers =
            HashMap::from([("shared:1".to_string(), PathBuf::from("/images/kept.tar"))]);
        let names: Vec<String> = ["a:1", "shared:1", "other:1", "missing:1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = fake.client();
        let unpinned = release(
            c.as_ref(),
            &names,
            Path::new("/images/gone.tar"),
            &providers,
        )
        .await;
        assert_eq!(unpinned, vec!["a:1".to_string()]);
        let a = fake.image("a:1").unwrap();
        assert!(
            !a.labels.contains_key(labels::CRI_PINNED) && !a.labels.contains_key(labels::PINNED)
        );
        let shared = fake.image("shared:1").unwrap();
        assert_eq!(shared.labels[labels::CRI_PINNED], "pinned");
        assert_eq!(shared.labels[labels::ARCHIVE], "/images/kept.tar");
        // An image naming another archive is not touched (no call changes it).
        assert_eq!(
            fake.image("other:1").unwrap().labels[labels::ARCHIVE],
            "/images/kept.tar"
        );
        let changed: Vec<String> = fake
            .calls()
            .into_iter()
            .filter(|c| c.op == "set_image_labels")
            .map(|c| c.subject)
            .collect();
        assert_eq!(changed, ["a:1", "shared:1"]);
    }

    #[test]
    fn decisions() {
        let img = |archive: Option<&str>| ImageRecord {
            name: "x".into(),
            media_type: String::new(),
            digest: String::new(),
            size: 0,
            labels: archive
                .map(|a| HashMap::from([(labels::ARCHIVE.to_string(), a.to_string())]))
                .unwrap_or_default(),
        };
        let none = HashMap::new();
        let a = Path::new("/a.tar");
        assert_eq!(decide(None, a, &none), Change::Leave);
        assert_eq!(decide(Some(&img(None)), a, &none), Change::Leave);
        assert_eq!(decide(Some(&img(Some("/b.tar"))), a, &none), Change::Leave);
        assert_eq!(decide(Some(&img(Some("/a.tar"))), a, &none), Change::Unpin);
        let p = HashMap::from([("x".to_string(), PathBuf::from("/b.tar"))]);
        assert_eq!(
            decide(Some(&img(Some("/a.tar"))), a, &p),
            Change::Relabel(PathBuf::from("/b.tar"))
        );
    }
}
