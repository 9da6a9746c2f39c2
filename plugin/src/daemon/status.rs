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
    /// Bytes read by the running import.
    pub progress: Arc<AtomicU64>,
    /// Its size, when known.
    pub total: u64,
}

/// An archive counted as waiting for its import (for `airlift status`); dropped when the import
/// starts or nothing is to be done.
pub struct Queued(Arc<Daemon>);

impl Drop for Queued {
    fn drop(&mut self) {
        let mut inner = self.0.inner.lock().unwrap();
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
                progress: Arc::new(AtomicU64::new(0)),
                total: 0,
            });
        entry.state = state;
        if let Some(r) = record {
            entry.record = r;
        }
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
                    progress: Arc::new(AtomicU64::new(0)),
                    total: r.identity.size,
                },
            );
        }
        self.metrics
            .set_states(inner.archives.values().map(|a| a.state));
    }

    /// The image names provided by present archives other than `except`, with their archive.
    pub(super) fn providers(&self, except: &Path) -> std::collections::HashMap<String, PathBuf> {
        let inner = self.inner.lock().unwrap();
        let mut out = std::collections::HashMap::new();
        for a in inner.archives.values() {
            if a.path == except || !a.path.exists() {
                continue;
            }
            if let Some(r) = &a.record {
                for i in &r.images {
                    out.insert(i.name.clone(), a.path.clone());
                }
            }
        }
        out
    }

    /// Counts one archive as waiting until the returned guard goes.
    pub(super) fn enqueue(self: &Arc<Self>) -> Queued {
        self.inner.lock().unwrap().queued += 1;
        Queued(self.clone())
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
