//! Startup: clean up what a crash left, release the archives that went while the daemon was
//! down, check (and repair) the unchanged ones from their records without reading them, import
//! the new and changed ones — then report ready.

use super::serve::wait_settled;
use super::Daemon;
use crate::state::verify::{Repair, Snapshot, Standing};
use crate::state::Identity;
use crate::store::layout::ContentRoot;
use std::path::PathBuf;
use std::sync::Arc;

impl Daemon {
    /// The archive files of the images directories, oldest modification first (name breaks ties).
    pub fn scan(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for dir in &self.cfg.images_dirs {
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
                        found.push((m.modified().ok(), name, path));
                    }
                }
            }
        }
        found.sort();
        found.into_iter().map(|(_, _, p)| p).collect()
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
        // Gone archives first: their images lose their pins (unless a present archive provides them).
        for r in records.iter().filter(|r| !r.path.exists()) {
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
                    match self
                        .importer
                        .standing(&client, r, &snapshot, Repair::Yes)
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
            // imported (still before ready) once it has stayed unchanged for the interval.
            let d = self.clone();
            tasks.spawn(async move {
                wait_settled(&path, settle).await;
                d.reconcile(&path, force).await
            });
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
