//! Import: one source's import — its vocabulary (where it comes from, the options, the report,
//! the errors, the precedence question) and the two stations that do it for an archive:
//! [`archive`] reads it into the content store and plans its images, [`record`] labels and
//! leases the content and writes the image records, last. A `.txt` pull list is imported by
//! [`crate::pull::list`], which ends in the same record step; [`crate::service`] decides which
//! runs, and where blobs may be written.

pub mod archive;
pub mod record;
pub mod sidecar;

pub use archive::{run, store_planned};

use crate::archive::understand::{self, PlanOptions};
use crate::containerd::{ContainerdError, ImageTarget};
use crate::ingest::{Counters, IngestError};
use crate::labels;
use crate::store::layout::ContentRoot;
use crate::store::{StoreError, StoreKind};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How blobs reach containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Direct when containerd's content root is reachable and writable, else stream.
    Auto,
    /// Write into containerd's content root and claim by digest.
    Direct,
    /// Stream data through containerd's Content API.
    Stream,
}

impl std::str::FromStr for Mode {
    type Err = crate::error::UnknownName;

    fn from_str(s: &str) -> Result<Mode, Self::Err> {
        match s {
            "auto" => Ok(Mode::Auto),
            "direct" => Ok(Mode::Direct),
            "stream" => Ok(Mode::Stream),
            other => Err(crate::error::UnknownName::new(
                "mode",
                other,
                "auto, direct or stream",
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where the archive comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// Standard input.
    Stdin,
}

impl Source {
    /// How the archive is named in messages and labels.
    pub fn display_name(&self) -> String {
        match self {
            Source::File(p) => crate::escape::shown(&p).to_string(),
            Source::Stdin => "<stdin>".to_string(),
        }
    }

    /// The file's resolved path (what labels and records name), for a file.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Source::File(p) => Some(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
            Source::Stdin => None,
        }
    }
}

/// Options of one import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Platforms, names and index options.
    pub plan: PlanOptions,
    /// Extra image labels (`--label`).
    pub labels: BTreeMap<String, String>,
    /// Pin the images (default).
    pub pin: bool,
    /// How blobs travel.
    pub mode: Mode,
    /// Minimum expiry of the temporary import lease (it grows with the archive's size).
    pub lease_expiry: Duration,
    /// Set to abandon the import: reading stops, temporary files are removed, nothing is recorded.
    pub cancel: Arc<AtomicBool>,
    /// The content root the direct store writes into when containerd's introspection does not
    /// tell it: airlift's own store when containerd uses airlift as its content proxy plugin.
    pub content_root: Option<PathBuf>,
    /// Where a decoder's scratch files go (a spilled zstd window) when the store has no directory
    /// of its own: the state directory. Without either, the system's temporary directory.
    pub scratch_dir: Option<PathBuf>,
    /// A named pipe may be read as an archive (the command line's `<(zcat ...)`); the daemon
    /// reads regular files only.
    pub pipes: bool,
    /// The registry hosts directory (containerd's `certs.d`, hosts.toml files) the pulls of a
    /// pull list go through; containerd's default hosts when unset.
    pub hosts_dir: Option<PathBuf>,
    /// Unpack the images into this snapshotter (the platforms: [`crate::unpack::plan::policy`]
    /// of the import's).
    pub unpack: Option<String>,
    /// Verification at import: images it refuses are not imported.
    pub verify: Option<Arc<crate::verify::Gate>>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            plan: PlanOptions::default(),
            labels: BTreeMap::new(),
            pin: true,
            mode: Mode::Auto,
            lease_expiry: Duration::from_secs(3600),
            cancel: Arc::new(AtomicBool::new(false)),
            content_root: None,
            scratch_dir: None,
            pipes: false,
            hosts_dir: None,
            unpack: None,
            verify: None,
        }
    }
}

impl ImportOptions {
    /// The labels an image record of `archive` gets (see [`labels::image_labels`]).
    pub fn image_labels(&self, archive: Option<&Path>) -> BTreeMap<String, String> {
        labels::image_labels(self.pin, archive, &self.labels)
    }

