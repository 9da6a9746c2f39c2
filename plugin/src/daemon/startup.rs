//! Startup: clean up what a crash left, release the archives that went while the daemon was
//! down, check (and repair) the unchanged ones from their records without reading them, import
//! the new and changed ones — then report ready.

use super::serve::{is_settled, wait_settled};
use super::Daemon;
use crate::state::verify::{Repair, Snapshot, Standing};
use crate::state::Identity;
use crate::store::layout::ContentRoot;
use std::path::PathBuf;
use std::sync::Arc;

impl Daemon {
    /// The archive files of the images and intake directories in the order they are imported:
    /// those matching a `priority` pattern first (by the first pattern they match), then oldest
    /// modification first (name breaks ties).
    pub fn scan(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for dir in &self.cfg.watched_dirs() {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let path = e.path();
                if super::ignored(&name) {
                    continue;
                }
                if let Ok(m) = std::fs::metadata(&path) {
                    if m.is_file() {
                        found.push((self.priority_class(&path), m.modified().ok(), name, path));
                    }
                }
            }
        }
        found.sort();
        found.into_iter().map(|(_, _, _, p)| p).collect()
    }

    /// Startup: clean up after a crash, reconcile every archive, then report ready.
    pub async fn startup(self: &Arc<Self>) {
        let Some(client) = self.connect().await else {
            return;
        };
        let root = match &self.cfg.content_proxy.root {
            Some(r) => Some(ContentRoot::new(r)),
            None => client
                .content_root()
                .await
                .ok()
                .flatten()
                .map(ContentRoot::new),
        };
        if let Some(root) = root {
            crate::leftovers::clean(client.as_ref(), &root).await;
        }

        let records = self.records().load_all().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the state directory");
            Vec::new()
        });
        self.load(&records);
        // Gone archives first: what they provided is re-pointed at another provider or unpinned.
        // (An intake archive's file is gone by design: it stays until `airlift forget`.)
        for r in records.iter().filter(|r| !r.is_present()) {
            self.release(r).await;
        }
        let snapshot = Snapshot::take(client.as_ref()).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list images and leases");
            Snapshot::default()
        });
        let mut tasks = tokio::task::JoinSet::new();
        let settle = self.cfg.settle();
        for path in self.scan() {
            let record = self.archive(&path).and_then(|a| a.record);
            let identity = Identity::of(&path).ok();
            let mut force = false;
            if let (Some(r), Some(id)) = (&record, identity) {
                if r.identity == id {
                    if r.intake {
                        // Imported before a crash kept it from being deleted: finish that.
                        let _ = std::fs::remove_file(&path);
                    }
                    match self
                        .importer
                        .standing(&client, &self.won(r), &snapshot, Repair::Yes)
                        .await
                    {
                        Standing::Stands => continue,
                        Standing::Repaired(what) => {
                            for w in &what {
                                tracing::info!(archive = %path.display(), "repaired: {w}");
                            }
                            continue;
                        }
                        Standing::Damaged(why) | Standing::Gone(why) => {
                            tracing::info!(archive = %path.display(), "{why}; importing the archive again");
                            force = true;
                        }
                    }
                }
            }
            // A file modified within the settle interval may still be being written: it is
            // imported (still before ready) once it has stayed unchanged for the interval, and
            // takes its place in the queue then; the others take theirs now, in scan order.
            let d = self.clone();
            let queued = is_settled(&path, settle).then(|| self.enqueue(&path));
            tasks.spawn(async move {
                let queued = match queued {
                    Some(q) => q,
                    None => {
                        wait_settled(&path, settle).await;
                        d.enqueue(&path)
                    }
                };
                d.reconcile_queued(&path, force, queued).await
            });
        }
        // Intake archives whose files are gone (by design) are checked from their records.
        for r in self.present_records().iter().filter(|r| !r.path.exists()) {
            match self
                .importer
                .standing(&client, &self.won(r), &snapshot, Repair::Yes)
                .await
            {
                Standing::Stands => {}
                Standing::Repaired(what) => {
                    for w in &what {
                        tracing::info!(archive = %r.path.display(), "repaired: {w}");
                    }
                }
                Standing::Damaged(why) | Standing::Gone(why) => {
                    tracing::error!(archive = %r.path.display(), %why, "content of an intake archive is gone: drop the archive again to restore its images");
                    self.mark_failed(
                        &r.path,
                        &format!("{why}; the archive was deleted after its import: drop it again"),
                    );
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        if self.cancelled() {
            return;
        }
        self.startup.send_replace(true);
        let (_, _, n) = self.counts();
        tracing::info!(archives = n, "startup import done; ready");
        if self.cfg.content_proxy.root.is_none() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        } else {
            let _ = sd_notify::notify(
                false,
                &[sd_notify::NotifyState::Status("startup import done")],
            );
        }
    }
}
