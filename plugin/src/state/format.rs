//! The state format: the number every record says, the first look at a record file that
//! tells it (and its archive) before the record is read as this airlift's, and the refusal of a
//! record of a newer format.

use super::Record;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The state format this airlift writes, and the newest it reads. It changes only when an
/// airlift that reads the previous one would misread a record written in the new one; a field
/// added that older airlifts may ignore (serde skips fields it does not know, and every field
/// added since format 1 has a default) keeps it.
pub const FORMAT: u32 = 1;

/// A record written in a newer state format than this airlift reads: left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The record's file.
    pub file: PathBuf,
    /// The archive it is the record of, as far as the record says.
    pub archive: Option<PathBuf>,
    /// Its format.
    pub format: u32,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "state record {} is in state format {}, and this airlift ({}) reads formats up to {}: \
             a newer airlift wrote it. It is left as it is, and so are its archive's images, pins \
             and lease: run that airlift again, or remove the record to have this one import the \
             archive afresh",
            crate::escape::shown(&self.file),
            self.format,
            env!("CARGO_PKG_VERSION"),
            FORMAT
        )
    }
}

impl std::error::Error for Refused {}

/// What a record file's first look tells: its format and archive, before the record is read
/// as this airlift's.
#[derive(Deserialize)]
struct Header {
    format: Option<u32>,
    path: Option<String>,
}

/// A record as written: its format first.
#[derive(Serialize)]
pub(super) struct Written<'a> {
    pub(super) format: u32,
    #[serde(flatten)]
    pub(super) record: &'a Record,
}

/// Why a record file was not read.
#[derive(Debug)]
pub(super) enum Unread {
    /// It is of a newer format.
    Refused(Refused),
    /// It cannot be read (or is not a record).
    Broken(String),
}

/// Reads the record in `file`; `Ok(None)` when there is no such file.
pub(super) fn read(file: &Path) -> Result<Option<Record>, Unread> {
    let bytes = match fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Unread::Broken(e.to_string())),
    };
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|e| Unread::Broken(e.to_string()))?;
    match header.format.unwrap_or(1) {
        0 => Err(Unread::Broken("state format 0 does not exist".into())),
        format if format > FORMAT => Err(Unread::Refused(Refused {
            file: file.to_path_buf(),
            archive: header.path.as_deref().and_then(crate::escape::unescape),
            format,
        })),
        _ => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Unread::Broken(e.to_string())),
    }
}
