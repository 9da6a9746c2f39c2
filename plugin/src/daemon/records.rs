//! What the daemon remembers about each archive, in its state directory: the file's identity
//! (so an unchanged archive is never read again) and the images and blobs it produced (so pins
//! and leases can be checked and repaired without it).
//!
//! One JSON file per archive, replaced atomically (temporary file, fsync, rename).

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file's identity: any change of content, replacement or touch changes it. The default (all
/// zero) matches no file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
}

impl Identity {
    /// The identity of the file at `path` (following symlinks).
    pub fn of(path: &Path) -> io::Result<Identity> {
        let m = fs::metadata(path)?;
        Ok(Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        })
    }
}

/// An image an archive produced, with what is needed to recreate its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedImage {
    /// Its name.
    pub name: String,
    /// Target media type.
    pub media_type: String,
    /// Target digest.
    pub digest: String,
    /// Target size.
    pub size: i64,
}

impl From<&crate::import::ImportedImage> for RecordedImage {
    fn from(i: &crate::import::ImportedImage) -> Self {
        RecordedImage {
            name: i.name.clone(),
            media_type: i.media_type.clone(),
            digest: i.digest.clone(),
            size: i.size,
        }
    }
}

impl From<&RecordedImage> for crate::import::ImportedImage {
    fn from(i: &RecordedImage) -> Self {
        crate::import::ImportedImage {
            name: i.name.clone(),
            media_type: i.media_type.clone(),
            digest: i.digest.clone(),
            size: i.size,
        }
    }
}

/// Outcome of the last import of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every image imported.
    Imported,
    /// The import failed (entirely or for some images).
    Failed,
}

/// The daemon's record of one archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The archive's path.
    pub path: PathBuf,
    /// Its identity when last imported (or when its import last failed).
    pub identity: Identity,
    /// Outcome of the last import.
    pub outcome: Outcome,
    /// Why it failed, if it did.
    #[serde(default)]
    pub last_error: String,
    /// The images it provides (from its last successful import).
    pub images: Vec<RecordedImage>,
    /// The blobs its lease holds.
    pub blobs: Vec<String>,
    /// Its lease.
    pub lease: Option<String>,
    /// Archive bytes read by the last import.
    pub bytes: u64,
    /// Duration of the last import.
    pub seconds: f64,
    /// Unix time of the last successful import.
    pub imported_at: i64,
    /// Number of imports done for it.
    #[serde(default)]
    pub imports: u32,
    /// For command-line imports: the options it was made with (see `recall`).
    #[serde(default)]
    pub fingerprint: String,
}

/// The record files.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// Opens (creating) `<state_dir>/archives`, removing temporary files a crash left behind.
    pub fn open(state_dir: &Path) -> io::Result<Records> {
        let dir = state_dir.join("archives");
        fs::create_dir_all(&dir)?;
        for e in fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Records { dir })
    }

    fn file(&self, path: &Path) -> PathBuf {
        let id = crate::import::archive_lease_id(path);
        self.dir.join(format!("{id}.json"))
    }

    /// Every record.
    pub fn load_all(&self) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)?.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                match fs::read(&p).map(|b| serde_json::from_slice::<Record>(&b)) {
                    Ok(Ok(r)) => out.push(r),
                    Ok(Err(err)) => {
                        tracing::warn!(file = %p.display(), %err, "ignoring an unreadable state record")
                    }
                    Err(err) => {
                        tracing::warn!(file = %p.display(), %err, "ignoring an unreadable state record")
                    }
                }
            }
        }
        Ok(out)
    }

    /// The record of one archive.
    pub fn get(&self, path: &Path) -> Option<Record> {
        let bytes = fs::read(self.file(path)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes a record atomically.
    pub fn save(&self, r: &Record) -> io::Result<()> {
        let file = self.file(&r.path);
        let tmp = file.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(r).expect("record serialises"))?;
        f.sync_all()?;
        fs::rename(&tmp, &file)?;
        fs::File::open(&self.dir)?.sync_all()
    }

    /// Removes a record.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(self.file(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_changes_with_replacement_and_records_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.tar");
        fs::write(&a, b"one").unwrap();
        let id1 = Identity::of(&a).unwrap();
        assert_eq!(id1, Identity::of(&a).unwrap());
        // Same size, written elsewhere and renamed over it.
        let b = dir.path().join(".a.tar.tmp");
        fs::write(&b, b"two").unwrap();
        fs::rename(&b, &a).unwrap();
        assert_ne!(id1, Identity::of(&a).unwrap());

        let records = Records::open(dir.path()).unwrap();
        let r = Record {
            path: a.clone(),
            identity: id1,
            outcome: Outcome::Imported,
            last_error: String::new(),
            images: vec![RecordedImage {
                name: "docker.io/library/x:1".into(),
                media_type: "m".into(),
                digest: "d".into(),
                size: 1,
            }],
            blobs: vec![],
            lease: Some("l".into()),
            bytes: 3,
            seconds: 0.1,
            imported_at: 0,
            imports: 1,
            fingerprint: String::new(),
        };
        records.save(&r).unwrap();
        let all = records.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].images, r.images);
        records.remove(&a).unwrap();
        assert!(records.load_all().unwrap().is_empty());
    }
}
