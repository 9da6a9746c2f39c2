//! Labels set through the Content API on airlift's own store: one JSON file per labelled blob,
//! `airlift.labels/sha256/<hex>`, replaced atomically. containerd keeps the labels it sets in its
//! own metadata and never needs these; they serve direct clients of the proxy.

use super::{io_err, LocalError};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// The labels stored at `path` (none when there is no file or it is unreadable).
pub(super) fn read(path: &Path) -> HashMap<String, String> {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Replaces the labels at `path` (removing the file for none).
pub(super) fn write(path: &Path, labels: &HashMap<String, String>) -> Result<(), LocalError> {
    if labels.is_empty() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(format!(
                "removing {}",
                crate::escape::shown(&path)
            ))(e)),
            _ => Ok(()),
        };
    }
    let dir = path.parent().expect("labels path has a parent");
    let fail = io_err(format!("writing {}", crate::escape::shown(&path)));
    (|| {
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&serde_json::to_vec(labels).map_err(io::Error::other)?)?;
        tmp.as_file().sync_data()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    })()
    .map_err(fail)
}

/// Applies an update as containerd does: no field paths or `labels` replaces them all;
/// `labels.<key>` sets (or, with an empty or absent value, removes) one label; any other path is
/// invalid.
pub(super) fn apply(
    current: &HashMap<String, String>,
    labels: &HashMap<String, String>,
    fieldpaths: &[String],
    subject: &str,
) -> Result<HashMap<String, String>, LocalError> {
    let mut next = current.clone();
    if fieldpaths.is_empty() {
        next = labels.clone();
    }
    for path in fieldpaths {
        if path == "labels" {
            next = labels.clone();
        } else if let Some(key) = path.strip_prefix("labels.") {
            match labels.get(key).filter(|v| !v.is_empty()) {
                Some(v) => next.insert(key.to_string(), v.clone()),
                None => next.remove(key),
            };
        } else {
            return Err(LocalError::invalid_argument(format!(
                "cannot update {path:?} field on content info {subject:?}"
            )));
        }
    }
    next.retain(|_, v| !v.is_empty());
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Class;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn updates_follow_containerds_field_paths() {
        let cur = map(&[("a", "1"), ("b", "2")]);
        let new = map(&[("b", "3"), ("c", "4")]);
        assert_eq!(apply(&cur, &new, &[], "d").unwrap(), new);
        assert_eq!(apply(&cur, &new, &["labels".into()], "d").unwrap(), new);
        assert_eq!(
            apply(&cur, &new, &["labels.b".into()], "d").unwrap(),
            map(&[("a", "1"), ("b", "3")])
        );
        assert_eq!(
            apply(&cur, &new, &["labels.a".into()], "d").unwrap(),
            map(&[("b", "2")])
        );
        let e = apply(&cur, &new, &["size".into()], "d").unwrap_err();
        assert_eq!(e.class(), Class::InvalidArgument);
    }

    #[test]
    fn files_round_trip_and_go_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sha256").join("ab");
        write(&p, &map(&[("k", "v")])).unwrap();
        assert_eq!(read(&p), map(&[("k", "v")]));
        write(&p, &HashMap::new()).unwrap();
        assert!(!p.exists());
        assert!(read(&p).is_empty());
    }
}
