//! Service: the one import flow, whoever asks — `airlift import`, the daemon (its startup, its
//! watcher, its verifications) and through it the daemon's `Import` API call — for archives and
//! pull lists alike. It owns every step of a source's journey around the import itself:
//!
//! - [`connection`]: containerd reached — one attempt, or waited for with backoff;
//! - [`placement`]: where blobs may be written, resolved once per containerd, and the cleanup of
//!   what dead airlift processes left there;
//! - [`recall`]: whether a source changed since its record, and an unchanged one answered from
//!   its record when that still stands (restored from it when asked) — no byte of it read;
//! - [`job`]: the import or pull, tried again while containerd fails, and the record it leaves;
//! - [`options`]: the import options, built in one place from flags or the configuration.
//!
//! [`Importer::run`] is the whole flow of one request (`airlift import`); the daemon calls the
//! steps itself, between its own (import slots, the rule for names several archives provide,
//! repairs), through the same [`Importer`].

pub mod connection;
pub mod job;
pub mod options;
pub mod placement;
pub mod recall;

pub use connection::{Connection, Connector, Patience, Socket};
pub use job::{Imported, Job};
pub use recall::{look, recalled, Look, Recalled};

use crate::containerd::Client;
use crate::import::{Alone, ImportError, ImportOptions, Placement, Report, Source};
use crate::state::verify::Repair;
use crate::state::Records;
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

/// One request of [`Importer::run`].
#[derive(Debug, Clone)]
pub struct Request {
    /// Read the source even when its record stands.
    pub force: bool,
    /// Restore what containerd lost of a standing record instead of reading the source again.
    pub repair: Repair,
    /// Receives the number of source bytes read so far.
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

/// Imports sources with one set of options through one connection, keeping records in one
/// place.
pub struct Importer {
    options: ImportOptions,
    records: Option<Records>,
    remember: Remember,
    connection: Connection,
    /// Where imports write, once known (per containerd socket).
    placement: Mutex<Option<(PathBuf, Placement)>>,
}

impl Importer {
    /// An importer with `options`, reaching containerd through `connection` and keeping records
    /// in `records` (none: nothing recalled).
    pub fn new(
        options: ImportOptions,
        records: Option<Records>,
        remember: Remember,
        connection: Connection,
    ) -> Importer {
        Importer {
            options,
            records,
            remember,
            connection,
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

    /// The way to containerd.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The labels the images of `archive` get.
    pub fn labels(&self, archive: &Path) -> BTreeMap<String, String> {
        self.options.image_labels(Some(archive))
    }

    /// The whole flow of one request (`airlift import`): containerd reached, what dead processes
    /// left cleaned up, an unchanged file whose record stands answered from it (restored, with
    /// [`Repair::Yes`]), anything else read and imported and its record kept, and the cleanup
    /// again (a request a dying process had in flight may land after the first look).
    pub async fn run(&self, source: &Source, req: &Request) -> Result<Report, ImportError> {
        let started = Instant::now();
        let client = self
            .connection
            .connect()
            .await
            .map_err(|cause| ImportError::Containerd {
                archive: source.display_name(),
                cause,
            })?;
        self.clean_leftovers(&client).await;
        let result = self.recall_or_import(&client, source, req, started).await;
        self.clean_leftovers(&client).await;
        result
    }

    async fn recall_or_import(
        &self,
        client: &Client,
        source: &Source,
        req: &Request,
        started: Instant,
    ) -> Result<Report, ImportError> {
        let path = source.path();
        // A record of a newer state format: neither the archive nor the record is touched.
        if let (Some(records), Some(p)) = (&self.records, &path) {
            if let Some(cause) = records.refused(p) {
                return Err(ImportError::Refused {
                    archive: source.display_name(),
                    cause,
                });
            }
        }
        let previous = match (&self.records, &path) {
            (Some(records), Some(p)) => records.get(p),
            _ => None,
        };
        let identity = match path.as_deref().map(|p| look(p, previous.as_ref())) {
            Some(Look::Unchanged(id)) => {
                let prev = previous.as_ref().expect("unchanged from a record");
                if !req.force {
                    if let Some(report) =
                        self.recall_report(client, prev, req.repair, started).await
                    {
                        return Ok(report);
                    }
                }
                Some(id)
            }
            Some(Look::Changed(id)) => Some(id),
            Some(Look::Gone) | None => None,
        };
        let job = Job {
            source,
            identity,
            previous: previous.as_ref(),
            progress: req.progress.clone(),
            precedence: &Alone,
        };
        let Some((_, imported)) = self.import(client.clone(), &job).await else {
            return Err(ImportError::Abandoned {
                archive: source.display_name(),
            });
        };
        self.keep(&imported);
        imported.result
    }
}

#[cfg(test)]
mod tests;
