//! What the endpoint serves: the images of the namespace (those airlift manages, or all), by
//! repository, and for each image target the manifests and blobs reachable from it — nothing
//! else, whatever else the content store holds.
//!
//! The image list is read from containerd at most once a [`FRESH`] interval while requests hit,
//! and again (at most once a [`RETRY`] interval) when one misses, so an image imported a moment
//! ago is found and one deleted stops being served within [`FRESH`] (a manifest asked for by
//! tag is looked up in containerd at each request). What a target reaches is
//! computed once per target digest (content is addressed by digest, so it never changes) by
//! reading its manifests: an index's `manifests`, a manifest's `config` and `layers`.

use super::names::Repository;
use super::referrers::{self, Referrer};
use super::signatures;
use crate::containerd::{Client, ImageRecord};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::layout::ContentRoot;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an image list is used while requests find what they ask for.
pub const FRESH: Duration = Duration::from_secs(1);
/// How soon after the last listing a request that missed lists the images again.
pub const RETRY: Duration = Duration::from_millis(200);
/// How long a call to containerd may take before the request is answered 503.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest manifest or index read.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Deepest nesting of indexes followed.
const MAX_DEPTH: usize = 4;
/// Most targets whose reachable content is remembered.
const MAX_REACH: usize = 4096;

/// Which images are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The images airlift imported or pulled ([`crate::labels::managed_by_airlift`]).
    #[default]
    Airlift,
    /// Every image of the namespace.
    All,
}

/// A name that is no [`Policy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown registry serve {0:?}: expected airlift or all")]
pub struct UnknownPolicy(pub String);

impl std::str::FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Policy, UnknownPolicy> {
        match s {
            "airlift" => Ok(Policy::Airlift),
            "all" => Ok(Policy::All),
            other => Err(UnknownPolicy(other.to_string())),
        }
    }
}

/// Where blob bytes are read from.
#[derive(Clone)]
pub enum Source {
    /// A content root on this machine (containerd's, or airlift's own in proxy mode): files.
    Files(ContentRoot),
    /// containerd's Content API.
    Api(Client),
}

/// A blob found, ready to be sent.
pub enum Blob {
    /// A file of the content root.
    File(std::fs::File, u64),
    /// A blob of this size, read through the Content API.
    Api(u64),
}

impl Blob {
    /// Its size.
    pub fn size(&self) -> u64 {
        match self {
            Blob::File(_, s) | Blob::Api(s) => *s,
        }
    }
}

impl Source {
    /// Opens a blob; `None` when it is not there.
    pub async fn open(&self, digest: &Digest) -> std::io::Result<Option<Blob>> {
        match self {
            Source::Files(root) => {
                let path = root.blob(digest);
                tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
                    Ok(f) => {
                        let m = f.metadata()?;
                        Ok(m.is_file().then(|| Blob::File(f, m.len())))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                })
                .await
                .map_err(std::io::Error::other)?
            }
            Source::Api(client) => Ok(within(client.info(digest))
                .await
                .map_err(std::io::Error::other)?
                .map(|i| Blob::Api(i.size))),
        }
    }

    /// A whole blob of at most `max` bytes; `None` when it is not there or is larger.
    pub async fn read(&self, digest: &Digest, max: u64) -> std::io::Result<Option<Vec<u8>>> {
        let Some(blob) = self.open(digest).await? else {
            return Ok(None);
        };
        if blob.size() > max {
            return Ok(None);
        }
        let data = match (self, blob) {
            (_, Blob::File(f, _)) => tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut v = Vec::new();
                f.take(max + 1).read_to_end(&mut v)?;
                Ok::<_, std::io::Error>(v)
            })
            .await
            .map_err(std::io::Error::other)??,
            (Source::Api(client), Blob::Api(_)) => within(client.read(digest, 0, 0))
                .await
                .map_err(std::io::Error::other)?,
            (Source::Files(_), Blob::Api(_)) => unreachable!("files open as files"),
        };
        // Content is addressed: bytes that do not hash to the digest are not served as it.
        Ok((data.len() as u64 <= max && Digest::of(&data) == *digest).then_some(data))
    }
}

