//! The hosts directory on disk: writing the planned `hosts.toml` files, each atomically
//! ([`crate::sys::write_atomic`]), keeping what they replace, and taking them away again.
//!
//! - A file airlift did not write (no [`HEADER`] first line) is copied to
//!   `hosts.toml.airlift-backup` beside it before it is replaced; a file airlift wrote is simply
//!   replaced, and one whose text is already what would be written is not touched (re-running
//!   is idempotent: no new backup, no new mtime).
//! - A file airlift wrote for a registry no longer planned goes, as with `--remove`: its backup
//!   is renamed back over it, or, with no backup, it is deleted (and its directory, if empty).
//! - A file without the header is never deleted or changed by `--remove`.
//!
//! One writer at a time: the hosts directory itself is locked (`flock` on the directory, no
//! file added to it), so `airlift serve` starting and `airlift mirrors` cannot interleave.

use super::MirrorError;
use crate::hosts::write::HEADER;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The name of the file a replaced `hosts.toml` is kept in, beside it.
pub const BACKUP: &str = "hosts.toml.airlift-backup";

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Written where there was none.
    Created,
    /// Someone else's file was kept in the backup and replaced.
    Replaced,
    /// An earlier airlift file was rewritten.
    Updated,
    /// Already as it should be.
    Unchanged,
    /// The backup was put back.
    Restored,
    /// airlift's file was deleted (it replaced nothing).
    Removed,
}

/// One file and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The `hosts.toml`.
    pub path: PathBuf,
    /// What happened.
    pub action: Action,
}

fn write_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> MirrorError {
    let path = path.to_path_buf();
    move |cause| MirrorError::Write { path, what, cause }
}

/// Holds the lock on `root` while it lives.
fn lock(root: &Path) -> Result<fs::File, MirrorError> {
    let dir = fs::File::open(root).map_err(write_err(root, "opening the hosts directory"))?;
    if !crate::sys::try_lock(&dir) {
        return Err(write_err(root, "locking the hosts directory")(
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "another airlift is writing it; try again",
            ),
        ));
    }
    Ok(dir)
}

/// Whether `text` is a file airlift wrote.
pub fn is_ours(text: &str) -> bool {
    text.lines().next() == Some(HEADER)
}

fn read(path: &Path) -> Result<Option<String>, MirrorError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(write_err(path, "reading")(e)),
    }
}

/// Writes `files` (directory name → text) under `root`, then takes away airlift's files of
/// directories not among them.
pub fn write_all(
    root: &Path,
    files: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Change>, MirrorError> {
    fs::create_dir_all(root).map_err(write_err(root, "creating the hosts directory"))?;
    let _lock = lock(root)?;
    let mut changes = Vec::new();
    for (dir, text) in files {
        let dir_path = root.join(dir);
        let path = dir_path.join("hosts.toml");
        match fs::create_dir(&dir_path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(write_err(&dir_path, "creating the directory")(e))
            }
            _ => {}
        }
        let action = match read(&path)? {
            None => Action::Created,
            Some(old) if old == *text => Action::Unchanged,
            Some(old) if is_ours(&old) => Action::Updated,
            Some(old) => {
                let backup = dir_path.join(BACKUP);
                crate::sys::write_atomic(&backup, old.as_bytes(), 0o644)
                    .map_err(write_err(&backup, "keeping the file it replaces"))?;
                Action::Replaced
            }
        };
        if action != Action::Unchanged {
            crate::sys::write_atomic(&path, text.as_bytes(), 0o644)
                .map_err(write_err(&path, "writing"))?;
        }
        changes.push(Change { path, action });
    }
    for dir in subdirectories(root)? {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| !files.contains_key(&n)) {
            changes.extend(take_away(&dir, warnings)?);
        }
    }
    Ok(changes)
}

/// Takes away every file airlift wrote under `root` (`airlift mirrors --remove`).
pub fn remove_all(root: &Path, warnings: &mut Vec<String>) -> Result<Vec<Change>, MirrorError> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let _lock = lock(root)?;
    let mut changes = Vec::new();
    for dir in subdirectories(root)? {
        changes.extend(take_away(&dir, warnings)?);
    }
    Ok(changes)
}

fn subdirectories(root: &Path) -> Result<Vec<PathBuf>, MirrorError> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(write_err(root, "listing the hosts directory")(e)),
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Restores or deletes airlift's `hosts.toml` in `dir`; nothing when the file is not airlift's.
fn take_away(dir: &Path, warnings: &mut Vec<String>) -> Result<Option<Change>, MirrorError> {
    let path = dir.join("hosts.toml");
    let backup = dir.join(BACKUP);
    let ours = read(&path)?.is_some_and(|t| is_ours(&t));
    if !ours {
        if backup.exists() {
            warnings.push(format!(
                "{}: kept: the hosts.toml beside it is not airlift's (someone replaced it), so \
                 it was not put back",
                crate::escape::shown(&backup)
            ));
        }
        return Ok(None);
    }
    let sync_dir = |d: &Path| fs::File::open(d).and_then(|f| f.sync_all());
    let action = if backup.exists() {
        fs::rename(&backup, &path).map_err(write_err(&path, "restoring the backup"))?;
        sync_dir(dir).map_err(write_err(dir, "syncing"))?;
        Action::Restored
    } else {
        fs::remove_file(&path).map_err(write_err(&path, "removing"))?;
        sync_dir(dir).map_err(write_err(dir, "syncing"))?;
        // Only an empty directory goes: anything else in it is someone else's.
        let _ = fs::remove_dir(dir);
        Action::Removed
    };
    Ok(Some(Change { path, action }))
}
