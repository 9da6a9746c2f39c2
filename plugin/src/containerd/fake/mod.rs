//! An in-memory containerd for unit tests: one namespace's blobs, leases, images, ingests and
//! snapshots, with containerd's semantics where airlift relies on them (shared content claimed by
//! digest, commits verified, `AlreadyExists` for present blobs, leases holding content and
//! snapshots, snapshots prepared on committed parents and committed under chain IDs, a differ
//! that reads the layer from the namespace and answers the digest of its uncompressed bytes, a
//! garbage collector that follows `containerd.io/gc.ref.content.*` and
//! `containerd.io/gc.ref.snapshot.*` labels and snapshot parents). Every call is recorded in
//! order, and calls can be made to fail with a chosen error class.

use super::{
    BlobInfo, Chunk, Chunks, Client, Containerd, ContainerdError, Descriptor, Event, Events,
    ImageRecord, ImageTarget, LabelChanges, Labels, Mount, Result, Scope, SnapshotInfo,
    SnapshotKind, Written,
};
use crate::digest::Digest;
use crate::error::Class;
use crate::filters::{map_field, Adaptor, Filter};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc::UnboundedSender;

/// One call airlift made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The operation: the [`Containerd`] method's name (`put_image`, `claim`, …).
    pub op: &'static str,
    /// What it was about (a digest, an image name, a lease id), empty when nothing.
    pub subject: String,
    /// The lease the call was made under.
    pub lease: Option<String>,
}

/// A blob in the fake's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob {
    /// Its bytes.
    pub data: Vec<u8>,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

/// A lease in the fake's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    /// Its labels (`containerd.io/gc.expire` among them, when it expires).
    pub labels: HashMap<String, String>,
    /// The blob digests it holds.
    pub content: BTreeSet<String>,
    /// The snapshots it holds: (snapshotter, key).
    pub snapshots: BTreeSet<(String, String)>,
}

/// A snapshot in the fake's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Active or committed.
    pub kind: SnapshotKind,
    /// Its parent's name, empty for none.
    pub parent: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// What the differ applied into it (active snapshots; kept when committed).
    pub applied: Vec<Digest>,
}

struct Fault {
    op: &'static str,
    subject: Option<String>,
    remaining: Option<u32>,
    class: Class,
}

/// Everything the fake holds. Tests may read and change it through [`Fake::state`].
#[derive(Default)]
pub struct State {
    /// Blobs of the namespace.
    pub blobs: BTreeMap<Digest, Blob>,
    /// What a registry would give a pull, by reference: the image's target and its blobs.
    pub registry: BTreeMap<String, (ImageTarget, Vec<Vec<u8>>)>,
    /// Leases by id.
    pub leases: BTreeMap<String, Lease>,
    /// Image records by name.
    pub images: BTreeMap<String, ImageRecord>,
    /// Ingests in progress (and abandoned) by ref: the bytes so far.
    pub ingests: BTreeMap<String, Vec<u8>>,
    /// Snapshots by (snapshotter, key).
    pub snapshots: BTreeMap<(String, String), Snapshot>,
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// What [`Containerd::version`] answers (a 2.x by default).
    pub version: String,
    /// Run the garbage collector before every call (the strictest schedule containerd could
    /// choose), so content left unprotected between two calls is lost.
    pub gc_before_every_call: bool,
    faults: Vec<Fault>,
    content_root: Option<PathBuf>,
    proxy_address: Option<PathBuf>,
    subscribers: Vec<(Vec<regex::Regex>, UnboundedSender<Result<Event>>)>,
}

impl State {
    /// The lease `id` whose resources are asked for; `NotFound` as containerd answers.
    fn lease_listed(&self, id: &str) -> Result<&Lease> {
        self.leases.get(id).ok_or_else(|| {
            ContainerdError::call(
                format!("list resources of lease {id}"),
                Class::NotFound,
                "not found",
            )
        })
    }

    /// Publishes an event to the subscriptions whose topics match.
    fn publish(&mut self, event: Event) {
        let topic = topic(&event);
        self.subscribers.retain(|(topics, tx)| {
            !topics.iter().any(|t| t.is_match(&topic)) || tx.send(Ok(event.clone())).is_ok()
        });
    }
}

