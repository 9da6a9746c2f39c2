//! Recall: `airlift import` of an archive that has not changed since its last successful import
//! with the same options is answered from the record of that import, without reading the
//! archive — after checking that its images are still there (and pinned) and its lease holds.
//!
//! Records live in `<state_dir>/imports/`, apart from the daemon's: an archive imported from the
//! command line and deleted afterwards keeps its images.

use crate::containerd::Containerd;
use crate::daemon::records::{Identity, Outcome, Record, RecordedImage, Records};
use crate::import::{ImportOptions, ImportedImage, Report, LABEL_CRI_PINNED};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Remembered imports.
pub struct Recall {
    records: Records,
}

impl Recall {
    /// Opens `<state_dir>/imports`; `None` (no recall) when it cannot be created or written.
    pub fn open(state_dir: &Path) -> Option<Recall> {
        Records::open(&state_dir.join("imports"))
            .ok()
            .map(|records| Recall { records })
    }

    /// What must be equal for a previous import to stand for this one.
    pub fn fingerprint(client: &Containerd, opts: &ImportOptions) -> String {
        format!(
            "{}|{}|{:?}|{:?}|{}",
            client.address().display(),
            client.namespace(),
            opts.plan,
            opts.labels,
            opts.pin
        )
    }

    /// The record of `path`, if its last import with `fingerprint` stands: same file identity,
    /// every image present with its target (and pinned when pinning), the lease present.
    pub async fn check(
        &self,
        client: &Containerd,
        path: &Path,
        fingerprint: &str,
        pin: bool,
    ) -> Option<Report> {
        let started = Instant::now();
        let path = std::fs::canonicalize(path).ok()?;
        let record = self.records.get(&path)?;
        if record.outcome != Outcome::Imported
            || record.fingerprint != fingerprint
            || record.identity != Identity::of(&path).ok()?
        {
            return None;
        }
        let images: HashMap<String, crate::containerd::ImageRecord> = client
            .list_images(vec![])
            .await
            .ok()?
            .into_iter()
            .map(|i| (i.name.clone(), i))
            .collect();
        for want in &record.images {
            let have = images.get(&want.name)?;
            if have.digest != want.digest
                || (pin && have.labels.get(LABEL_CRI_PINNED).map(String::as_str) != Some("pinned"))
            {
                return None;
            }
        }
        if let Some(lease) = &record.lease {
            if client
                .list_leases(&format!("id=={lease}"))
                .await
                .ok()?
                .is_empty()
            {
                return None;
            }
        }
        Some(Report {
            archive: path.display().to_string(),
            mode: "unchanged".into(),
            images: record.images.iter().map(ImportedImage::from).collect(),
            failed: Vec::new(),
            skipped: Vec::new(),
            not_selected: Vec::new(),
            blobs_written: 0,
            blobs_present: record.blobs.len() as u64,
            bytes_written: 0,
            archive_bytes: 0,
            seconds: started.elapsed().as_secs_f64(),
            lease: record.lease.clone(),
            blobs: record.blobs.clone(),
        })
    }

    /// The identity to remember, taken before the import reads the file.
    pub fn identity(path: &Path) -> Option<(PathBuf, Identity)> {
        let path = std::fs::canonicalize(path).ok()?;
        let id = Identity::of(&path).ok()?;
        Some((path, id))
    }

    /// Remembers a fully successful import.
    pub fn remember(
        &self,
        path: PathBuf,
        identity: Identity,
        fingerprint: String,
        report: &Report,
    ) {
        if !report.ok() {
            let _ = self.records.remove(&path);
            return;
        }
        let record = Record {
            path,
            identity,
            outcome: Outcome::Imported,
            last_error: String::new(),
            images: report.images.iter().map(RecordedImage::from).collect(),
            blobs: report.blobs.clone(),
            lease: report.lease.clone(),
            bytes: report.archive_bytes,
            seconds: report.seconds,
            imported_at: 0,
            imports: 1,
            fingerprint,
        };
        if let Err(e) = self.records.save(&record) {
            tracing::debug!(error = %e, "could not remember the import");
        }
    }
}
