//! What the daemon knows of each archive right now — its state, its record, the progress of a
//! running import — and the counts `airlift status` shows.

use super::Daemon;
use crate::state::{Outcome, Record};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Where an archive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for an import slot or for the file to settle.
    Pending,
    /// Being imported.
    Importing,
    /// Imported.
    Imported,
    /// The last import failed.
    Failed,
}

impl State {
    /// The state a record shows.
    pub fn of(record: &Record) -> State {
        match record.outcome {
            Outcome::Imported => State::Imported,
            Outcome::Failed => State::Failed,
        }
    }
}

/// What the daemon knows of one archive.
#[derive(Debug, Clone)]
pub struct ArchiveStatus {
    /// Its path.
    pub path: PathBuf,
    /// Its state.
    pub state: State,
    /// Its record, once imported or failed.
    pub record: Option<Record>,
    /// What a running import is about to record: from the moment it writes image records,
    /// what the archive provides (see [`crate::import::Precedence`]).
    pub provisional: Option<Record>,
    /// Bytes read by the running import.
    pub progress: Arc<AtomicU64>,
    /// Its size, when known.
    pub total: u64,
    /// Why the daemon leaves it alone: its record is of a newer state format
    /// ([`crate::state::Refused`]).
    pub refused: Option<String>,
}

/// An archive counted as waiting for its import (for `airlift status`), with its place in the
/// queue; dropped when the import starts or nothing is to be done.
pub struct Queued {
    daemon: Arc<Daemon>,
    /// Where it stands for an import slot.
    pub place: super::slots::Place,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.daemon.slots.unregister(self.place);
        let mut inner = self.daemon.inner.lock().unwrap();
        inner.queued = inner.queued.saturating_sub(1);
    }
}

/// The daemon's view of every archive.
#[derive(Default)]
pub(super) struct Inner {
    pub(super) archives: BTreeMap<PathBuf, ArchiveStatus>,
    pub(super) queued: u32,
    pub(super) importing: u32,
}

impl Daemon {
    /// (queued, importing, known archives).
    pub fn counts(&self) -> (u32, u32, u32) {
        let inner = self.inner.lock().unwrap();
        (inner.queued, inner.importing, inner.archives.len() as u32)
    }

    /// Every archive's status.
    pub fn archives(&self) -> Vec<ArchiveStatus> {
        self.inner
            .lock()
            .unwrap()
            .archives
            .values()
            .cloned()
            .collect()
    }

    /// One archive's status.
    pub fn archive(&self, path: &Path) -> Option<ArchiveStatus> {
        self.inner.lock().unwrap().archives.get(path).cloned()
    }

    /// Sets an archive's state and, when given, its record (`Some(None)` clears it).
    pub(super) fn set_state(&self, path: &Path, state: State, record: Option<Option<Record>>) {
        let mut inner = self.inner.lock().unwrap();
        let entry = inner
            .archives
            .entry(path.to_path_buf())
            .or_insert_with(|| ArchiveStatus {
                path: path.to_path_buf(),
                state,
                record: None,
                provisional: None,
                progress: Arc::new(AtomicU64::new(0)),
                total: 0,
                refused: None,
            });
        entry.state = state;
        entry.refused = None;
        if let Some(r) = record {
            entry.record = r;
            entry.provisional = None;
        }
        self.metrics
            .set_states(inner.archives.values().map(|a| a.state));
    }

    /// Shows `path` as failed because its record is of a newer state format: not imported, not
    /// released, its images and lease left as the newer airlift left them.
    pub(super) fn refuse(&self, path: &Path, refused: &crate::state::Refused) {
        let mut inner = self.inner.lock().unwrap();
        inner.archives.insert(
            path.to_path_buf(),
            ArchiveStatus {
                path: path.to_path_buf(),
                state: State::Failed,
                record: None,
                provisional: None,
                progress: Arc::new(AtomicU64::new(0)),
                total: 0,
                refused: Some(refused.to_string()),
            },
        );
        self.metrics
            .set_states(inner.archives.values().map(|a| a.state));
    }

    /// Forgets an archive.
    pub(super) fn forget_state(&self, path: &Path) {
        let mut inner = self.inner.lock().unwrap();
        inner.archives.remove(path);
        self.metrics
            .set_states(inner.archives.values().map(|a| a.state));
    }

    /// Loads recorded archives (at startup).
    pub(super) fn load(&self, records: &[Record]) {
        let mut inner = self.inner.lock().unwrap();
        for r in records {
            inner.archives.insert(
                r.path.clone(),
                ArchiveStatus {
                    path: r.path.clone(),
                    state: State::of(r),
                    record: Some(r.clone()),
                    provisional: None,
                    progress: Arc::new(AtomicU64::new(0)),
                    total: r.identity.size,
                    refused: None,
                },
            );
        }
        self.metrics
            .set_states(inner.archives.values().map(|a| a.state));
    }