/// An event's topic.
fn topic(event: &Event) -> String {
    match event {
        Event::ImageCreated { .. } => "/images/create".into(),
        Event::ImageUpdated { .. } => "/images/update".into(),
        Event::ImageDeleted { .. } => "/images/delete".into(),
        Event::ContentCreated { .. } => "/content/create".into(),
        Event::Other { topic } => topic.clone(),
    }
}

/// The in-memory containerd. Clones share the state; each handle has its own lease.
#[derive(Clone)]
pub struct Fake {
    state: Arc<Mutex<State>>,
    scope: Scope,
}

impl Default for Fake {
    fn default() -> Self {
        Fake::new()
    }
}

struct LeaseView<'a>(&'a str, &'a Lease);

impl Adaptor for LeaseView<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("id") => Some(self.0.to_string()),
            Some("labels") => map_field(&path[1..], &self.1.labels),
            _ => None,
        }
    }
}

impl Adaptor for ImageRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("name") => Some(self.name.clone()),
            Some("target") => match path.get(1).map(String::as_str) {
                Some("digest") => Some(self.digest.clone()),
                Some("mediatype") => Some(self.media_type.clone()),
                _ => None,
            },
            Some("labels") => map_field(&path[1..], &self.labels),
            _ => None,
        }
    }
}

fn invalid_filter(e: crate::filters::FilterError) -> ContainerdError {
    ContainerdError::call("filter", Class::InvalidArgument, e.to_string())
}

impl Fake {
    /// An empty namespace, with no content root (every blob must be streamed).
    pub fn new() -> Fake {
        static FAKES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = FAKES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Fake {
            state: Arc::new(Mutex::new(State {
                version: "2.1.4".into(),
                ..State::default()
            })),
            scope: Scope {
                address: PathBuf::from(format!("/fake/{n}/containerd.sock")),
                namespace: "fake".into(),
                lease: None,
            },
        }
    }

    /// Reports `root` as the content root, where [`Containerd::claim`] finds blobs on disk.
    pub fn with_content_root(self, root: &Path) -> Fake {
        self.state().content_root = Some(root.to_path_buf());
        self
    }

    /// Reports a content proxy plugin at `address` (and no content root).
    pub fn with_content_proxy(self, address: &Path) -> Fake {
        {
            let mut s = self.state();
            s.content_root = None;
            s.proxy_address = Some(address.to_path_buf());
        }
        self
    }

    /// This fake as a shared handle.
    pub fn client(&self) -> Client {
        Arc::new(self.clone())
    }

    /// The state, locked.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The operations called so far, in order (`"put_image"`, …), filtered by `op` prefix.
    pub fn count(&self, op: &str) -> usize {
        self.state().calls.iter().filter(|c| c.op == op).count()
    }

    /// Makes every call of `op` (about `subject`, when given) fail with `class`.
    pub fn fail(&self, op: &'static str, subject: Option<&str>, class: Class) {
        self.state().faults.push(Fault {
            op,
            subject: subject.map(str::to_string),
            remaining: None,
            class,
        });
    }

    /// Makes the next `times` calls of `op` fail with `class`.
    pub fn fail_times(&self, op: &'static str, times: u32, class: Class) {
        self.state().faults.push(Fault {
            op,
            subject: None,
            remaining: Some(times),
            class,
        });
    }

    /// Removes every injected fault.
    pub fn heal(&self) {
        self.state().faults.clear();
    }