    /// What to unpack into, when unpacking.
    pub fn unpack_options(&self) -> Option<crate::unpack::Options> {
        self.unpack
            .as_ref()
            .map(|snapshotter| crate::unpack::Options {
                snapshotter: snapshotter.clone(),
                platforms: crate::unpack::plan::policy(&self.plan.platforms),
            })
    }
}

/// How an import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Read and recorded: every image imported.
    Imported,
    /// Read and recorded, but some images failed.
    Partial,
    /// Not read: unchanged since an import whose record still stands.
    Unchanged,
    /// Not read: unchanged, and what containerd had lost of its record was restored from it.
    Repaired,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The archive.
    pub archive: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Which store the blobs went through; `None` when nothing was stored (not read).
    pub mode: Option<StoreKind>,
    /// The images the archive provides (or, not read, the images of its record): created or
    /// updated, but for those in `shadowed`.
    pub images: Vec<ImageTarget>,
    /// Names the archive provides whose image records were left alone: another archive
    /// provides them and takes precedence (the daemon's rule for shared names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadowed: Vec<String>,
    /// Names a pull list left to an archive that takes precedence for them: not pulled (they
    /// are once that archive no longer provides them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub yielded: Vec<String>,
    /// Images that failed, each with its archive, entry and cause.
    pub failed: Vec<String>,
    /// Images skipped, with the reason.
    pub skipped: Vec<String>,
    /// Informational skips (other platforms under the host default).
    pub not_selected: Vec<String>,
    /// Images held only to serve other platforms (`serve_platforms`): recorded, pinned and
    /// held, not unpacked, and not counted as this node's (`airlift wait --image`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub served_only: Vec<String>,
    /// Served platforms an image has no manifest for in the archive (`IMAGE: PLATFORM, …`):
    /// nothing of it to serve to nodes of those platforms.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unserved: Vec<String>,
    /// What a repair restored (image records, pins, the lease).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
    /// Blobs written.
    pub blobs_written: u64,
    /// Blobs already present.
    pub blobs_present: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Archive bytes read.
    pub archive_bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// The archive lease holding its content, if any.
    pub lease: Option<String>,
    /// Every blob the imported images use.
    pub blobs: Vec<String>,
    /// What unpacking did, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpack: Option<crate::unpack::Report>,
    /// Images verification allowed, with what each met.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub verified: BTreeMap<String, Vec<String>>,
    /// Images verification refused, with why (each also in `failed`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, String>,
}