/// A manifest or index reachable from a served image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Its media type (the descriptor's that names it).
    pub media_type: String,
    /// What it refers to (its `subject`) and its descriptor in a referrers list, when it has
    /// a subject and was there to read.
    pub referrer: Option<Referrer>,
}

/// Everything reachable from one image target.
#[derive(Debug, Default)]
pub struct Reach {
    /// Manifests and indexes (the target among them).
    pub manifests: HashMap<Digest, Manifest>,
    /// Configs and layers.
    pub blobs: std::collections::HashSet<Digest>,
}

/// One served image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The tag, for a `name:tag` image (none for `name@digest`).
    pub tag: Option<String>,
    /// The target.
    pub digest: Digest,
    /// The target's media type.
    pub media_type: String,
}

/// The served images, by repository.
#[derive(Debug, Default)]
pub struct Listing {
    /// Repositories and their images.
    pub repositories: BTreeMap<Repository, Vec<Image>>,
}

impl Policy {
    /// Whether an image record is served.
    pub fn serves(self, record: &ImageRecord) -> bool {
        self == Policy::All || crate::labels::managed_by_airlift(&record.labels)
    }
}

impl Listing {
    /// Groups `records` by repository, keeping those `policy` serves, and the signatures of
    /// the images it serves: a record tagged `sha256-<hex>.sig` or `sha256-<hex>`
    /// ([`signatures`]) is served when a served image of its repository has the target
    /// `sha256:<hex>`, whatever its labels (only the signed image's own target counts, not a
    /// manifest within it).
    pub fn of(records: Vec<ImageRecord>, policy: Policy) -> Listing {
        let mut repositories: BTreeMap<Repository, Vec<Image>> = BTreeMap::new();
        let mut signed = Vec::new();
        for r in records {
            let Some((repository, image)) = parsed(&r) else {
                continue;
            };
            if policy.serves(&r) {
                repositories.entry(repository).or_default().push(image);
            } else if let Some(subject) = image
                .tag
                .as_deref()
                .and_then(|t| signatures::signs(t, &r.labels))
            {
                signed.push((repository, image, subject));
            }
        }
        let targets: HashSet<(Repository, Digest)> = repositories
            .iter()
            .flat_map(|(r, images)| images.iter().map(|i| (r.clone(), i.digest.clone())))
            .collect();
        for (repository, image, subject) in signed {
            if targets.contains(&(repository.clone(), subject)) {
                repositories.entry(repository).or_default().push(image);
            }
        }
        for images in repositories.values_mut() {
            images.sort_by(|a, b| a.tag.cmp(&b.tag));
        }
        Listing { repositories }
    }

    /// Whether `record` (of `repository`, which `policy` does not serve) is served as the
    /// signature of an image this listing serves: the rule of [`Listing::of`].
    pub fn serves_signature(&self, repository: &Repository, record: &ImageRecord) -> bool {
        let Some((_, image)) = parsed(record) else {
            return false;
        };
        let Some(subject) = image
            .tag
            .as_deref()
            .and_then(|t| signatures::signs(t, &record.labels))
        else {
            return false;
        };
        self.repositories
            .get(repository)
            .is_some_and(|images| images.iter().any(|i| i.digest == subject))
    }
}

/// A record's repository and image; `None` when its name or target is not one (or is a name
/// containerd normalises differently, which is not what it says).
fn parsed(r: &ImageRecord) -> Option<(Repository, Image)> {
    let (Ok(name), Ok(digest)) = (Reference::parse_normalized(&r.name), r.digest.parse()) else {
        return None;
    };
    if name.to_string() != r.name {
        return None;
    }
    Some((
        Repository::of(&name),
        Image {
            tag: name.tag().map(str::to_string),
            digest,
            media_type: r.media_type.clone(),
        },
    ))
}

/// The served set, cached.
pub struct Served {
    policy: Policy,
    listing: tokio::sync::Mutex<(Option<Instant>, Arc<Listing>)>,
    reach: Mutex<HashMap<Digest, Walked>>,
}

/// What a target reaches, whether all its manifests were there, and when it was walked.
type Walked = (Arc<Reach>, bool, Instant);

