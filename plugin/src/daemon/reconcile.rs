//! One archive at a time: import it when it is new or changed, release it when it is gone —
//! everything the daemon does for a path, serialised per path. Both end by making containerd
//! show what the archives now provide ([`Daemon::assert_name`]): a name an archive no longer
//! provides is re-pointed at its next provider or, when nobody provides it, unpinned.

use super::{Daemon, State};
use crate::import::Source;
use crate::service::{look, Job, Look};
use crate::state::{Identity, Record};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The daemon's answer to an import's [`crate::import::Precedence`] question.
struct Claim<'a> {
    daemon: &'a Daemon,
    path: &'a Path,
    identity: Identity,
}

impl crate::import::Precedence for Claim<'_> {
    fn claim(&self, images: &[crate::containerd::ImageTarget]) -> BTreeSet<String> {
        self.daemon.claim(self.path, self.identity, images)
    }

    fn yields(&self, name: &str) -> bool {
        self.daemon.yields(self.path, self.identity, name)
    }
}

/// The wait before trying a pull list's failed pulls again: doubling from the first, up to the
/// last.
const PULL_RETRY: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(300));

impl Daemon {
    /// After a pull list's import: when some pulls failed, the list is imported again after a
    /// wait that doubles with every failure in a row (images pulled already are pulled again
    /// quickly: their content is there).
    fn retry_pulls(self: &Arc<Self>, path: &Path, ok: bool) {
        let failures = {
            let mut all = self.pull_failures.lock().unwrap();
            if ok {
                all.remove(path);
                return;
            }
            let n = all.entry(path.to_path_buf()).or_insert(0);
            *n += 1;
            *n
        };
        let wait = PULL_RETRY
            .0
            .saturating_mul(1 << (failures - 1).min(16))
            .min(PULL_RETRY.1);
        tracing::info!(archive = %crate::escape::shown(&path), seconds = wait.as_secs(), "some pulls failed; trying the list again later");
        let (d, path) = (self.clone(), path.to_path_buf());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if !d.cancelled() {
                d.reconcile(&path, true).await;
            }
        });
    }

    /// `names` may have lost the archive that took precedence over a pull list's line: every
    /// list that left one of them to another archive is imported again (the line is pulled
    /// now, or left again if another archive still takes precedence).
    fn pull_what_was_yielded(self: &Arc<Self>, names: &BTreeSet<String>) {
        let lists: Vec<PathBuf> = self
            .yielded
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, yielded)| !yielded.is_disjoint(names))
            .map(|(p, _)| p.clone())
            .collect();
        for list in lists {
            tracing::info!(archive = %crate::escape::shown(&list), "an archive that took precedence over the list's images is gone; pulling them");
            let d = self.clone();
            tokio::spawn(async move {
                if !d.cancelled() {
                    d.reconcile(&list, true).await;
                }
            });
        }
    }

    /// Everything the daemon does for one path: import it if new or changed (or `force`),
    /// release it if gone (unless it came through an intake directory). Serialised per path.
    pub async fn reconcile(
        self: &Arc<Self>,
        path: &Path,
        force: bool,
    ) -> Option<super::ArchiveStatus> {
        let queued = self.enqueue(path);
        self.reconcile_queued(path, force, queued).await
    }

    /// [`Daemon::reconcile`] for a path already counted as queued (by `queued`, released once
    /// its import starts or nothing is to be done).
    pub(super) async fn reconcile_queued(
        self: &Arc<Self>,
        path: &Path,
        force: bool,
        queued: super::status::Queued,
    ) -> Option<super::ArchiveStatus> {
        let lock = self.path_lock(path);
        let _guard = lock.lock().await;
        // A record of a newer state format: nothing done, for the archive or its images.
        if let Some(refused) = self.records().refused(path) {
            tracing::error!("{refused}");
            self.refuse(path, &refused);
            return self.archive(path);
        }
        let record = self.archive(path).and_then(|a| a.record);
        match look(path, record.as_ref()) {
            // An intake archive's file goes once imported; its images stay until `forget`.
            Look::Gone if record.as_ref().is_some_and(|r| r.intake) => self.archive(path),
            Look::Gone => {
                if let Some(record) = record {
                    self.release(&record).await;
                }
                None
            }
            Look::Unchanged(_) if !force => self.archive(path),
            Look::Unchanged(identity) | Look::Changed(identity) => {
                self.import(path, identity, record, queued).await;
                self.archive(path)
            }
        }
    }

    /// Imports an archive, trying again while containerd is away.
    async fn import(
        self: &Arc<Self>,
        path: &Path,
        identity: Identity,
        previous: Option<Record>,
        queued: super::status::Queued,
    ) {
        self.set_state(path, State::Pending, None);
        // A pull list waits on registries, not on the disk: it takes no import slot, so an
        // unreachable registry never holds up an archive.
        let list = crate::pull::list::is_list(path);
        let _slot = if list {
            None
        } else {
            let Some(slot) = self.slots.acquire(queued.place).await else {
                return;
            };
            Some(slot)
        };
        // Counted as importing before it stops counting as queued: never neither.
        self.importing(1);
        drop(queued);
        let progress = self.start_progress(path, identity.size);
        self.set_state(path, State::Importing, None);
        let source = Source::File(path.to_path_buf());
        tracing::info!(archive = %crate::escape::shown(&path), "importing");
        // Names a newer archive provides are left to it (its content is held all the same).
        let precedence = Claim {
            daemon: self,
            path,
            identity,
        };
        let job = Job {
            source: &source,
            identity: Some(identity),
            previous: previous.as_ref(),
            progress,
            precedence: &precedence,
        };
        let imported = match self.connect().await {
            Some(client) => self.importer.import(client, &job).await,
            None => None,
        };
        if let Some((_, imported)) = &imported {
            self.bytes_read.fetch_add(imported.read, Ordering::Relaxed);
            // The names a list left to archives that take precedence: pulled once they go. (A
            // list that failed as a whole keeps what it left before.)
            if let (true, Ok(report)) = (list, &imported.result) {
                let mut all = self.yielded.lock().unwrap();
                if report.yielded.is_empty() {
                    all.remove(path);
                } else {
                    all.insert(path.to_path_buf(), report.yielded.iter().cloned().collect());
                }
            }
        }
        let Some((client, mut imported)) = imported.filter(|_| !self.cancelled()) else {
            self.importing(-1);
            // Shutting down: the next start resumes.
            self.set_state(path, State::Pending, None);
            if let Some(a) = self.inner.lock().unwrap().archives.get_mut(path) {
                a.provisional = None;
            }
            return;
        };
        let intake = self.cfg.is_intake(path);
        let ok = imported.result.as_ref().is_ok_and(|r| r.ok());
        if let Some(r) = &mut imported.record {
            r.intake = intake && ok;
        }
        let Some(record) = imported.record.clone() else {
            self.importing(-1);
            return;
        };
        match &imported.result {
            Ok(report) => {
                self.metrics.import_done(report);
                if report.ok() {
                    tracing::info!(archive = %crate::escape::shown(&path), images = report.images.len(), seconds = report.seconds, "imported");
                } else {
                    tracing::error!(archive = %crate::escape::shown(&path), error = %record.last_error, "some images of the archive failed");
                }
            }
            Err(e) => {
                self.metrics.import_failed();
                tracing::error!(error = %e, "import failed");
            }
        }
        let provisional = self.archive(path).and_then(|a| a.provisional);
        // The new record takes effect, then what changed is brought in line: names the archive
        // no longer provides (a partial failure keeps them in the record: nothing is dropped),
        // and names another archive now takes precedence for. The archive shows (and counts as)
        // importing until that is done: whoever sees it imported sees its names in line.
        self.set_state(path, State::Importing, Some(Some(record.clone())));
        let mut affected: BTreeSet<String> = previous
            .as_ref()
            .map(|p| record.dropped_from(p).into_iter().collect())
            .unwrap_or_default();
        match &imported.result {
            Ok(report) => affected.extend(report.shadowed.iter().cloned()),
            // A failed import may have written some image records: back to what the rule says.
            Err(_) => affected.extend(
                provisional
                    .iter()
                    .flat_map(|r| r.names().map(str::to_string)),
            ),
        }
        self.assert_names(&client, &affected, Some(path)).await;
        self.pull_what_was_yielded(&affected);
        self.set_state(path, State::of(&record), None);
        self.importing(-1);
        if list {
            // Refusals are not retried: the list's next change (or a restart) judges again, so a
            // refusal is logged once per change rather than at every retry.
            let only_refused = imported
                .result
                .as_ref()
                .is_ok_and(|r| r.failed.len() == r.refused.len());
            self.retry_pulls(path, ok || only_refused);
        }
        // Kept last: a crash before this imports the archive again, and brings it in line again.
        self.importer.keep(&imported);
        if record.intake {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!(archive = %crate::escape::shown(&path), "intake archive imported and deleted; its images stay until `airlift forget`")
                }
                Err(e) => {
                    tracing::warn!(archive = %crate::escape::shown(&path), error = %e, "could not delete the imported intake archive")
                }
            }
        }
    }

    /// The archive is gone (or forgotten): what it provided is re-pointed at the next provider
    /// or unpinned, and its lease released. Returns the images unpinned.
    pub async fn release(self: &Arc<Self>, record: &Record) -> Vec<String> {
        // Out of the daemon's view first, so that the rule no longer counts it.
        self.forget_state(&record.path);
        let names: BTreeSet<String> = record.names().map(str::to_string).collect();
        let Some(client) = self.connect().await else {
            return Vec::new();
        };
        let unpinned = self.assert_names(&client, &names, Some(&record.path)).await;
        self.yielded.lock().unwrap().remove(&record.path);
        self.pull_what_was_yielded(&names);
        fail::fail_point!("release", |_| crate::sys::crash());
        // The recorded lease, and the one named after the path (a failed first import may have
        // created it without recording it).
        let mut leases: BTreeSet<String> = record.lease.iter().cloned().collect();
        leases.insert(crate::labels::archive_lease(&record.path));
        for lease in &leases {
            if let Err(e) = client.delete_lease(lease, false).await {
                tracing::warn!(%lease, error = %e, "could not delete the archive lease");
            }
        }
        if let Err(e) = self.records().remove(&record.path) {
            tracing::warn!(archive = %crate::escape::shown(&record.path), error = %e, "could not remove the state record");
        }
        tracing::info!(archive = %crate::escape::shown(&record.path), "released");
        unpinned
    }

    /// Forgets an archive: unpins its images and releases its lease. Returns the images unpinned.
    pub async fn forget(self: &Arc<Self>, path: &Path) -> Option<Vec<String>> {
        let lock = self.path_lock(path);
        let _guard = lock.lock().await;
        let record = self.archive(path)?.record?;
        Some(self.release(&record).await)
    }
}