    /// Adds a blob to the namespace directly (as another client would), under no lease.
    pub fn add_blob(&self, data: &[u8], labels: &[(&str, &str)]) -> Digest {
        let d = Digest::of(data);
        self.state().blobs.insert(
            d.clone(),
            Blob {
                data: data.to_vec(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
        d
    }

    /// Puts an image into the registry pulls reach: a manifest-like target over `blobs`.
    pub fn add_remote(&self, reference: &str, blobs: &[&[u8]]) -> ImageTarget {
        let manifest = format!(
            "{{\"layers\":{:?}}}",
            blobs
                .iter()
                .map(|b| Digest::of(b).to_string())
                .collect::<Vec<_>>()
        );
        let target = ImageTarget {
            name: reference.to_string(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::of(manifest.as_bytes()).to_string(),
            size: manifest.len() as i64,
            annotations: BTreeMap::new(),
        };
        let mut all: Vec<Vec<u8>> = blobs.iter().map(|b| b.to_vec()).collect();
        all.push(manifest.into_bytes());
        self.state()
            .registry
            .insert(reference.to_string(), (target.clone(), all));
        target
    }

    /// Takes an image out of the registry pulls reach.
    pub fn remove_remote(&self, reference: &str) {
        self.state().registry.remove(reference);
    }

    /// Deletes an image record, as another client would (`ctr images rm`), with its event.
    pub fn delete_image(&self, name: &str) {
        let mut s = self.state();
        if s.images.remove(name).is_some() {
            s.publish(Event::ImageDeleted { name: name.into() });
        }
    }

    /// Changes an image record as another client would, with its event: `f` gets the record.
    pub fn change_image(&self, name: &str, f: impl FnOnce(&mut ImageRecord)) {
        let mut s = self.state();
        let Some(image) = s.images.get_mut(name) else {
            return;
        };
        f(image);
        let labels = image.labels.clone();
        s.publish(Event::ImageUpdated {
            name: name.into(),
            labels,
        });
    }

    /// Publishes an event, as containerd would for a change made elsewhere.
    pub fn publish(&self, event: Event) {
        self.state().publish(event);
    }

    /// The number of live subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.state().subscribers.len()
    }

    /// Ends every subscription, as a containerd restart does.
    pub fn end_subscriptions(&self) {
        self.state().subscribers.clear();
    }

    /// An image record.
    pub fn image(&self, name: &str) -> Option<ImageRecord> {
        self.state().images.get(name).cloned()
    }

    /// Runs the garbage collector now; returns the blobs it removed.
    pub fn collect_garbage(&self) -> Vec<Digest> {
        collect(&mut self.state())
    }

    /// The committed snapshots of `snapshotter`, by name.
    pub fn committed(&self, snapshotter: &str) -> BTreeMap<String, Snapshot> {
        self.state()
            .snapshots
            .iter()
            .filter(|((sn, _), s)| sn == snapshotter && s.kind == SnapshotKind::Committed)
            .map(|((_, k), s)| (k.clone(), s.clone()))
            .collect()
    }

    /// Records a call and applies faults (and the garbage collector, when asked for).
    fn enter(&self, op: &'static str, subject: impl Into<String>) -> Result<()> {
        let subject = subject.into();
        let mut s = self.state();
        if s.gc_before_every_call {
            collect(&mut s);
        }
        s.calls.push(Call {
            op,
            subject: subject.clone(),
            lease: self.scope.lease.clone(),
        });
        let hit = s.faults.iter_mut().find(|f| {
            f.op == op && f.subject.as_ref().is_none_or(|x| *x == subject) && f.remaining != Some(0)
        });
        if let Some(f) = hit {
            if let Some(n) = &mut f.remaining {
                *n -= 1;
            }
            let class = f.class;
            return Err(ContainerdError::call(
                format!("{op} {subject}"),
                class,
                "injected fault",
            ));
        }
        Ok(())
    }

    /// Adds a committed blob to the handle's lease.
    fn hold(&self, s: &mut State, digest: &Digest) {
        if let Some(lease) = &self.scope.lease {
            if let Some(l) = s.leases.get_mut(lease) {
                l.content.insert(digest.to_string());
            }
        }
    }

    /// Adds a snapshot to the handle's lease (or, with `add` false, takes it out).
    fn hold_snapshot(&self, s: &mut State, snapshotter: &str, key: &str, add: bool) {
        if let Some(lease) = &self.scope.lease {
            if let Some(l) = s.leases.get_mut(lease) {
                let k = (snapshotter.to_string(), key.to_string());
                if add {
                    l.snapshots.insert(k);
                } else {
                    l.snapshots.remove(&k);
                }
            }
        }
    }
}

/// The error of a snapshot call.
fn snapshot_error(op: String, class: Class, message: &str) -> ContainerdError {
    ContainerdError::call(op, class, message)
}

/// The uncompressed bytes of a layer blob of `media_type`, as the differ reads them.
fn uncompressed(media_type: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    if media_type.ends_with("gzip") {
        flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
    } else if media_type.ends_with("zstd") {
        out = zstd::decode_all(data)?;
    } else {
        out = data.to_vec();
    }
    Ok(out)
}

/// containerd's collector in miniature: expired leases go, then every blob no image target or
/// lease reaches (directly or through `containerd.io/gc.ref.content.*` labels).
fn collect(s: &mut State) -> Vec<Digest> {
    let now = SystemTime::now();
    s.leases.retain(|_, l| {
        l.labels
            .get("containerd.io/gc.expire")
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .is_none_or(|at| at > now)
    });
    let mut todo: Vec<String> = s.images.values().map(|i| i.digest.clone()).collect();
    todo.extend(s.leases.values().flat_map(|l| l.content.iter().cloned()));
    let mut reached = BTreeSet::new();
    while let Some(d) = todo.pop() {
        let Ok(digest) = d.parse::<Digest>() else {
            continue;
        };
        if !reached.insert(digest.clone()) {
            continue;
        }
        if let Some(b) = s.blobs.get(&digest) {
            for (k, v) in &b.labels {
                if k.starts_with("containerd.io/gc.ref.content") {
                    todo.push(v.clone());
                }
            }
        }
    }
    let gone: Vec<Digest> = s
        .blobs
        .keys()
        .filter(|d| !reached.contains(*d))
        .cloned()
        .collect();
    for d in &gone {
        s.blobs.remove(d);
    }
    // Snapshots: those leases hold and those reached blobs name, with their parents.
    let mut todo: Vec<(String, String)> = s
        .leases
        .values()
        .flat_map(|l| l.snapshots.iter().cloned())
        .collect();
    for d in &reached {
        if let Some(b) = s.blobs.get(d) {
            for (k, v) in &b.labels {
                if let Some(sn) = k.strip_prefix("containerd.io/gc.ref.snapshot.") {
                    todo.push((sn.to_string(), v.clone()));
                }
            }
        }
    }
    let mut kept = BTreeSet::new();
    while let Some(k) = todo.pop() {
        let Some(snap) = s.snapshots.get(&k) else {
            continue;
        };
        if !snap.parent.is_empty() {
            todo.push((k.0.clone(), snap.parent.clone()));
        }
        kept.insert(k);
    }
    s.snapshots.retain(|k, _| kept.contains(k));
    gone
}

#[async_trait::async_trait]
impl Containerd for Fake {
    fn scope(&self) -> &Scope {
        &self.scope
    }

    fn with_lease(&self, lease: Option<&str>) -> Client {
        Arc::new(Fake {
            state: self.state.clone(),
            scope: self.scope.leased(lease),
        })
    }

    async fn version(&self) -> Result<String> {
        self.enter("version", "")?;
        Ok(self.state().version.clone())
    }

    async fn content_root(&self) -> Result<Option<PathBuf>> {
        self.enter("content_root", "")?;
        Ok(self.state().content_root.clone())
    }

    async fn content_proxy_address(&self) -> Result<Option<PathBuf>> {
        self.enter("content_proxy_address", "")?;
        Ok(self.state().proxy_address.clone())
    }

    async fn info(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        self.enter("info", digest.to_string())?;
        Ok(self.state().blobs.get(digest).map(|b| BlobInfo {
            size: b.data.len() as u64,
            labels: b.labels.clone(),
        }))
    }

    async fn set_blob_labels(&self, digest: &Digest, labels: &Labels) -> Result<()> {
        self.enter("set_blob_labels", digest.to_string())?;
        let mut s = self.state();
        let b = s.blobs.get_mut(digest).ok_or_else(|| {
            ContainerdError::call(format!("label blob {digest}"), Class::NotFound, "not found")
        })?;
        b.labels
            .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    async fn read(&self, digest: &Digest, offset: u64, size: u64) -> Result<Vec<u8>> {
        self.enter("read", digest.to_string())?;
        let s = self.state();
        let b = s.blobs.get(digest).ok_or_else(|| {
            ContainerdError::call(format!("read blob {digest}"), Class::NotFound, "not found")
        })?;
        let start = (offset as usize).min(b.data.len());
        let end = if size == 0 {
            b.data.len()
        } else {
            (start + size as usize).min(b.data.len())
        };
        Ok(b.data[start..end].to_vec())
    }

    async fn write(
        &self,
        reference: &str,
        total: u64,
        expected: Option<&Digest>,
        mut chunks: Chunks,
    ) -> Result<Written> {
        let subject = expected.map_or(reference.to_string(), |d| d.to_string());
        self.enter("write", subject.clone())?;
        if let Some(d) = expected {
            if self.state().blobs.contains_key(d) {
                return Ok(Written::AlreadyExists);
            }
        }
        self.state()
            .ingests
            .entry(reference.to_string())
            .or_default();
        while let Some(chunk) = chunks.recv().await {
            let mut s = self.state();
            match chunk {
                Chunk::Data(data) => s
                    .ingests
                    .entry(reference.to_string())
                    .or_default()
                    .extend_from_slice(&data),
                Chunk::Commit(digest) => {
                    let data = s.ingests.remove(reference).unwrap_or_default();
                    let fail = |m: String| {
                        ContainerdError::call(
                            format!("write blob {subject}"),
                            Class::FailedPrecondition,
                            m,
                        )
                    };
                    if total > 0 && data.len() as u64 != total {
                        return Err(fail(format!(
                            "unexpected commit size {}, expected {total}",
                            data.len()
                        )));
                    }
                    if Digest::of(&data) != digest {
                        return Err(fail(format!("unexpected commit digest, expected {digest}")));
                    }
                    if s.blobs.contains_key(&digest) {
                        return Ok(Written::AlreadyExists);
                    }
                    s.blobs.insert(
                        digest.clone(),
                        Blob {
                            data,
                            labels: HashMap::new(),
                        },
                    );
                    self.hold(&mut s, &digest);
                    return Ok(Written::Committed);
                }
            }
        }
        Ok(Written::Abandoned)
    }

    async fn claim(&self, _: &str, digest: &Digest, size: u64, labels: &Labels) -> Result<bool> {
        self.enter("claim", digest.to_string())?;
        let mut s = self.state();
        if s.blobs.contains_key(digest) {
            return Ok(false);
        }
        let on_disk = s
            .content_root
            .as_ref()
            .map(|r| r.join("blobs/sha256").join(digest.hex()))
            .and_then(|p| std::fs::read(p).ok())
            .filter(|data| data.len() as u64 == size && Digest::of(data) == *digest);
        let Some(data) = on_disk else {
            return Err(ContainerdError::call(
                format!("claim blob {digest}"),
                Class::FailedPrecondition,
                format!("unexpected commit size 0, expected {size}"),
            ));
        };
        s.blobs.insert(
            digest.clone(),
            Blob {
                data,
                labels: labels.clone().into_iter().collect(),
            },
        );
        self.hold(&mut s, digest);
        Ok(true)
    }

    async fn ingest_refs(&self) -> Result<Vec<String>> {
        self.enter("ingest_refs", "")?;
        Ok(self
            .state()
            .ingests
            .keys()
            .filter(|r| r.starts_with("airlift-"))
            .cloned()
            .collect())
    }

    async fn abort(&self, reference: &str) -> Result<()> {
        self.enter("abort", reference)?;
        self.state().ingests.remove(reference);
        Ok(())
    }

    async fn create_lease(&self, id: &str, labels: Labels, expire: Option<Duration>) -> Result<()> {
        let mut labels: HashMap<String, String> = labels.into_iter().collect();
        self.enter("create_lease", id)?;
        if let Some(after) = expire {
            labels.insert(
                "containerd.io/gc.expire".into(),
                super::rfc3339(SystemTime::now() + after),
            );
        }
        self.state().leases.entry(id.to_string()).or_insert(Lease {
            labels,
            ..Lease::default()
        });
        Ok(())
    }

    async fn delete_lease(&self, id: &str, sync: bool) -> Result<()> {
        self.enter("delete_lease", id)?;
        let mut s = self.state();
        s.leases.remove(id);
        if sync {
            collect(&mut s);
        }
        Ok(())
    }

    async fn list_leases(&self, filter: &str) -> Result<Vec<String>> {
        self.enter("list_leases", filter)?;
        let f = Filter::parse(&[filter]).map_err(invalid_filter)?;
        Ok(self
            .state()
            .leases
            .iter()
            .filter(|(id, l)| f.matches(&LeaseView(id, l)))
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn lease_content(&self, id: &str) -> Result<Vec<String>> {
        self.enter("lease_content", id)?;
        let s = self.state();
        let l = s.lease_listed(id)?;
        Ok(l.content.iter().cloned().collect())
    }

    async fn lease_resource(&self, id: &str, digest: &str, add: bool) -> Result<()> {
        self.enter("lease_resource", format!("{id} {digest}"))?;
        let mut s = self.state();
        let l = s.leases.get_mut(id).ok_or_else(|| {
            ContainerdError::call(
                format!("update lease {id} with {digest}"),
                Class::NotFound,
                "lease not found",
            )
        })?;
        if add {
            l.content.insert(digest.to_string());
        } else {
            l.content.remove(digest);
        }
        Ok(())
    }

    async fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        self.enter("get_image", name)?;
        Ok(self.state().images.get(name).cloned())
    }

    async fn list_images(&self, filters: Vec<String>) -> Result<Vec<ImageRecord>> {
        self.enter("list_images", filters.join(","))?;
        let f = Filter::parse(&filters).map_err(invalid_filter)?;
        Ok(self
            .state()
            .images
            .values()
            .filter(|i| f.matches(*i))
            .cloned()
            .collect())
    }

    async fn put_image(&self, image: &ImageTarget, labels: &Labels) -> Result<()> {
        self.enter("put_image", image.name.clone())?;
        let mut s = self.state();
        let created = !s.images.contains_key(&image.name);
        let record = s
            .images
            .entry(image.name.clone())
            .or_insert_with(|| ImageRecord {
                name: image.name.clone(),
                media_type: String::new(),
                digest: String::new(),
                size: 0,
                labels: HashMap::new(),
            });
        record.media_type = image.media_type.clone();
        record.digest = image.digest.clone();
        record.size = image.size;
        record
            .labels
            .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (name, labels) = (image.name.clone(), record.labels.clone());
        s.publish(if created {
            Event::ImageCreated { name, labels }
        } else {
            Event::ImageUpdated { name, labels }
        });
        Ok(())
    }

    async fn pull(&self, pull: &super::Pull) -> Result<()> {
        self.enter("pull", pull.reference.clone())?;
        let found = self.state().registry.get(&pull.reference).cloned();
        let Some((target, blobs)) = found else {
            return Err(ContainerdError::call(
                format!("pull {}", pull.reference),
                Class::NotFound,
                "not found in the registry",
            ));
        };
        {
            let mut s = self.state();
            for b in blobs {
                let d = Digest::of(&b);
                s.blobs.entry(d.clone()).or_insert(Blob {
                    data: b,
                    labels: HashMap::new(),
                });
                self.hold(&mut s, &d);
            }
        }
        self.put_image(&target, &pull.labels).await
    }

    async fn subscribe(&self, topics: &[&str]) -> Result<Events> {
        self.enter("subscribe", topics.join(","))?;
        let topics = topics
            .iter()
            .map(|t| regex::Regex::new(t))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                ContainerdError::call("subscribe", Class::InvalidArgument, e.to_string())
            })?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.state().subscribers.push((topics, tx));
        Ok(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }

    async fn set_image_labels(&self, image: &ImageRecord, labels: &LabelChanges) -> Result<()> {
        self.enter("set_image_labels", image.name.clone())?;
        let mut s = self.state();
        let record = s.images.get_mut(&image.name).ok_or_else(|| {
            ContainerdError::call(
                format!("label image {}", image.name),
                Class::NotFound,
                "not found",
            )
        })?;
        for (k, v) in labels {
            match v {
                Some(v) => record.labels.insert(k.clone(), v.clone()),
                None => record.labels.remove(k),
            };
        }
        let event = Event::ImageUpdated {
            name: image.name.clone(),
            labels: record.labels.clone(),
        };
        s.publish(event);
        Ok(())
    }

    async fn prepare_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: &Labels,
    ) -> Result<Vec<Mount>> {
        self.enter("prepare_snapshot", key)?;
        let op = || format!("prepare snapshot {key:?} in {snapshotter}");
        let mut s = self.state();
        let committed = |s: &State, name: &str| {
            s.snapshots
                .get(&(snapshotter.to_string(), name.to_string()))
                .is_some_and(|x| x.kind == SnapshotKind::Committed)
        };
        if let Some(target) = labels.get("containerd.io/snapshot.ref") {
            if committed(&s, target) {
                self.hold_snapshot(&mut s, snapshotter, target, true);
                return Err(snapshot_error(
                    op(),
                    Class::AlreadyExists,
                    &format!("target snapshot {target:?}: already exists"),
                ));
            }
        }
        let k = (snapshotter.to_string(), key.to_string());
        if s.snapshots.contains_key(&k) {
            return Err(snapshot_error(op(), Class::AlreadyExists, "already exists"));
        }
        if !parent.is_empty() && !committed(&s, parent) {
            return Err(snapshot_error(
                op(),
                Class::NotFound,
                &format!("parent snapshot {parent} does not exist"),
            ));
        }
        s.snapshots.insert(
            k,
            Snapshot {
                kind: SnapshotKind::Active,
                parent: parent.to_string(),
                labels: labels.clone().into_iter().collect(),
                applied: Vec::new(),
            },
        );
        self.hold_snapshot(&mut s, snapshotter, key, true);
        Ok(vec![Mount {
            kind: "fake".into(),
            source: format!("{snapshotter}/{key}"),
            target: String::new(),
            options: Vec::new(),
        }])
    }

    async fn commit_snapshot(
        &self,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: &Labels,
    ) -> Result<()> {
        self.enter("commit_snapshot", name)?;
        let op = || format!("commit snapshot {name} in {snapshotter}");
        let mut s = self.state();
        self.hold_snapshot(&mut s, snapshotter, name, true);
        let n = (snapshotter.to_string(), name.to_string());
        if s.snapshots.contains_key(&n) {
            return Err(snapshot_error(op(), Class::AlreadyExists, "already exists"));
        }
        let k = (snapshotter.to_string(), key.to_string());
        let Some(active) = s
            .snapshots
            .get(&k)
            .filter(|a| a.kind == SnapshotKind::Active)
            .cloned()
        else {
            return Err(snapshot_error(
                op(),
                Class::NotFound,
                "no such active snapshot",
            ));
        };
        s.snapshots.remove(&k);
        let mut all = active.labels;
        all.extend(labels.clone());
        s.snapshots.insert(
            n,
            Snapshot {
                kind: SnapshotKind::Committed,
                parent: active.parent,
                labels: all,
                applied: active.applied,
            },
        );
        self.hold_snapshot(&mut s, snapshotter, key, false);
        Ok(())
    }

    async fn stat_snapshot(&self, snapshotter: &str, key: &str) -> Result<Option<SnapshotInfo>> {
        self.enter("stat_snapshot", key)?;
        Ok(self
            .state()
            .snapshots
            .get(&(snapshotter.to_string(), key.to_string()))
            .map(|x| SnapshotInfo {
                name: key.to_string(),
                parent: x.parent.clone(),
                kind: x.kind,
                labels: x.labels.clone(),
            }))
    }

    async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()> {
        self.enter("remove_snapshot", key)?;
        self.state()
            .snapshots
            .remove(&(snapshotter.to_string(), key.to_string()));
        Ok(())
    }

    async fn apply_diff(&self, layer: &Descriptor, mounts: &[Mount]) -> Result<Digest> {
        self.enter("apply_diff", layer.digest.to_string())?;
        let op = || format!("apply layer {} ({})", layer.digest, layer.media_type);
        let data = {
            let s = self.state();
            s.blobs
                .get(&layer.digest)
                .ok_or_else(|| ContainerdError::call(op(), Class::NotFound, "content not found"))?
                .data
                .clone()
        };
        let target = mounts
            .first()
            .and_then(|m| m.source.split_once('/'))
            .map(|(sn, key)| (sn.to_string(), key.to_string()));
        let plain = uncompressed(&layer.media_type, &data)
            .map_err(|e| ContainerdError::call(op(), Class::Internal, e.to_string()))?;
        let diff_id = Digest::of(&plain);
        let mut s = self.state();
        let active = target
            .and_then(|k| s.snapshots.get_mut(&k))
            .filter(|a| a.kind == SnapshotKind::Active)
            .ok_or_else(|| {
                ContainerdError::call(
                    op(),
                    Class::InvalidArgument,
                    "not an active snapshot's mounts",
                )
            })?;
        active.applied.push(layer.digest.clone());
        Ok(diff_id)
    }

    async fn lease_snapshots(&self, id: &str, snapshotter: &str) -> Result<Vec<String>> {
        self.enter("lease_snapshots", id)?;
        let s = self.state();
        let l = s.lease_listed(id)?;
        Ok(l.snapshots
            .iter()
            .filter(|(sn, _)| sn == snapshotter)
            .map(|(_, k)| k.clone())
            .collect())
    }

    async fn lease_snapshot(
        &self,
        id: &str,
        snapshotter: &str,
        key: &str,
        add: bool,
    ) -> Result<()> {
        self.enter("lease_snapshot", format!("{id} {key}"))?;
        let mut s = self.state();
        let l = s.leases.get_mut(id).ok_or_else(|| {
            ContainerdError::call(
                format!("update lease {id} with {key}"),
                Class::NotFound,
                "lease not found",
            )
        })?;
        let k = (snapshotter.to_string(), key.to_string());
        if add {
            l.snapshots.insert(k);
        } else {
            l.snapshots.remove(&k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