impl Served {
    /// Nothing listed yet.
    pub fn new(policy: Policy) -> Served {
        Served {
            policy,
            listing: tokio::sync::Mutex::new((None, Arc::default())),
            reach: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an image record is served.
    pub fn serves(&self, record: &ImageRecord) -> bool {
        self.policy.serves(record)
    }

    /// The served images: listed again when older than [`FRESH`], or (with `missed`) than
    /// [`RETRY`].
    pub async fn listing(
        &self,
        client: &Client,
        missed: bool,
    ) -> crate::containerd::Result<Arc<Listing>> {
        let mut l = self.listing.lock().await;
        let max_age = if missed { RETRY } else { FRESH };
        if l.0.is_none_or(|at| at.elapsed() >= max_age) {
            let records = within(client.list_images(vec![])).await?;
            *l = (
                Some(Instant::now()),
                Arc::new(Listing::of(records, self.policy)),
            );
        }
        Ok(l.1.clone())
    }

    /// What `image` reaches, computed once per target — or, while some of its manifests are
    /// missing (platforms an import left out, a pull in progress), at most once a [`FRESH`]
    /// interval.
    pub async fn reach(&self, source: &Source, image: &Image) -> std::io::Result<Arc<Reach>> {
        if let Some((r, complete, at)) = self.reach.lock().unwrap().get(&image.digest) {
            if *complete || at.elapsed() < FRESH {
                return Ok(r.clone());
            }
        }
        let mut reach = Reach::default();
        let complete = walk(source, &image.digest, &image.media_type, 0, &mut reach).await?;
        let reach = Arc::new(reach);
        let mut cache = self.reach.lock().unwrap();
        if cache.len() >= MAX_REACH {
            cache.clear();
        }
        cache.insert(
            image.digest.clone(),
            (reach.clone(), complete, Instant::now()),
        );
        Ok(reach)
    }
}

/// A containerd call, given at most [`CALL_TIMEOUT`]: a containerd that does not answer is
/// unavailable.
pub async fn within<T>(
    call: impl std::future::Future<Output = crate::containerd::Result<T>>,
) -> crate::containerd::Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(crate::containerd::ContainerdError::call(
                "registry endpoint",
                crate::error::Class::Unavailable,
                format!("no answer within {CALL_TIMEOUT:?}"),
            ))
        })
}

