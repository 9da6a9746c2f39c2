//! Service: the one way an import happens, whoever asks — `airlift import`, the daemon, the
//! daemon's `Import` API call. It decides where blobs may be written (the content root
//! containerd reports, airlift's own store when containerd uses it as its content proxy, or
//! none), answers an unchanged archive from its record when that record still stands
//! ([`crate::state::verify`]), runs [`crate::import`] otherwise, and keeps the record.

use crate::containerd::Client;
use crate::import::{self, ImportError, ImportOptions, Mode, Outcome, Placement, Report, Source};
use crate::state::verify::{self, Repair, Snapshot, Standing};
use crate::state::{Identity, Outcome as RecordOutcome, Record, Records};
use crate::store::layout::ContentRoot;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Which records an importer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remember {
    /// Only fully successful imports, with the options they were made with: `airlift import`
    /// recalls an unchanged archive imported again with the same options.
    Successes,
    /// Every outcome, failures too (tried again when the file changes): the daemon, whose
    /// options are fixed by its configuration.
    Everything,
}

/// One import request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Read the archive even when its record stands.
    pub force: bool,
    /// Restore what containerd lost of a standing record instead of reading the archive again.
    pub repair: Repair,
    /// Receives the number of archive bytes read so far.
    pub progress: Arc<AtomicU64>,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            force: false,
            repair: Repair::No,
            progress: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// An import that read the archive, and the record it leaves (not yet kept: see
/// [`Importer::keep`]).
#[derive(Debug)]
pub struct Imported {
    /// What happened.
    pub result: Result<Report, ImportError>,
    /// The record to keep for it (`None`: none is kept, and a previous one goes if the import
    /// succeeded).
    pub record: Option<Record>,
    /// The archive's path, for a file.
    path: Option<PathBuf>,
}

/// Imports archives with one set of options, keeping records in one place.
pub struct Importer {
    options: ImportOptions,
    records: Option<Records>,
    remember: Remember,
    /// Where imports write, once known (per containerd socket).
    placement: Mutex<Option<(PathBuf, Placement)>>,
}

impl Importer {
    /// An importer with `options`, keeping records in `records` (none: nothing recalled).
    pub fn new(options: ImportOptions, records: Option<Records>, remember: Remember) -> Importer {
        Importer {
            options,
            records,
            remember,
            placement: Mutex::new(None),
        }
    }

    /// The options.
    pub fn options(&self) -> &ImportOptions {
        &self.options
    }

    /// The records.
    pub fn records(&self) -> Option<&Records> {
        self.records.as_ref()
    }

    /// The labels the images of `archive` get.
    pub fn labels(&self, archive: &Path) -> BTreeMap<String, String> {
        self.options.image_labels(Some(archive))
    }

    /// What must be equal for a previous import to stand for this one.
    fn fingerprint(&self, client: &Client) -> String {
        match self.remember {
            Remember::Everything => String::new(),
            // Unpacking asked for now, not last time, imports again (and unpacks).
            Remember::Successes => format!(
                "{}|{}|{:?}|{:?}|{}|{:?}",
                crate::escape::shown(&client.address()),
                client.namespace(),
                self.options.plan,
                self.options.labels,
                self.options.pin,
                self.options.unpack
            ),
        }
    }

    /// Where imports through `client` may write: resolved once per containerd.
    pub async fn placement(&self, client: &Client) -> Placement {
        if let Some((address, p)) = &*self.placement.lock().unwrap() {
            if address == client.address() {
                return p.clone();
            }
        }
        let (placement, lasting) = self.resolve(client).await;
        if lasting {
            *self.placement.lock().unwrap() =
                Some((client.address().to_path_buf(), placement.clone()));
        }
        placement
    }

    /// The placement, and whether it will not change while containerd runs.
    async fn resolve(&self, client: &Client) -> (Placement, bool) {
        if let Some(root) = &self.options.content_root {
            return (Placement::Local(ContentRoot::new(root)), true);
        }
        match client.content_root().await {
            Ok(Some(root)) => (Placement::Local(ContentRoot::new(root)), true),
            Ok(None) if self.options.mode == Mode::Stream => (
                Placement::Remote("containerd does not report a content root".into()),
                true,
            ),
            Ok(None) => (proxy_placement(client).await, true),
            Err(e) => (Placement::Remote(e.to_string()), false),
        }
    }

    /// Whether `record` stands in containerd as `snapshot` shows it (see [`verify::check`]).
    pub async fn standing(
        &self,
        client: &Client,
        record: &Record,
        snapshot: &Snapshot,
        repair: Repair,
    ) -> Standing {
        verify::check(
            client.as_ref(),
            record,
            &self.labels(&record.path),
            snapshot,
            repair,
        )
        .await
    }

