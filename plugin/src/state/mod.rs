//! State: what airlift remembers about each archive it imported, in its state directory — the
//! file's identity (so an unchanged archive is never read again) and the images and blobs it
//! produced (so pins and leases can be checked and repaired without it). [`verify`] answers
//! whether a record still stands in containerd, and repairs it when asked.
//!
//! One JSON file per archive, `<dir>/archives/<archive lease id>.json`, replaced atomically
//! (temporary file, fsync, rename, directory fsync). The daemon keeps its records in the state
//! directory itself; `airlift import` keeps its own under `<state dir>/imports`, so an archive
//! imported from the command line and deleted afterwards keeps its images.
//!
//! Every record says its state format (`"format"`, [`FORMAT`]); one without (written before
//! formats were numbered) is format 1. A record of a newer format than this airlift reads is
//! [`Refused`]: never read, never overwritten, never removed (see RELIABILITY.md, "Upgrades").

mod format;
pub mod verify;

use format::{read, Unread, Written};
pub use format::{Refused, FORMAT};

use crate::containerd::ImageTarget;
use crate::import::Report;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
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
    /// The identity of the regular file at `path` (following symlinks); anything else (a FIFO,
    /// a device) has none: it is not an archive.
    pub fn of(path: &Path) -> io::Result<Identity> {
        let m = fs::metadata(path)?;
        if !m.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        })
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

/// The record of one archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The archive's path (escaped, as every path airlift writes into a string).
    #[serde(with = "crate::escape::serde_path")]
    pub path: PathBuf,
    /// Its identity when last imported (or when its import last failed).
    pub identity: Identity,
    /// Outcome of the last import.
    pub outcome: Outcome,
    /// Why it failed, if it did.
    #[serde(default)]
    pub last_error: String,
    /// The images it provides (from its last successful import).
    pub images: Vec<ImageTarget>,
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
    /// The options it was imported with (the daemon's are fixed by its configuration and leave
    /// this empty; see [`crate::service`]).
    #[serde(default)]
    pub fingerprint: String,
    /// An archive of an intake directory, deleted once imported: it provides its images until
    /// `airlift forget`, although its file is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intake: bool,
    /// Why unpacking its images failed (the import itself stands); empty when it did not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unpack_error: String,
    /// The snapshotter its images were last unpacked into, all of them; empty when not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unpacked_into: String,
    /// Of its images, those held only to serve other platforms (`serve_platforms`): not this
    /// node's to run, so never counted as ready for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served_only: Vec<String>,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

impl Record {
    /// An empty record of `path` (nothing imported yet).
    pub fn new(path: &Path, identity: Identity) -> Record {
        Record {
            path: path.to_path_buf(),
            identity,
            outcome: Outcome::Failed,
            last_error: String::new(),
            images: Vec::new(),
            blobs: Vec::new(),
            lease: None,
            bytes: 0,
            seconds: 0.0,
            imported_at: 0,
            imports: 0,
            fingerprint: String::new(),
            intake: false,
            unpack_error: String::new(),
            unpacked_into: String::new(),
            served_only: Vec::new(),
        }
    }

    /// Whether `name` is, of this record's images, one held only to serve other platforms.
    pub fn serves_only(&self, name: &str) -> bool {
        self.served_only.iter().any(|n| n == name)
    }

    /// Whether the archive still provides its images: its file is there, or it came through an
    /// intake directory (and is gone by design).
    pub fn is_present(&self) -> bool {
        self.intake || self.path.exists()
    }

