//! One source read and imported — an archive by [`crate::import`], a pull list by
//! [`crate::pull::list`] — tried again while containerd fails (when the connection waits for
//! it), and the record it leaves, kept once the caller has done what depends on the old one.

use super::connection::Patience;
use super::{Importer, Remember};
use crate::containerd::Client;
use crate::import::{self, ImportError, Precedence, Report, Source};
use crate::state::{Identity, Record};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Imports of one source tried again while containerd fails, before it counts as failed.
const CONTAINERD_RETRIES: u32 = 30;

/// The wait before trying an import that containerd failed again.
const RETRY_WAIT: Duration = Duration::from_millis(500);

/// One source to read.
pub struct Job<'a> {
    /// What to read.
    pub source: &'a Source,
    /// The file's identity, taken before reading it (a file source).
    pub identity: Option<Identity>,
    /// Its record before this import.
    pub previous: Option<&'a Record>,
    /// Receives the number of source bytes the running attempt has read.
    pub progress: Arc<AtomicU64>,
    /// Which image records to leave to other archives.
    pub precedence: &'a dyn Precedence,
}

/// An import that read its source, and the record it leaves (not yet kept: see
/// [`Importer::keep`]).
#[derive(Debug)]
pub struct Imported {
    /// What happened.
    pub result: Result<Report, ImportError>,
    /// The record to keep for it (`None`: none is kept, and a previous one goes if the import
    /// succeeded).
    pub record: Option<Record>,
    /// Source bytes read, by every attempt.
    pub read: u64,
    /// The file's path, for a file.
    path: Option<PathBuf>,
}

impl Importer {
    /// Reads and imports `job`'s source through `client`. With a connection that waits for
    /// containerd, an import that containerd fails is tried again once it answers (up to 30
    /// times); `None` when the work was abandoned meanwhile. Returns the connection the last
    /// attempt used.
    pub async fn import(&self, client: Client, job: &Job<'_>) -> Option<(Client, Imported)> {
        let connection = &self.connection;
        let patient = connection.patience() == Patience::Wait;
        let (mut client, mut attempt, mut read) = (client, 0, 0);
        loop {
            job.progress.store(0, Ordering::Relaxed);
            let result = self.read(&client, job).await;
            read += job.progress.load(Ordering::Relaxed);
            match &result {
                Err(e)
                    if e.is_containerd_fault()
                        && patient
                        && !connection.cancelled()
                        && attempt < CONTAINERD_RETRIES =>
                {
                    attempt += 1;
                    tracing::warn!(archive = %job.source.display_name(), error = %e, "containerd failed during the import; trying again");
                    connection.lost();
                    tokio::time::sleep(RETRY_WAIT).await;
                    client = connection.wait().await.ok()?;
                }
                _ => {
                    let path = job.source.path();
                    let record = match (&path, job.identity) {
                        (Some(path), Some(identity)) if self.records.is_some() => {
                            self.record_of(&client, path, identity, &result, job.previous)
                        }
                        _ => None,
                    };
                    let imported = Imported {
                        result,
                        record,
                        read,
                        path,
                    };
                    return Some((client, imported));
                }
            }
        }
    }

    /// One attempt: a pull list is pulled, anything else read as an archive into the content
    /// store this containerd allows.
    async fn read(&self, client: &Client, job: &Job<'_>) -> Result<Report, ImportError> {
        let progress = job.progress.clone();
        if let (Source::File(file), Some(path)) = (job.source, job.source.path()) {
            if crate::pull::list::is_list(file) {
                return crate::pull::list::run(client, &path, &self.options, job.precedence).await;
            }
        }
        let placement = self.placement(client).await;
        import::run(
            client,
            &placement,
            job.source,
            &self.options,
            progress,
            job.precedence,
        )
        .await
    }

    fn record_of(
        &self,
        client: &Client,
        path: &std::path::Path,
        identity: Identity,
        result: &Result<Report, ImportError>,
        previous: Option<&Record>,
    ) -> Option<Record> {
        match (result, self.remember) {
            (Ok(report), Remember::Everything) => Some(Record::after_import(
                path,
                identity,
                report,
                previous,
                &self.fingerprint(client),
            )),
            (Ok(report), Remember::Successes) if report.ok() => Some(Record::after_import(
                path,
                identity,
                report,
                previous,
                &self.fingerprint(client),
            )),
            // Abandoned at shutdown: nothing is recorded, the next start resumes.
            (Err(_), _) if self.connection.cancelled() => None,
            (Err(e), Remember::Everything) => Some(Record::after_failure(
                path,
                identity,
                &e.to_string(),
                e.is_archive_fault(),
                previous,
            )),
            _ => None,
        }
    }

    /// Keeps the record an import left (or, after a success that leaves none, removes the old
    /// one). Failures to write are logged: the source is then read again next time.
    pub fn keep(&self, imported: &Imported) {
        let (Some(records), Some(path)) = (&self.records, &imported.path) else {
            return;
        };
        let saved = match &imported.record {
            Some(r) => records.save(r),
            None if imported.result.is_ok() => records.remove(path),
            None => Ok(()),
        };
        if let Err(e) = saved {
            tracing::error!(archive = %crate::escape::shown(&path), error = %e, "could not save the state record");
        }
    }
}