    /// Reads and imports `source`: `previous` is what was recorded before, `identity` the
    /// file's identity taken before reading it; `precedence` says which image records to leave
    /// to other archives. The record is returned, to be kept with [`Importer::keep`] once what depends on
    /// the old one is done.
    pub async fn import(
        &self,
        client: &Client,
        source: &Source,
        identity: Option<Identity>,
        previous: Option<&Record>,
        progress: Arc<AtomicU64>,
        precedence: &dyn import::Precedence,
    ) -> Imported {
        let placement = self.placement(client).await;
        let result = import::run(
            client,
            &placement,
            source,
            &self.options,
            progress,
            precedence,
        )
        .await;
        let path = source.path();
        let record = match (&path, identity) {
            (Some(path), Some(identity)) if self.records.is_some() => {
                self.record_of(client, path, identity, &result, previous)
            }
            _ => None,
        };
        Imported {
            result,
            record,
            path,
        }
    }

    fn record_of(
        &self,
        client: &Client,
        path: &Path,
        identity: Identity,
        result: &Result<Report, ImportError>,
        previous: Option<&Record>,
    ) -> Option<Record> {
        match (result, self.remember) {
            (Ok(report), Remember::Everything) => {
                Some(Record::after_import(path, identity, report, previous, ""))
            }
            (Ok(report), Remember::Successes) if report.ok() => Some(Record::after_import(
                path,
                identity,
                report,
                previous,
                &self.fingerprint(client),
            )),
            // Abandoned at shutdown: nothing is recorded, the next start resumes.
            (Err(_), _)
                if self
                    .options
                    .cancel
                    .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                None
            }
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
    /// one). Failures to write are logged: the archive is then imported again next time.
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

    /// The whole flow of `airlift import` and of the API: an unchanged file whose record stands
    /// is answered from it (repaired, with [`Repair::Yes`]), anything else is read and imported.
    pub async fn run(
        &self,
        client: &Client,
        source: &Source,
        req: &Request,
    ) -> Result<Report, ImportError> {
        let started = Instant::now();
        let path = source.path();
        let identity = path.as_deref().and_then(|p| Identity::of(p).ok());
        let previous = match (&self.records, &path) {
            (Some(records), Some(p)) => records.get(p),
            _ => None,
        };
        if let (Some(prev), Some(id), false) = (&previous, identity, req.force) {
            if prev.identity == id
                && prev.outcome == RecordOutcome::Imported
                && prev.fingerprint == self.fingerprint(client)
            {
                if let Some(report) = self.recall(client, prev, req.repair, started).await {
                    return Ok(report);
                }
            }
        }
        let imported = self
            .import(
                client,
                source,
                identity,
                previous.as_ref(),
                req.progress.clone(),
                &import::Alone,
            )
            .await;
        self.keep(&imported);
        imported.result
    }

    async fn recall(
        &self,
        client: &Client,
        record: &Record,
        repair: Repair,
        started: Instant,
    ) -> Option<Report> {
        let snapshot = Snapshot::take(client.as_ref()).await.ok()?;
        let (outcome, repaired) = match self.standing(client, record, &snapshot, repair).await {
            Standing::Stands => (Outcome::Unchanged, Vec::new()),
            Standing::Repaired(what) => {
                for w in &what {
                    tracing::info!(archive = %crate::escape::shown(&record.path), "repaired: {w}");
                }
                (
                    Outcome::Repaired,
                    what.iter().map(|w| w.detail.clone()).collect(),
                )
            }
            Standing::Damaged(why) | Standing::Gone(why) => {
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
        failed: Vec::new(),
        skipped: Vec::new(),
        not_selected: Vec::new(),
        repaired,
        blobs_written: 0,
        blobs_present: record.blobs.len() as u64,
        bytes_written: 0,
        archive_bytes: 0,
        seconds: started.elapsed().as_secs_f64(),
        lease: record.lease.clone(),
        blobs: record.blobs.clone(),
        unpack: None,
    }
}

/// When containerd's content store is airlift (a content proxy plugin), the store's directory as
/// the serving daemon reports it: imports then write there directly, as into containerd's own
/// content root.
async fn proxy_placement(client: &Client) -> Placement {
    let none = || {
        Placement::Remote(
            "containerd does not report a content root (is its content store a proxy plugin?)"
                .into(),
        )
    };
    let Ok(Some(address)) = client.content_proxy_address().await else {
        return none();
    };
    let Ok(mut api) = crate::api::connect(&address).await else {
        return none();
    };
    match api.status(crate::api::proto::StatusRequest {}).await {
        Ok(s) if !s.get_ref().content_proxy_root.is_empty() => {
            Placement::Local(ContentRoot::new(&s.into_inner().content_proxy_root))
        }
        _ => {
            tracing::info!(address = %crate::escape::shown(&address), "the content proxy plugin does not report its store");
            none()
        }
    }
}

#[cfg(test)]
mod tests;