    /// Its names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.images.iter().map(|i| i.name.as_str())
    }

    /// The record after an import read the archive (taken at `identity`) and reported `report`.
    /// After a partial failure the images the previous import provided stay in the record (and
    /// keep their pins) while the archive still names them: nothing is given up because one
    /// image broke. A name verification refused is the exception: what it was before is not
    /// kept, since no image under that name may stay pinned against the policy.
    pub fn after_import(
        path: &Path,
        identity: Identity,
        report: &Report,
        previous: Option<&Record>,
        fingerprint: &str,
    ) -> Record {
        let ok = report.ok();
        let mut images = report.images.clone();
        let mut served = report.served_only.clone();
        if !ok {
            if let Some(prev) = previous {
                let now: BTreeSet<&str> = images.iter().map(|i| i.name.as_str()).collect();
                let kept: Vec<ImageTarget> = prev
                    .images
                    .iter()
                    .filter(|i| !now.contains(i.name.as_str()))
                    .filter(|i| !report.refused.contains_key(&i.name))
                    .cloned()
                    .collect();
                served.extend(
                    kept.iter()
                        .filter(|i| prev.serves_only(&i.name))
                        .map(|i| i.name.clone()),
                );
                images.extend(kept);
            }
        }
        Record {
            path: path.to_path_buf(),
            identity,
            outcome: if ok {
                Outcome::Imported
            } else {
                Outcome::Failed
            },
            last_error: report.failed.join("; "),
            images,
            blobs: report.blobs.clone(),
            lease: report
                .lease
                .clone()
                .or_else(|| previous.and_then(|p| p.lease.clone())),
            bytes: report.archive_bytes,
            seconds: report.seconds,
            imported_at: now_unix(),
            imports: previous.map_or(0, |p| p.imports) + 1,
            fingerprint: fingerprint.to_string(),
            intake: false,
            unpack_error: report.unpack_error().unwrap_or_default(),
            unpacked_into: report
                .unpack
                .as_ref()
                .filter(|u| u.ok())
                .map(|u| u.snapshotter.clone())
                .unwrap_or_default(),
            served_only: served,
        }
    }

    /// The record after an import failed as a whole with `error`. What a previous import
    /// provided is kept (its images stay pinned). A broken archive (`archive_fault`) keeps its
    /// identity, so it is tried again only when it changes; any other failure (containerd, the
    /// local disk) clears it, so the next event or start tries again.
    pub fn after_failure(
        path: &Path,
        identity: Identity,
        error: &str,
        archive_fault: bool,
        previous: Option<&Record>,
    ) -> Record {
        let mut r = previous
            .cloned()
            .unwrap_or_else(|| Record::new(path, identity));
        r.identity = if archive_fault {
            identity
        } else {
            Identity::default()
        };
        r.outcome = Outcome::Failed;
        r.last_error = error.to_string();
        r
    }

    /// The names `previous` provided that this record no longer does.
    pub fn dropped_from(&self, previous: &Record) -> Vec<String> {
        let now: BTreeSet<&str> = self.images.iter().map(|i| i.name.as_str()).collect();
        previous
            .images
            .iter()
            .filter(|i| !now.contains(i.name.as_str()))
            .map(|i| i.name.clone())
            .collect()
    }
}

/// Every record of a directory that could be read, and those refused.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The records read.
    pub records: Vec<Record>,
    /// Records of a newer format, left as they are.
    pub refused: Vec<Refused>,
}

