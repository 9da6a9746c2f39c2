//! Walk: stream the entries of a tar in one pass, refusing any entry that could escape the archive.
//!
//! Names are normalised (`./` prefixes, repeated and trailing slashes). Headers are read here,
//! with the `tar` crate's [`tar::Header`] for their fields, so that what one header may make
//! airlift hold is bounded: a GNU long name or link at most [`NAME_LIMIT`] bytes, a PAX
//! extension at most [`PAX_LIMIT`] (its `path`, `linkpath` and `size` records apply to the next
//! entry). Nothing is ever extracted: each regular file is handed to the caller as a reader
//! positioned at its data, and links are reported as archive-internal aliases.

use std::io::{self, Read};

/// The longest GNU long name or long link airlift reads.
pub const NAME_LIMIT: u64 = 64 << 10;

/// The largest PAX extended header airlift reads.
pub const PAX_LIMIT: u64 = 1 << 20;

/// The size of a tar block.
const BLOCK: u64 = 512;

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
    /// A header asks for more than airlift holds in memory.
    #[error("{what} of {size} bytes, more than the {limit}-byte limit; refusing the archive")]
    Limit {
        /// What (a GNU long name, a PAX header), with the entry after which it came.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
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

/// A reader that counts the bytes read (the position in the uncompressed tar stream).
struct Counted<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads a whole block; `false` at a clean end of the stream (before its first byte).
fn read_block(r: &mut impl Read, block: &mut [u8; BLOCK as usize]) -> io::Result<bool> {
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads and drops `n` bytes (an entry's unread rest, its padding).
fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The padding after `size` bytes of data.
fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// What PAX records say of the next entry.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

fn parse_pax(data: &[u8]) -> io::Result<Pax> {
    let mut pax = Pax::default();
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext?;
        match ext.key_bytes() {
            b"path" => pax.path = Some(ext.value_bytes().to_vec()),
            b"linkpath" => pax.linkpath = Some(ext.value_bytes().to_vec()),
            b"size" => {
                let v = std::str::from_utf8(ext.value_bytes())
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad PAX size"))?;
                pax.size = Some(v);
            }
            _ => {}
        }
    }
    Ok(pax)
}

/// A name from a long-name entry or a header field: up to its first NUL.
fn name_of(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Streams every entry of `tar_stream` to `visit`, in archive order.
pub fn walk<R: Read, E: From<WalkError>>(
    tar_stream: R,
    mut visit: impl FnMut(Entry<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut r = Counted {
        inner: tar_stream,
        pos: 0,
    };
    let mut last: Option<String> = None;
    let broken = |entry: &Option<String>, cause: io::Error| WalkError::Broken {
        entry: entry.clone(),
        cause,
    };
    let (mut long_name, mut long_link, mut pax) =
        (None::<Vec<u8>>, None::<Vec<u8>>, Pax::default());
    let mut block = [0u8; BLOCK as usize];
    loop {
        if !read_block(&mut r, &mut block).map_err(|e| broken(&last, e))? {
            return Ok(()); // the stream ends without end-of-archive blocks: as tar does
        }
        if block.iter().all(|b| *b == 0) {
            return Ok(()); // end of archive
        }
        let header = tar::Header::from_byte_slice(&block);
        let sum: u32 = block[..148]
            .iter()
            .chain(&block[156..])
            .map(|b| *b as u32)
            .sum::<u32>()
            + 8 * 32;
        if header.cksum().map_err(|e| broken(&last, e))? != sum {
            return Err(broken(
                &last,
                io::Error::new(io::ErrorKind::InvalidData, "header checksum mismatch"),
            )
            .into());
        }
        let kind = header.entry_type();
        let header_size = header.entry_size().map_err(|e| broken(&last, e))?;
        let after = || {
            last.clone().map_or("the archive's start".to_string(), |l| {
                format!("entry {l:?}")
            })
        };
        // Extension headers describe the next entry, within limits.
        let limit = if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            Some((NAME_LIMIT, "a GNU long name"))
        } else if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            Some((PAX_LIMIT, "a PAX extended header"))
        } else {
            None
        };
        if let Some((limit, what)) = limit {
            if header_size > limit {
                return Err(WalkError::Limit {
                    what: format!("{what} after {}", after()),
                    size: header_size,
                    limit,
                }
                .into());
            }
            let mut data = vec![0u8; header_size as usize];
            r.read_exact(&mut data).map_err(|e| broken(&last, e))?;
            skip(&mut r, padding(header_size)).map_err(|e| broken(&last, e))?;
            if kind.is_gnu_longname() {
                long_name = Some(data);
            } else if kind.is_gnu_longlink() {
                long_link = Some(data);
            } else if kind.is_pax_local_extensions() {
                pax = parse_pax(&data).map_err(|e| broken(&last, e))?;
            }
            continue;
        }
        let size = pax.size.take().unwrap_or(header_size);
        let raw = long_name
            .take()
            .or(pax.path.take())
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let raw = name_of(&raw);
        let link = long_link
            .take()
            .or(pax.linkpath.take())
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let name = normalize(&raw).map_err(|why| WalkError::Unsafe {
            entry: raw.clone(),
            why,
        })?;
        last = Some(raw.clone());
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let data_offset = r.pos;
                let mut data = (&mut r).take(size);
                visit(Entry::File {
                    name,
                    size,
                    data_offset,
                    data: &mut data,
                })?;
                let rest = data.limit();
                skip(&mut r, rest + padding(size)).map_err(|e| broken(&last, e))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = link.as_deref().map(name_of).unwrap_or_default();
                let target = resolve_link(&name, &target, kind == tar::EntryType::Symlink)
                    .map_err(|why| WalkError::Unsafe { entry: raw, why })?;
                visit(Entry::Link { name, target })?;
                skip(&mut r, size + padding(size)).map_err(|e| broken(&last, e))?;
            }
            _ => {
                tracing::debug!(entry = %raw, kind = ?kind, "ignoring tar entry");
                skip(&mut r, size + padding(size)).map_err(|e| broken(&last, e))?;
            }
        }
    }
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
    fn long_names_pax_records_and_their_limits() {
        // A PAX path and size apply to the next entry (tar's builder writes long names as GNU
        // long-name entries; PAX is written by hand).
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/blob", "p".repeat(300));
        let record = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut n = body.len() + 1;
            n += format!("{n}").len() - 1;
            format!("{n}{body}")
        };
        let pax = record("path", &long);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(pax.len() as u64);
        h.set_cksum();
        b.append(&h, pax.as_bytes()).unwrap();
        file(&mut b, "short-name-in-header", b"pax");
        let seen = collect(b.into_inner().unwrap()).unwrap();
        assert_eq!(seen, vec![(long, "pax".into())]);

        // A long name beyond the limit is refused before it is read.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(NAME_LIMIT + 1);
        h.set_cksum();
        b.append(&h, &vec![b'a'; (NAME_LIMIT + 1) as usize][..])
            .unwrap();
        let err = collect(b.into_inner().unwrap()).unwrap_err();
        assert!(matches!(err, WalkError::Limit { .. }), "{err}");
        assert!(err.to_string().contains("GNU long name"), "{err}");
        // A PAX header beyond its limit too.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(PAX_LIMIT + 1);
        h.set_cksum();
        b.append(&h, &vec![b'1'; (PAX_LIMIT + 1) as usize][..])
            .unwrap();
        let err = collect(b.into_inner().unwrap()).unwrap_err();
        assert!(err.to_string().contains("PAX extended header"), "{err}");
    }

    #[test]
    fn a_bad_checksum_is_broken() {
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "a", b"data");
        let mut data = b.into_inner().unwrap();
        data[10] ^= 1;
        let err = collect(data).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
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
