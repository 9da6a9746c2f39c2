//! Walk: stream the entries of a tar in one pass, refusing any entry that could escape the archive.
//!
//! Names are normalised (`./` prefixes, repeated and trailing slashes); PAX and GNU long names are
//! handled by the `tar` crate. Nothing is ever extracted: each regular file is handed to the caller
//! as a reader positioned at its data, and links are reported as archive-internal aliases.

use std::io::{self, Read};

/// One entry of interest.
pub enum Entry<'a> {
    /// A regular file: its normalised name, size and data.
    File {
        /// Normalised path inside the archive (`blobs/sha256/…`, `manifest.json`).
        name: String,
        /// Size from the header.
        size: u64,
        /// Offset of the data in the uncompressed tar stream (for `copy_file_range`).
        data_offset: u64,
        /// The data; the walker skips whatever the caller leaves unread.
        data: &'a mut dyn Read,
    },
    /// A symbolic or hard link, resolved to the archive path it names.
    Link {
        /// Normalised path of the link.
        name: String,
        /// Normalised archive path it points to.
        target: String,
    },
}

/// Why a tar stream was refused or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// An entry name or link target points outside the archive.
    #[error("entry {entry:?}: {why}; refusing the whole archive")]
    Unsafe {
        /// The offending entry.
        entry: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The tar structure (or the compression under it) is broken.
    #[error("{}: {cause}", entry.as_ref().map(|e| format!("entry {e:?}")).unwrap_or_else(|| "tar stream".into()))]
    Broken {
        /// The entry being read, when known.
        entry: Option<String>,
        /// The I/O or format error.
        cause: io::Error,
    },
}

/// Normalises an archive path: drops `./` and empty components. Returns `None` for a path that
/// is absolute or contains `..`.
pub fn normalize(raw: &str) -> Result<String, &'static str> {
    if raw.starts_with('/') {
        return Err("absolute path");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("path contains a '..' component"),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a link target relative to the directory holding the link; `None` when the result
/// would leave the archive.
fn resolve_link(link_name: &str, target: &str, symbolic: bool) -> Result<String, &'static str> {
    if target.starts_with('/') {
        return Err("link target is an absolute path");
    }
    // Symbolic links are relative to the link's directory; hard links name an archive path.
    let mut parts: Vec<&str> = if symbolic {
        let mut p: Vec<&str> = link_name.split('/').collect();
        p.pop();
        p
    } else {
        Vec::new()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("link points outside the archive");
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Streams every entry of `tar_stream` to `visit`, in archive order.
pub fn walk<R: Read, E: From<WalkError>>(
    tar_stream: R,
    mut visit: impl FnMut(Entry<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut archive = tar::Archive::new(tar_stream);
    let entries = archive
        .entries()
        .map_err(|cause| WalkError::Broken { entry: None, cause })?;
    let mut last: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|cause| WalkError::Broken {
            entry: last.clone(),
            cause,
        })?;
        let raw = entry.path_bytes();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let name = normalize(&raw).map_err(|why| WalkError::Unsafe {
            entry: raw.clone(),
            why,
        })?;
        last = Some(raw.clone());
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let data_offset = entry.raw_file_position();
                visit(Entry::File {
                    name,
                    size,
                    data_offset,
                    data: &mut entry,
                })?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let target = resolve_link(&name, &target, kind == tar::EntryType::Symlink)
                    .map_err(|why| WalkError::Unsafe { entry: raw, why })?;
                visit(Entry::Link { name, target })?;
            }
            _ => {
                tracing::debug!(entry = %raw, kind = ?kind, "ignoring tar entry");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, name, target).unwrap();
    }

    fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str) {
        // Bypass the builder's own path checks to produce hostile archives.
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
    }

    type Seen = Vec<(String, String)>;

    fn collect(data: Vec<u8>) -> Result<Seen, WalkError> {
        let mut seen = Vec::new();
        walk(&data[..], |e| {
            match e {
                Entry::File { name, data, .. } => {
                    let mut s = String::new();
                    data.read_to_string(&mut s).unwrap();
                    seen.push((name, s));
                }
                Entry::Link { name, target } => seen.push((name, format!("-> {target}"))),
            }
            Ok::<_, WalkError>(())
        })?;
        Ok(seen)
    }

    #[test]
    fn normalises_names_and_resolves_layer_links() {
        let mut b = tar::Builder::new(Vec::new());
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_size(0);
        b.append_data(&mut d, "./blobs/", &[][..]).unwrap();
        file(&mut b, "./blobs/sha256/abc", b"blob");
        let long = format!("{}/layer.tar", "d".repeat(150));
        file(&mut b, &long, b"long");
        link(&mut b, "abc123/layer.tar", "../fff.tar");
        let seen = collect(b.into_inner().unwrap()).unwrap();
        assert_eq!(
            seen,
            vec![
                ("blobs/sha256/abc".into(), "blob".into()),
                (long, "long".into()),
                ("abc123/layer.tar".into(), "-> fff.tar".into()),
            ]
        );
    }

    #[test]
    fn refuses_escaping_entries() {
        for name in ["../evil", "a/../../evil", "/etc/passwd"] {
            let mut b = tar::Builder::new(Vec::new());
            raw_entry(&mut b, name);
            let err = collect(b.into_inner().unwrap()).unwrap_err();
            assert!(matches!(err, WalkError::Unsafe { .. }), "{name}: {err}");
            assert!(err.to_string().contains(name), "{err}");
        }
        for target in ["../../etc/passwd", "/etc/passwd"] {
            let mut b = tar::Builder::new(Vec::new());
            link(&mut b, "x/layer.tar", target);
            let err = collect(b.into_inner().unwrap()).unwrap_err();
            assert!(matches!(err, WalkError::Unsafe { .. }), "{target}: {err}");
        }
    }

    #[test]
    fn truncated_tar_is_broken() {
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "big", &[7u8; 4096]);
        let data = b.into_inner().unwrap();
        let err = collect(data[..2048].to_vec()).unwrap_err();
        assert!(matches!(err, WalkError::Broken { .. }), "{err}");
    }
}