impl Report {
    /// The report of a source that was read: what the record step made of it, what the store
    /// counted, how many bytes of the source were read since `started`.
    pub fn new(
        archive: String,
        mode: StoreKind,
        recorded: record::Recorded,
        counters: &Counters,
        archive_bytes: u64,
        started: Instant,
        unpack: Option<crate::unpack::Report>,
    ) -> Report {
        let record::Recorded {
            images,
            shadowed,
            yielded,
            lease,
            blobs,
            failed,
            skipped,
            not_selected,
            served_only,
            unserved,
        } = recorded;
        Report {
            archive,
            outcome: if failed.is_empty() {
                Outcome::Imported
            } else {
                Outcome::Partial
            },
            mode: Some(mode),
            images,
            shadowed,
            yielded,
            failed,
            skipped,
            not_selected,
            served_only,
            unserved,
            repaired: Vec::new(),
            blobs_written: counters.blobs_written,
            blobs_present: counters.blobs_present,
            bytes_written: counters.bytes_written,
            archive_bytes,
            seconds: started.elapsed().as_secs_f64(),
            lease,
            blobs,
            unpack,
            verified: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// Takes in what verification decided.
    pub fn verifications(&mut self, decisions: Vec<crate::verify::Decision>) {
        for d in decisions {
            match d.outcome {
                Ok(met) => {
                    self.verified.insert(d.image, met);
                }
                Err(why) => {
                    self.refused.insert(d.image, why);
                }
            }
        }
    }

    /// Whether every image of the archive was imported (skips by platform are fine).
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Why unpacking failed (for some images), when it was asked for and did.
    pub fn unpack_error(&self) -> Option<String> {
        self.unpack.as_ref().and_then(crate::unpack::Report::error)
    }

    /// Whether the archive was read.
    pub fn was_read(&self) -> bool {
        matches!(self.outcome, Outcome::Imported | Outcome::Partial)
    }
}

/// Why an import stopped as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive could not be opened.
    #[error("{archive}: cannot open: {cause}")]
    Open {
        /// The archive.
        archive: String,
        /// Why.
        cause: std::io::Error,
    },
    /// Decoding, walking or storing failed.
    #[error("{archive}: {cause}")]
    Ingest {
        /// The archive.
        archive: String,
        /// Why.
        cause: IngestError,
    },
    /// The archive's structure is not understood.
    #[error("{archive}: {cause}")]
    Understand {
        /// The archive.
        archive: String,
        /// Why.
        cause: understand::UnderstandError,
    },
    /// containerd failed.
    #[error("{archive}: {cause}")]
    Containerd {
        /// The archive.
        archive: String,
        /// Why.
        cause: ContainerdError,
    },
    /// A blob could not be stored.
    #[error("{archive}: storing {what}: {cause}")]
    Store {
        /// The archive.
        archive: String,
        /// Which blob.
        what: String,
        /// Why.
        cause: StoreError,
    },
    /// The import was abandoned (the daemon shuts down): nothing is recorded, the next start
    /// resumes.
    #[error("{archive}: abandoned")]
    Abandoned {
        /// The archive.
        archive: String,
    },
    /// The archive's state record is of a newer state format: it is left alone, and so is the
    /// archive.
    #[error("{archive}: {cause}")]
    Refused {
        /// The archive.
        archive: String,
        /// The record refused.
        cause: crate::state::Refused,
    },
    /// Direct mode was asked for but is impossible.
    #[error("{archive}: direct mode unavailable: {cause}")]
    DirectUnavailable {
        /// The archive.
        archive: String,
        /// Why.
        cause: String,
    },
}

impl ImportError {
    /// Whether containerd failing (rather than the archive) stopped the import, so trying again
    /// once containerd answers may succeed.
    pub fn is_containerd_fault(&self) -> bool {
        match self {
            ImportError::Containerd { .. } => true,
            ImportError::Store { cause, .. } => matches!(cause, StoreError::Containerd(_)),
            ImportError::Ingest {
                cause: IngestError::Entry { cause, .. },
                ..
            } => matches!(cause, StoreError::Containerd(_)),
            _ => false,
        }
    }

    /// Whether the archive itself is at fault (unreadable, corrupt, not understood), so importing
    /// it again unchanged cannot succeed. Everything else (containerd, the local disk) may pass.
    pub fn is_archive_fault(&self) -> bool {
        match self {
            ImportError::Open { .. } | ImportError::Understand { .. } => true,
            ImportError::Ingest { cause, .. } => cause.is_archive_fault(),
            _ => false,
        }
    }
}

/// Who takes precedence for a name several archives provide: asked by the record step, once the
/// archive's images are known and just before their records are written.
pub trait Precedence: Send + Sync {
    /// The names among `images` whose records this import must leave alone, because another
    /// archive takes precedence for them. From this call on, the caller may count `images` as
    /// provided by this archive (an import that fails afterwards tells the caller so itself).
    fn claim(&self, images: &[ImageTarget]) -> BTreeSet<String>;

    /// Whether another archive takes precedence for `name` (asked of a pull list before its
    /// pull, which would write the record).
    fn yields(&self, _name: &str) -> bool {
        false
    }
}

/// Nobody else: every image record is written (`airlift import`).
pub struct Alone;

impl Precedence for Alone {
    fn claim(&self, _: &[ImageTarget]) -> BTreeSet<String> {
        BTreeSet::new()
    }
}

/// Where the import may write: a content root on this machine, or why there is none.
#[derive(Debug, Clone)]
pub enum Placement {
    /// containerd's (or airlift's own) content root, here.
    Local(ContentRoot),
    /// No content root here; why (for the direct-mode error and the log).
    Remote(String),
}

#[cfg(test)]
mod seed_tests;
#[cfg(test)]
mod tests;