/// The record files of one directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// Opens (creating) `<dir>/archives`, removing temporary files a crash left behind.
    pub fn open(dir: &Path) -> io::Result<Records> {
        let dir = dir.join("archives");
        fs::create_dir_all(&dir)?;
        for e in fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Records { dir })
    }

    fn file(&self, path: &Path) -> PathBuf {
        let id = crate::labels::archive_lease(path);
        self.dir.join(format!("{id}.json"))
    }

    /// Every record that can be read, and those of a newer format (each logged as an error
    /// once, here); unreadable ones are logged with their file and skipped.
    pub fn load_all(&self) -> io::Result<Loaded> {
        let mut out = Loaded::default();
        for e in fs::read_dir(&self.dir)?.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                match read(&p) {
                    Ok(r) => out.records.extend(r),
                    Err(Unread::Refused(refused)) => {
                        tracing::error!("{refused}");
                        out.refused.push(refused);
                    }
                    Err(Unread::Broken(err)) => {
                        tracing::warn!(file = %crate::escape::shown(&p), %err, "ignoring an unreadable state record")
                    }
                }
            }
        }
        Ok(out)
    }

    /// The record of one archive (none when it cannot be read, or is refused).
    pub fn get(&self, path: &Path) -> Option<Record> {
        read(&self.file(path)).ok().flatten()
    }

    /// The record of `path`, if it is of a newer format than this airlift reads.
    pub fn refused(&self, path: &Path) -> Option<Refused> {
        match read(&self.file(path)) {
            Err(Unread::Refused(r)) => Some(r),
            _ => None,
        }
    }

    /// An error when the record of `path` may not be replaced or removed: it is of a newer
    /// format.
    fn guard(&self, path: &Path) -> io::Result<()> {
        match self.refused(path) {
            Some(r) => Err(io::Error::other(r)),
            None => Ok(()),
        }
    }

    /// Writes a record atomically, in this airlift's format ([`FORMAT`]); never over a record
    /// of a newer format (an error says so).
    pub fn save(&self, r: &Record) -> io::Result<()> {
        self.guard(&r.path)?;
        let file = self.file(&r.path);
        let tmp = file.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp)?;
        let json = serde_json::to_vec_pretty(&Written {
            format: FORMAT,
            record: r,
        })
        .expect("record serialises");
        // A crash point mid-write: half a record in the temporary file.
        fail::fail_point!("record", |_| {
            let _ = f.write_all(&json[..json.len() / 2]);
            let _ = f.sync_all();
            crate::sys::crash()
        });
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, &file)?;
        fs::File::open(&self.dir)?.sync_all()
    }

    /// Removes a record; never one of a newer format (an error says so).
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        self.guard(path)?;
        match fs::remove_file(self.file(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod formats;
#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::Outcome as ImportOutcome;

    fn image(name: &str) -> ImageTarget {
        ImageTarget {
            name: name.into(),
            media_type: "m".into(),
            digest: format!("sha256:{name}"),
            size: 1,
            annotations: Default::default(),
        }
    }

    fn report(images: &[&str], failed: &[&str]) -> Report {
        Report {
            archive: "/a.tar".into(),
            outcome: if failed.is_empty() {
                ImportOutcome::Imported
            } else {
                ImportOutcome::Partial
            },
            mode: None,
            images: images.iter().map(|n| image(n)).collect(),
            shadowed: vec![],
            yielded: vec![],
            failed: failed.iter().map(|s| s.to_string()).collect(),
            skipped: vec![],
            not_selected: vec![],
            served_only: vec![],
            unserved: vec![],
            repaired: vec![],
            blobs_written: 0,
            blobs_present: 0,
            bytes_written: 0,
            archive_bytes: 10,
            seconds: 0.5,
            lease: None,
            blobs: vec![],
            unpack: None,
            verified: Default::default(),
            refused: Default::default(),
        }
    }

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
        let mut r = Record::after_import(&a, id1, &report(&["x"], &[]), None, "");
        r.lease = Some("l".into());
        records.save(&r).unwrap();
        let all = records.load_all().unwrap();
        assert_eq!(all.records, vec![r.clone()]);
        assert_eq!(records.get(&a), Some(r));
        records.remove(&a).unwrap();
        assert!(records.load_all().unwrap().records.is_empty());
    }

    #[test]
    fn a_partial_failure_keeps_what_the_previous_import_provided() {
        let p = Path::new("/a.tar");
        let mut first =
            Record::after_import(p, Identity::default(), &report(&["x", "y"], &[]), None, "");
        first.lease = Some("lease-1".into());
        let second = Record::after_import(
            p,
            Identity::default(),
            &report(&["x"], &["y is broken"]),
            Some(&first),
            "",
        );
        assert_eq!(second.outcome, Outcome::Failed);
        let names: Vec<&str> = second.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["x", "y"], "y keeps its place (and pin)");
        assert_eq!(second.lease.as_deref(), Some("lease-1"));
        assert_eq!(second.imports, 2);
        assert!(second.dropped_from(&first).is_empty());
        // A full success that no longer has y drops it.
        let third = Record::after_import(
            p,
            Identity::default(),
            &report(&["x"], &[]),
            Some(&second),
            "",
        );
        assert_eq!(third.dropped_from(&second), vec!["y".to_string()]);
    }

    #[test]
    fn failures_keep_the_identity_only_when_the_archive_is_at_fault() {
        let p = Path::new("/a.tar");
        let id = Identity {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
        };
        let prev = Record::after_import(p, id, &report(&["x"], &[]), None, "");
        let broken = Record::after_failure(p, id, "corrupt", true, Some(&prev));
        assert_eq!((broken.identity, broken.outcome), (id, Outcome::Failed));
        assert_eq!(broken.images, prev.images, "its images stay");
        let away = Record::after_failure(p, id, "containerd away", false, None);
        assert_eq!(
            away.identity,
            Identity::default(),
            "tried again at the next event"
        );
        assert_eq!(away.last_error, "containerd away");
    }

    #[test]
    fn unreadable_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path()).unwrap();
        fs::write(dir.path().join("archives/broken.json"), b"{not json").unwrap();
        fs::write(dir.path().join("archives/left.json.tmp"), b"x").unwrap();
        assert!(records.load_all().unwrap().records.is_empty());
        Records::open(dir.path()).unwrap();
        assert!(!dir.path().join("archives/left.json.tmp").exists());
    }

    #[test]
    fn records_of_earlier_versions_still_read() {
        // As written before image targets carried annotations.
        let old = r#"{"path":"/images/a.tar","identity":{"dev":1,"ino":2,"size":3,"mtime_ns":4,"ctime_ns":5},
            "outcome":"imported","images":[{"name":"docker.io/library/x:1","media_type":"m","digest":"sha256:00","size":1}],
            "blobs":["sha256:00"],"lease":"airlift-archive-x","bytes":3,"seconds":0.1,"imported_at":7}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        assert_eq!(r.images[0].name, "docker.io/library/x:1");
        assert!(r.images[0].annotations.is_empty());
        assert_eq!((r.imports, r.fingerprint.as_str()), (0, ""));
        // And annotations are written only when there are some.
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("annotations"), "{text}");
    }
}
