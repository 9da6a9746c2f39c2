//! Paths as text: every path airlift shows (messages, logs, `airlift ls`) or writes into a string
//! (containerd labels, the API, state records) is escaped, so that a file name with bytes that are
//! not UTF-8, or with control characters, neither breaks a terminal or a log line nor loses its
//! identity. The escaping is reversible ([`unescape`]): a path survives the round trip.
//!
//! Printable UTF-8 is kept as it is, a backslash becomes `\\`, a control character `\u{1b}`, and
//! a byte that is not UTF-8 `\xff`.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// A path shown escaped (see the module doc); `Display` writes it.
pub struct Shown<'a>(&'a Path);

/// `path`, to be shown or written into a string.
pub fn shown<P: AsRef<Path> + ?Sized>(path: &P) -> Shown<'_> {
    Shown(path.as_ref())
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.as_os_str().as_bytes().utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                    c => write!(f, "{c}")?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// The path `text` ([`shown`]'s output) stands for; `None` if it is not such an output. Text
/// without a backslash is the path it spells.
pub fn unescape(text: &str) -> Option<PathBuf> {
    if !text.contains('\\') {
        return Some(PathBuf::from(text));
    }
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let tail = &rest[at + 1..];
        rest = if let Some(t) = tail.strip_prefix('\\') {
            out.push(b'\\');
            t
        } else if let Some(t) = tail.strip_prefix('x') {
            let hex = t.get(..2)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            &t[2..]
        } else if let Some(t) = tail.strip_prefix("u{") {
            let end = t.find('}')?;
            let c = char::from_u32(u32::from_str_radix(&t[..end], 16).ok()?)?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            &t[end + 1..]
        } else {
            return None;
        };
    }
    out.extend_from_slice(rest.as_bytes());
    Some(PathBuf::from(OsString::from_vec(out)))
}

/// Serde for a path field: written escaped ([`shown`]), read back with [`unescape`].
pub mod serde_path {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::path::{Path, PathBuf};

    /// Writes `path` escaped.
    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::shown(path))
    }

    /// Reads an escaped path.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let text = String::deserialize(d)?;
        super::unescape(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an escaped path: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(bytes: &[u8]) -> PathBuf {
        PathBuf::from(OsString::from_vec(bytes.to_vec()))
    }

    #[test]
    fn odd_bytes_are_escaped_and_come_back() {
        for (bytes, text) in [
            (&b"/images/a.tar"[..], "/images/a.tar"),
            (b"/images/caf\xc3\xa9.tar", "/images/caf\u{e9}.tar"),
            (b"/images/\xff\xfe.tar", "/images/\\xff\\xfe.tar"),
            (
                b"/images/a\nb\x1b[31m.tar",
                "/images/a\\u{a}b\\u{1b}[31m.tar",
            ),
            (b"/images/back\\slash\\x41", "/images/back\\\\slash\\\\x41"),
        ] {
            let p = path(bytes);
            assert_eq!(shown(&p).to_string(), text);
            assert_eq!(unescape(text), Some(p));
        }
    }

    #[test]
    fn what_was_not_escaped_is_refused() {
        for text in ["a\\", "a\\q", "a\\x4", "a\\xzz", "a\\u{110000}", "a\\u{41"] {
            assert_eq!(unescape(text), None, "{text}");
        }
    }

    #[test]
    fn records_keep_odd_paths() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct R {
            #[serde(with = "serde_path")]
            path: PathBuf,
        }
        let r = R {
            path: path(b"/images/\xff.tar"),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"path":"/images/\\xff.tar"}"#);
        assert_eq!(serde_json::from_str::<R>(&json).unwrap(), r);
    }
}