/// Adds what `digest` (a manifest or index of `media_type`) reaches to `reach`; whether every
/// manifest was there to read. A manifest missing is still reachable (served as unknown when
/// asked for): an index lists platforms an import may have left out.
async fn walk(
    source: &Source,
    digest: &Digest,
    media_type: &str,
    depth: usize,
    reach: &mut Reach,
) -> std::io::Result<bool> {
    if reach.manifests.contains_key(digest) {
        return Ok(true);
    }
    let Some(data) = source.read(digest, MAX_MANIFEST).await? else {
        reach.manifests.insert(
            digest.clone(),
            Manifest {
                media_type: media_type.to_string(),
                referrer: None,
            },
        );
        return Ok(false);
    };
    let json: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
    let media_type = if media_type.is_empty() {
        json["mediaType"].as_str().unwrap_or_default()
    } else {
        media_type
    };
    reach.manifests.insert(
        digest.clone(),
        Manifest {
            media_type: media_type.to_string(),
            referrer: referrers::referrer(digest, media_type, data.len() as u64, &json),
        },
    );
    let descriptor = |v: &serde_json::Value| -> Option<(Digest, String)> {
        Some((
            v["digest"].as_str()?.parse().ok()?,
            v["mediaType"].as_str().unwrap_or_default().to_string(),
        ))
    };
    let mut complete = true;
    if let Some(children) = json["manifests"].as_array() {
        if depth < MAX_DEPTH {
            for (d, m) in children.iter().filter_map(descriptor) {
                complete &= Box::pin(walk(source, &d, &m, depth + 1, reach)).await?;
            }
        }
    } else {
        let layers = json["layers"].as_array().into_iter().flatten();
        for (d, _) in std::iter::once(&json["config"])
            .chain(layers)
            .filter_map(descriptor)
        {
            reach.blobs.insert(d);
        }
    }
    Ok(complete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::fake::Fake;

    fn record(name: &str, digest: &Digest, airlift: bool) -> ImageRecord {
        let mut labels = HashMap::new();
        if airlift {
            labels.insert(crate::labels::PINNED.to_string(), "true".to_string());
        }
        ImageRecord {
            name: name.into(),
            media_type: crate::oci::MEDIA_OCI_INDEX.into(),
            digest: digest.to_string(),
            size: 1,
            labels,
        }
    }

    #[test]
    fn listings_group_by_repository_and_follow_the_policy() {
        let d = Digest::of(b"x");
        let records = vec![
            record("docker.io/library/busybox:1.35", &d, true),
            record("docker.io/library/busybox:stable", &d, true),
            record(&format!("docker.io/library/busybox@{d}"), &d, true),
            record("quay.io/org/app:v1", &d, false),
            record("not a name", &d, true),
            record("busybox:1", &d, true),
        ];
        let l = Listing::of(records.clone(), Policy::Airlift);
        let names: Vec<String> = l.repositories.keys().map(|r| r.to_string()).collect();
        assert_eq!(names, ["docker.io/library/busybox"]);
        let tags: Vec<_> = l
            .repositories
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|i| i.tag.clone())
            .collect();
        assert_eq!(tags, [None, Some("1.35".into()), Some("stable".into())]);
        let l = Listing::of(records, Policy::All);
        assert_eq!(l.repositories.len(), 2);
        assert_eq!("all".parse::<Policy>(), Ok(Policy::All));
        assert!("some".parse::<Policy>().is_err());
    }

    #[tokio::test]
    async fn reach_follows_indexes_and_manifests_and_skips_the_rest() {
        let fake = Fake::new();
        let config = fake.add_blob(b"{}", &[]);
        let layer = fake.add_blob(b"layer", &[]);
        let unrelated = fake.add_blob(b"unrelated", &[]);
        let absent = Digest::of(b"absent manifest");
        let manifest = serde_json::json!({
            "mediaType": crate::oci::MEDIA_OCI_MANIFEST,
            "config": {"digest": config.to_string(), "size": 2},
            "layers": [{"digest": layer.to_string(), "size": 5}, {"digest": "sha256:bad"}],
        });
        let manifest = fake.add_blob(manifest.to_string().as_bytes(), &[]);
        let index = serde_json::json!({"manifests": [
            {"mediaType": crate::oci::MEDIA_OCI_MANIFEST, "digest": manifest.to_string()},
            {"mediaType": crate::oci::MEDIA_OCI_MANIFEST, "digest": absent.to_string()},
        ]});
        let index = fake.add_blob(index.to_string().as_bytes(), &[]);
        let source = Source::Api(fake.client());
        let served = Served::new(Policy::All);
        let image = Image {
            tag: Some("1".into()),
            digest: index.clone(),
            media_type: crate::oci::MEDIA_OCI_INDEX.into(),
        };
        let reach = served.reach(&source, &image).await.unwrap();
        assert_eq!(reach.manifests.len(), 3);
        assert_eq!(
            reach.manifests[&manifest].media_type,
            crate::oci::MEDIA_OCI_MANIFEST
        );
        assert!(reach.manifests.contains_key(&absent));
        assert!(reach.blobs.contains(&config) && reach.blobs.contains(&layer));
        assert!(!reach.blobs.contains(&unrelated));
        // An incomplete target is walked again, once its walk is older than FRESH.
        let reads = fake.count("read");
        served.reach(&source, &image).await.unwrap();
        assert_eq!(fake.count("read"), reads);
        tokio::time::sleep(FRESH).await;
        served.reach(&source, &image).await.unwrap();
        assert!(fake.count("read") > reads);
        // Bytes that do not hash to their digest are not read as the blob.
        fake.state().blobs.get_mut(&config).unwrap().data = b"[]".to_vec();
        assert_eq!(source.read(&config, 100).await.unwrap(), None);
        assert_eq!(
            source.read(&layer, 1).await.unwrap(),
            None,
            "larger than the limit"
        );
        assert_eq!(
            fake.client().info(&unrelated).await.unwrap().unwrap().size,
            9
        );
    }
}