    /// Counts `path` as waiting until the returned guard goes; its place in the queue is its
    /// priority class, then its turn (now).
    pub(super) fn enqueue(self: &Arc<Self>, path: &Path) -> Queued {
        self.inner.lock().unwrap().queued += 1;
        let turn = self
            .turns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let place = (self.priority_class(path), turn);
        self.slots.register(place);
        Queued {
            daemon: self.clone(),
            place,
        }
    }

    /// The index of the first `priority` pattern the file name of `path` matches (past the last
    /// when none does).
    pub(super) fn priority_class(&self, path: &Path) -> usize {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        self.priority
            .iter()
            .position(|p| p.is_match(&name))
            .unwrap_or(self.priority.len())
    }

    /// Records that `path` failed for `why`, keeping what it provides.
    pub(super) fn mark_failed(&self, path: &Path, why: &str) {
        let record = self.archive(path).and_then(|a| a.record).map(|mut r| {
            r.outcome = Outcome::Failed;
            r.last_error = why.to_string();
            r
        });
        if let Some(r) = &record {
            if let Err(e) = self.records().save(r) {
                tracing::error!(archive = %crate::escape::shown(&path), error = %e, "could not save the state record");
            }
        }
        self.set_state(path, State::Failed, record.map(Some));
    }

    /// The refusals of records of a newer state format (see [`Daemon::refuse`]).
    pub fn refused(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        inner
            .archives
            .values()
            .filter_map(|a| a.refused.clone())
            .collect()
    }

    /// Whether some image that comes from `path` is being restored.
    pub fn restoring(&self, path: &Path) -> bool {
        self.restoring_among(&self.repairs.pending(), &self.present_records(), path)
    }

    /// [`Daemon::restoring`] given the names being restored and the present records (taken
    /// once for many archives).
    pub(super) fn restoring_among(
        &self,
        pending: &[String],
        records: &[Record],
        path: &Path,
    ) -> bool {
        pending.iter().any(|n| {
            self.desired_among(records, n)
                .is_some_and(|d| d.archive == path)
        })
    }

    /// Whether `name` (normalised) comes from an archive that holds it only to serve other
    /// platforms (`serve_platforms`): this node runs none of its platforms.
    pub fn serving_only(&self, name: &str) -> bool {
        let records = self.present_records();
        self.desired_among(&records, name).is_some_and(|d| {
            records
                .iter()
                .any(|r| r.path == d.archive && r.serves_only(name))
        })
    }

    /// Which of `images` (references, normalised as containerd does) are not yet imported and
    /// pinned: provided by a present archive, and shown by containerd as that archive's (its
    /// target, its pins) — and one this node runs: an image held only to serve other platforms
    /// is never ready here. An invalid reference is an error naming it.
    pub async fn not_ready(
        &self,
        images: &[String],
    ) -> Result<Vec<String>, crate::reference::InvalidReference> {
        let mut names = Vec::new();
        for i in images {
            names.push(crate::reference::Reference::parse_normalized(i)?.to_string());
        }
        let client = self.importer.connection().connect().await.ok();
        let mut missing = Vec::new();
        for name in names {
            // Provided by a present archive, and containerd shows it as that archive's.
            let ready = !self.serving_only(&name)
                && match (&client, self.desired(&name)) {
                    (Some(c), Some(want)) => {
                        c.get_image(&name).await.ok().flatten().is_some_and(|have| {
                            crate::pins::decide(Some(&have), Some(&want), None)
                                == crate::pins::Change::Leave
                        })
                    }
                    _ => false,
                };
            if !ready {
                missing.push(name);
            }
        }
        Ok(missing)
    }

    /// The names whose repair is pending.
    pub(super) fn repairs_pending(&self) -> Vec<String> {
        self.repairs.pending()
    }

    /// Repairs done, and names whose repair is pending.
    pub fn repair_counts(&self) -> (std::collections::BTreeMap<&'static str, u64>, usize) {
        (self.repairs.counts(), self.repairs.pending().len())
    }

    /// Files the watcher has seen and not yet handed over.
    pub fn settling(&self) -> u32 {
        self.settling.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn importing(&self, delta: i32) {
        let mut inner = self.inner.lock().unwrap();
        inner.importing = inner.importing.saturating_add_signed(delta);
    }

    /// Resets an archive's progress for a new import of `total` bytes; returns the counter.
    pub(super) fn start_progress(&self, path: &Path, total: u64) -> Arc<AtomicU64> {
        let mut inner = self.inner.lock().unwrap();
        match inner.archives.get_mut(path) {
            Some(a) => {
                a.total = total;
                a.progress.store(0, std::sync::atomic::Ordering::Relaxed);
                a.progress.clone()
            }
            None => Arc::new(AtomicU64::new(0)),
        }
    }
}
