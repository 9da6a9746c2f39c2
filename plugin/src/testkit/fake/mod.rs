//! An in-memory containerd for unit tests: one namespace's blobs, leases, images, ingests and
//! snapshots, with containerd's semantics where airlift relies on them (shared content claimed by
//! digest, commits verified, `AlreadyExists` for present blobs, leases holding content and
//! snapshots, snapshots prepared on committed parents and committed under chain IDs, a differ
//! that reads the layer from the namespace and answers the digest of its uncompressed bytes, a
//! garbage collector that follows `containerd.io/gc.ref.content.*` and
//! `containerd.io/gc.ref.snapshot.*` labels and snapshot parents). Every call is recorded in
//! order, and calls can be made to fail with a chosen error class.
//!
//! Each service trait is implemented in a file of its own (`content.rs`, `leases.rs`,
//! `images.rs`, `snapshots.rs`, `events.rs`, `introspection.rs`, `transfer.rs`); the collector
//! is `gc.rs`. The semantics are those [`super::behaviour`] checks, against this fake and against
//! real containerd 2.x and 1.7 alike.

use crate::containerd::{
    Client, Containerd, ContainerdError, Event, ImageRecord, ImageTarget, Result, Scope,
    SnapshotKind,
};
use crate::digest::Digest;
use crate::error::Class;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc::UnboundedSender;

/// One call airlift made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The operation: the name of the service trait's method (`put_image`, `claim`, …).
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
    /// What [`Introspection::version`](crate::containerd::Introspection::version) answers (a 2.x by default).
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
        let topic = events::topic(&event);
        self.subscribers.retain(|(topics, tx)| {
            !topics.iter().any(|t| t.is_match(&topic)) || tx.send(Ok(event.clone())).is_ok()
        });
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

/// Sets `labels` in `into` as containerd stores labels: an empty value removes the label.
fn set_labels<'a>(
    into: &mut HashMap<String, String>,
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    for (k, v) in labels {
        if v.is_empty() {
            into.remove(k);
        } else {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// Labels as containerd stores them (none with an empty value).
fn stored_labels(labels: &crate::containerd::Labels) -> HashMap<String, String> {
    let mut out = HashMap::new();
    set_labels(&mut out, labels);
    out
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

    /// Reports `root` as the content root, where [`Content::claim`](crate::containerd::Content::claim) finds blobs on disk.
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

    /// What every call of `op` so far was about, in order.
    pub fn subjects(&self, op: &str) -> Vec<String> {
        let s = self.state();
        s.calls
            .iter()
            .filter(|c| c.op == op)
            .map(|c| c.subject.clone())
            .collect()
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
        gc::collect(&mut self.state())
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
            gc::collect(&mut s);
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

impl crate::testkit::behaviour::OtherClient for Fake {
    fn delete_image(&self, name: &str) {
        Fake::delete_image(self, name);
    }
}

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
}

mod content;
mod events;
mod gc;
mod images;
mod introspection;
mod leases;
mod snapshots;
mod transfer;

#[cfg(test)]
mod tests;
