//! Recall: whether a source changed since its record ([`look`]), and an unchanged one answered
//! from its record when that still stands in containerd — restored from it when asked, no byte of
//! the source read ([`Importer::recall`], on [`crate::state::verify`]). The daemon's startup and
//! verifications and `airlift import`'s recall all ask here.

use super::Importer;
use crate::containerd::Client;
use crate::import::{Outcome, Report};
use crate::state::verify::{self, Fix, Repair, Snapshot, Standing};
use crate::state::{Identity, Record};
use std::path::Path;
use std::time::Instant;

/// What became of a file since its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// No regular file is there.
    Gone,
    /// The file the record was made of (or, for a record kept after a failure, the file that
    /// failed): nothing to read.
    Unchanged(Identity),
    /// New, changed, replaced or touched since (or no record): to be read.
    Changed(Identity),
}

/// Looks at `path` against its `record`.
pub fn look(path: &Path, record: Option<&Record>) -> Look {
    match Identity::of(path) {
        Err(_) => Look::Gone,
        Ok(id) if record.is_some_and(|r| r.identity == id) => Look::Unchanged(id),
        Ok(id) => Look::Changed(id),
    }
}

/// Whether a record stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recalled {
    /// Everything is as recorded.
    Stands,
    /// What containerd had lost was restored from the record.
    Repaired(Vec<Fix>),
    /// Something is missing and was not (or could not be) restored: the source must be read
    /// again. Why, in words.
    Lost(String),
}

impl Importer {
    /// Whether `record` stands in containerd as `snapshot` shows it, restoring what is missing
    /// with [`Repair::Yes`]; every repair is logged.
    pub async fn recall(
        &self,
        client: &Client,
        record: &Record,
        snapshot: &Snapshot,
        repair: Repair,
    ) -> Recalled {
        let standing = verify::check(
            client.as_ref(),
            record,
            &self.labels(&record.path),
            snapshot,
            repair,
        )
        .await;
        match standing {
            Standing::Stands => Recalled::Stands,
            Standing::Repaired(fixes) => {
                for f in &fixes {
                    tracing::info!(archive = %crate::escape::shown(&record.path), "repaired: {f}");
                }
                Recalled::Repaired(fixes)
            }
            Standing::Damaged(why) | Standing::Gone(why) => Recalled::Lost(why),
        }
    }

    /// What must be equal for a previous import to stand for this one: for the daemon, the
    /// verification settings and the served platforms (its other options are fixed by its
    /// configuration); the socket, the namespace and the options for `airlift import`
    /// (unpacking asked for now, not last time, imports again and unpacks).
    pub fn fingerprint(&self, client: &Client) -> String {
        // Verification is part of both: an import judged under other settings, or under none,
        // does not stand for one judged under these (the daemon imports such archives again at
        // startup).
        let verify = self
            .options
            .verify
            .as_ref()
            .map(|g| format!("|verify:{}", g.fingerprint()))
            .unwrap_or_default();
        // Serving other platforms stores content of theirs: an archive imported serving others
        // (or none) is imported again, which stores what is served now and lets go of the rest.
        // None served adds nothing, so records made before the setting existed stand.
        let serve = &self.options.plan.serve;
        let serve = if serve.is_none() {
            String::new()
        } else {
            format!("|serve:{serve:?}")
        };
        match self.remember {
            super::Remember::Everything => format!("{verify}{serve}"),
            super::Remember::Successes => format!(
                "{}|{}|{:?}|{:?}|{}|{:?}{verify}",
                crate::escape::shown(&client.address()),
                client.namespace(),
                self.options.plan,
                self.options.labels,
                self.options.pin,
                self.options.unpack
            ),
        }
    }

    /// The report of `record` when it stands for an import of the same file with the same
    /// options (restored as `repair` allows); `None`: the source must be read.
    pub(super) async fn recall_report(
        &self,
        client: &Client,
        record: &Record,
        repair: Repair,
        started: Instant,
    ) -> Option<Report> {
        if record.outcome != crate::state::Outcome::Imported
            || record.fingerprint != self.fingerprint(client)
        {
            return None;
        }
        let snapshot = Snapshot::take(client.as_ref()).await.ok()?;
        let (outcome, repaired) = match self.recall(client, record, &snapshot, repair).await {
            Recalled::Stands => (Outcome::Unchanged, Vec::new()),
            Recalled::Repaired(fixes) => (
                Outcome::Repaired,
                fixes.into_iter().map(|f| f.detail).collect(),
            ),
            Recalled::Lost(why) => {
                tracing::info!(archive = %crate::escape::shown(&record.path), "{why}; importing the archive again");
                return None;
            }
        };
        Some(recalled(record, outcome, repaired, started))
    }
}

/// The report of an archive answered from its record.
pub fn recalled(
    record: &Record,
    outcome: Outcome,
    repaired: Vec<String>,
    started: Instant,
) -> Report {
    Report {
        archive: crate::escape::shown(&record.path).to_string(),
        outcome,
        mode: None,
        images: record.images.clone(),
        shadowed: Vec::new(),
        yielded: Vec::new(),
        failed: Vec::new(),
        skipped: Vec::new(),
        not_selected: Vec::new(),
        served_only: record.served_only.clone(),
        unserved: Vec::new(),
        repaired,
        blobs_written: 0,
        blobs_present: record.blobs.len() as u64,
        bytes_written: 0,
        archive_bytes: 0,
        seconds: started.elapsed().as_secs_f64(),
        lease: record.lease.clone(),
        blobs: record.blobs.clone(),
        unpack: None,
        verified: Default::default(),
        refused: Default::default(),
    }
}
