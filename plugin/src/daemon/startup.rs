//! Startup: clean up what a crash left, release the archives that went while the daemon was
//! down, check (and repair) the unchanged ones from their records without reading them, import
//! the new and changed ones — then report ready.

use super::serve::{is_settled, wait_settled};
use super::Daemon;
use crate::service::{look, Look, Recalled};
use crate::state::verify::{Repair, Snapshot};
use std::path::PathBuf;
use std::sync::Arc;

/// An entry of a watched directory that is not an archive: what it is, as `airlift ls` says it.
struct Ignored(String);

impl Daemon {
    /// The archive files of the images and intake directories in the order they are imported:
    /// those matching a `priority` pattern first (by the first pattern they match), then oldest
    /// modification first (name breaks ties).
    pub fn scan(&self) -> Vec<PathBuf> {
        let mut found: Vec<_> = self
            .entries()
            .filter_map(|(name, path, m)| {
                let m = m.ok()?;
                Some((self.priority_class(&path), m.modified().ok(), name, path))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, _, _, p)| p).collect()
    }

    /// The entries of the images and intake directories that are neither archives nor
    /// directories (FIFOs, devices, sockets, symbolic links to one or to nothing), with what
    /// each is: shown by `airlift ls`, never opened.
    pub fn not_archives(&self) -> Vec<(PathBuf, String)> {
        let mut found: Vec<_> = self
            .entries()
            .filter_map(|(_, path, m)| Some((path, m.err()?.0)))
            .collect();
        found.sort();
        found
    }

    /// The entries of the watched directories not ignored by name, each with its metadata if it
    /// is a regular file (following symbolic links), or else what it is; directories left out.
    fn entries(
        &self,
    ) -> impl Iterator<Item = (String, PathBuf, Result<std::fs::Metadata, Ignored>)> {
        self.cfg
            .watched_dirs()
            .into_iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if super::ignored(&name) {
                    return None;
                }
                let path = e.path();
                let link = std::fs::symlink_metadata(&path).ok()?;
                let what = match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => Ok(m),
                    Ok(m) if m.is_dir() => return None,
                    Ok(m) => {
                        let kind = crate::sys::kind_of(rustix::fs::FileType::from_raw_mode(
                            std::os::unix::fs::MetadataExt::mode(&m),
                        ));
                        Err(Ignored(if link.is_symlink() {
                            format!("a symbolic link to {kind}, not a regular file; ignored")
                        } else {
                            format!("{kind}, not a regular file; ignored")
                        }))
                    }
                    Err(_) if link.is_symlink() => {
                        Err(Ignored("a symbolic link to nothing; ignored".to_string()))
                    }
                    Err(_) => return None,
                };
                Some((name, path, what))
            })
    }

    /// Startup: clean up after a crash, reconcile every archive, then report ready.
    pub async fn startup(self: &Arc<Self>) {
        let Some(client) = self.connect().await else {
            return;
        };
        self.importer.clean_leftovers(&client).await;

        let loaded = self.records().load_all().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the state directory");
            Default::default()
        });
        // Records of a newer state format: shown as failed, their archives left alone.
        for r in &loaded.refused {
            self.refuse(r.archive.as_deref().unwrap_or(&r.file), r);
        }
        let records = loaded.records;
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
            let mut force = false;
            let judged_otherwise = record
                .as_ref()
                .is_some_and(|r| r.fingerprint != self.importer.fingerprint(&client));
            if judged_otherwise {
                tracing::info!(archive = %crate::escape::shown(&path), "imported under other verification or serve_platforms settings; importing the archive again");
                force = true;
            } else if let (Some(r), Look::Unchanged(_)) = (&record, look(&path, record.as_ref())) {
                if r.intake {
                    // Imported before a crash kept it from being deleted: finish that.
                    let _ = std::fs::remove_file(&path);
                }
                match self
                    .importer
                    .recall(&client, &self.won(r), &snapshot, Repair::Yes)
                    .await
                {
                    Recalled::Stands => continue,
                    Recalled::Repaired(fixes) => {
                        self.count_repairs(&fixes);
                        continue;
                    }
                    Recalled::Lost(why) => {
                        tracing::info!(archive = %crate::escape::shown(&path), "{why}; importing the archive again");
                        force = true;
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
            let recalled = self
                .importer
                .recall(&client, &self.won(r), &snapshot, Repair::Yes)
                .await;
            if let Recalled::Lost(why) = recalled {
                tracing::error!(archive = %crate::escape::shown(&r.path), %why, "content of an intake archive is gone: drop the archive again to restore its images");
                self.mark_failed(
                    &r.path,
                    &format!("{why}; the archive was deleted after its import: drop it again"),
                );
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
