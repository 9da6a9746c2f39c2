//! Decode: recognise an archive's compression from its first bytes and undo it.
//!
//! The file name is never consulted: operators rename files, and k3s users drop `.tar` files that
//! are really zstd. Anything that is neither a supported compression nor a tar is refused here,
//! before any content is written.

use std::fmt;
use std::io::{self, Cursor, Read};
use std::path::Path;

/// How an archive's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar (`ustar` magic at offset 257).
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`), windows up to 2^31 accepted (`zstd --long=31`).
    Zstd,
    /// lz4 frame format (`04 22 4d 18`).
    Lz4,
    /// bzip2 (`BZh`).
    Bzip2,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Bzip2 => "bzip2",
        })
    }
}

/// Why an input cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("the file is empty")]
    Empty,
    /// Neither a known compression nor a tar.
    #[error(
        "not an image archive: expected a tar, optionally compressed with gzip, zstd, lz4 or bzip2 \
         (first bytes: {0})"
    )]
    NotAnArchive(String),
    /// Reading the first bytes failed.
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
}

/// The number of leading bytes needed to recognise every supported format.
const SNIFF_LEN: usize = 512;

/// How much compressed input the zstd decoder is handed at a time.
const ZSTD_INPUT: usize = 128 << 10;

/// Recognises the compression from the first bytes of an archive.
pub fn detect(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || is_zstd_skippable(head) {
        Some(Compression::Zstd)
    } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        Some(Compression::Lz4)
    } else if head.starts_with(b"BZh") {
        Some(Compression::Bzip2)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(Compression::None)
    } else {
        None
    }
}

/// Reads the first bytes of `input`, recognises its format and returns a reader of the
/// uncompressed tar stream together with the compression found. A large zstd window is spilled
/// to a file in `scratch` (see [`spill`](super::spill)).
pub fn open<R: Read + Send + 'static>(
    mut input: R,
    scratch: &Path,
) -> Result<(Box<dyn Read + Send>, Compression), DecodeError> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut input).take(SNIFF_LEN as u64).read_to_end(&mut head)?;
    if head.is_empty() {
        return Err(DecodeError::Empty);
    }
    let Some(compression) = detect(&head) else {
        let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(DecodeError::NotAnArchive(shown.join(" ")));
    };
    let raw = Cursor::new(head).chain(input);
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(super::spill::Decoder::new(
            io::BufReader::with_capacity(ZSTD_INPUT, raw),
            scratch,
        )?),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(raw)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(raw)),
    };
    Ok((reader, compression))
}

/// Whether a layer blob's first bytes show a compression that containerd's importer
/// recognises (gzip or zstd); containerd types such layers `…diff.tar.gzip`, others `…diff.tar`.
pub fn layer_is_compressed(head: &[u8]) -> bool {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return true;
    }
    is_zstd_skippable(head)
}

/// Whether `head` starts with a zstd skippable frame (magic 0x184D2A50..=0x184D2A5F, little
/// endian), as archives made by `pzstd` or for seeking do.
fn is_zstd_skippable(head: &[u8]) -> bool {
    head.len() >= 4 && head[1..4] == [0x2a, 0x4d, 0x18] && head[0] & 0xf0 == 0x50
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn roundtrip(data: Vec<u8>, want: Compression) {
        let (mut r, c) = open(Cursor::new(data), &std::env::temp_dir()).unwrap();
        assert_eq!(c, want);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, tar_bytes());
    }

    #[test]
    fn recognises_every_format_by_content() {
        let tar = tar_bytes();
        roundtrip(tar.clone(), Compression::None);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        roundtrip(gz.finish().unwrap(), Compression::Gzip);

        roundtrip(zstd::encode_all(&tar[..], 3).unwrap(), Compression::Zstd);
        // A skippable frame first, as pzstd writes.
        let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        skippable.extend(zstd::encode_all(&tar[..], 3).unwrap());
        roundtrip(skippable, Compression::Zstd);

        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz.write_all(&tar).unwrap();
        roundtrip(lz.finish().unwrap(), Compression::Lz4);

        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).unwrap();
        roundtrip(bz.finish().unwrap(), Compression::Bzip2);
    }

    #[test]
    fn accepts_zstd_long_windows() {
        let tar = tar_bytes();
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.window_log(31).unwrap();
        enc.write_all(&tar).unwrap();
        roundtrip(enc.finish().unwrap(), Compression::Zstd);
    }

    #[test]
    fn refuses_empty_and_foreign_input() {
        assert!(matches!(
            open(Cursor::new(Vec::new()), &std::env::temp_dir()),
            Err(DecodeError::Empty)
        ));
        let err = open(
            Cursor::new(b"PK\x03\x04 a zip file".to_vec()),
            &std::env::temp_dir(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, DecodeError::NotAnArchive(_)));
        assert!(err.to_string().contains("not an image archive"), "{err}");
    }

    #[test]
    fn truncated_compression_is_an_error() {
        let tar = tar_bytes();
        let z = zstd::encode_all(&tar[..], 3).unwrap();
        let (mut r, _) = open(
            Cursor::new(z[..z.len() / 2].to_vec()),
            &std::env::temp_dir(),
        )
        .unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let (mut r, _) = open(
            Cursor::new(gz[..gz.len() - 6].to_vec()),
            &std::env::temp_dir(),
        )
        .unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn sniffs_layer_compression() {
        assert!(layer_is_compressed(&[0x1f, 0x8b, 0x08, 0]));
        assert!(layer_is_compressed(&[0x28, 0xb5, 0x2f, 0xfd]));
        assert!(layer_is_compressed(&[0x50, 0x2a, 0x4d, 0x18]));
        assert!(!layer_is_compressed(b"bin/\0\0\0"));
        assert!(!layer_is_compressed(b""));
    }
}
