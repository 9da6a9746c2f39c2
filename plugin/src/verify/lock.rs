//! The digest lock: a list of `NAME@sha256:<hex>` lines (what a bundle's builder writes down)
//! saying which digest each listed name must import with. Names not listed are not held to
//! anything.
//!
//! Names are normalised as containerd names images (`nginx:1.27` →
//! `docker.io/library/nginx:1.27`, a name without a tag means `:latest`). Blank lines and lines
//! starting with `#` are skipped. A name listed twice with different digests is refused at
//! load.

use crate::digest::Digest;
use crate::reference::Reference;
use std::collections::BTreeMap;
use std::path::Path;

/// A loaded lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    /// Name → the digest it must have, and the line that says so.
    entries: BTreeMap<Reference, (Digest, usize)>,
    /// The file, for messages.
    file: String,
}

/// Why a lock file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The file cannot be read.
    #[error("cannot read lock file {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// A line that is not `NAME@sha256:<hex>`.
    #[error("lock file {file}, line {line}: {why}")]
    Line {
        file: String,
        line: usize,
        why: String,
    },
    /// One name locked to two digests.
    #[error("lock file {file}, line {line}: {name} is locked to {first} on line {first_line}, and here to {second}")]
    Conflict {
        file: String,
        line: usize,
        /// The name, normalised.
        name: String,
        first: Digest,
        first_line: usize,
        second: Digest,
    },
    /// An image whose digest is not the one its name is locked to ([`Lock::check`]).
    #[error("lock says {locked} for {name} ({file}, line {line}), the image is {actual}")]
    Mismatch {
        /// The name, normalised.
        name: String,
        locked: Digest,
        actual: Digest,
        file: String,
        line: usize,
    },
}

impl Lock {
    /// The names locked to each digest (what names an image an archive leaves unnamed).
    pub fn by_digest(&self) -> std::collections::BTreeMap<Digest, Vec<String>> {
        let mut out: std::collections::BTreeMap<Digest, Vec<String>> = Default::default();
        for (name, (digest, _)) in &self.entries {
            out.entry(digest.clone())
                .or_default()
                .push(name.to_string());
        }
        out
    }

    /// Reads the lock file at `path`.
    pub fn load(path: &Path) -> Result<Lock, LockError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LockError::Read {
            file: file.clone(),
            source,
        })?;
        Lock::parse(&text, &file)
    }

    /// Reads lock lines from `text`; `file` names it in messages.
    pub fn parse(text: &str, file: &str) -> Result<Lock, LockError> {
        let mut entries: BTreeMap<Reference, (Digest, usize)> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let bad = |why: String| LockError::Line {
                file: file.to_string(),
                line,
                why,
            };
            let (name, digest) = l
                .rsplit_once('@')
                .ok_or_else(|| bad(format!("{l:?} is not NAME@sha256:<hex>")))?;
            let digest: Digest = digest.parse().map_err(|e| bad(format!("{e}")))?;
            let name = Reference::parse_normalized(name).map_err(|e| bad(e.to_string()))?;
            match entries.get(&name) {
                Some((first, _)) if *first == digest => {}
                Some((first, first_line)) => {
                    return Err(LockError::Conflict {
                        file: file.to_string(),
                        line,
                        name: name.to_string(),
                        first: first.clone(),
                        first_line: *first_line,
                        second: digest,
                    })
                }
                None => {
                    entries.insert(name, (digest, line));
                }
            }
        }
        Ok(Lock {
            entries,
            file: file.to_string(),
        })
    }

    /// Whether `name` may import with `digest`: yes when the name is not listed or listed
    /// with this digest.
    pub fn check(&self, name: &Reference, digest: &Digest) -> Result<(), LockError> {
        match self.entries.get(name) {
            Some((locked, line)) if locked != digest => Err(LockError::Mismatch {
                name: name.to_string(),
                locked: locked.clone(),
                actual: digest.clone(),
                file: self.file.clone(),
                line: *line,
            }),
            _ => Ok(()),
        }
    }

    /// The digest `name` is locked to, if listed.
    pub fn get(&self, name: &Reference) -> Option<&Digest> {
        self.entries.get(name).map(|(d, _)| d)
    }

    /// How many names are locked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no name is locked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &[u8]) -> Digest {
        Digest::of(s)
    }

    fn name(s: &str) -> Reference {
        Reference::parse_normalized(s).unwrap()
    }

    #[test]
    fn parses_lines_comments_and_normalises_names() {
        let text = format!(
            "# site lock\n\n  nginx:1.27@{a}\nregistry.example.com:5000/team/app@{b}\n\tnginx:1.27@{a}  \n",
            a = d(b"a"),
            b = d(b"b")
        );
        let lock = Lock::parse(&text, "site.lock").unwrap();
        assert_eq!(lock.len(), 2);
        assert_eq!(
            lock.get(&name("docker.io/library/nginx:1.27")),
            Some(&d(b"a"))
        );
        // a name without a tag is :latest, as containerd names it
        assert_eq!(
            lock.get(&name("registry.example.com:5000/team/app:latest")),
            Some(&d(b"b"))
        );
        assert!(Lock::parse("", "empty").unwrap().is_empty());
    }

    #[test]
    fn check_holds_listed_names_only() {
        let lock = Lock::parse(&format!("nginx:1.27@{}\n", d(b"a")), "/etc/airlift/lock").unwrap();
        // listed with this digest; not listed
        assert!(lock.check(&name("nginx:1.27"), &d(b"a")).is_ok());
        assert!(lock.check(&name("nginx:1.28"), &d(b"b")).is_ok());
        let e = lock
            .check(&name("docker.io/library/nginx:1.27"), &d(b"b"))
            .unwrap_err();
        assert!(matches!(&e, LockError::Mismatch { locked, .. } if *locked == d(b"a")));
        assert_eq!(
            e.to_string(),
            format!(
                "lock says {} for docker.io/library/nginx:1.27 (/etc/airlift/lock, line 1), the image is {}",
                d(b"a"),
                d(b"b")
            )
        );
    }

    #[test]
    fn refuses_conflicts_and_bad_lines() {
        let text = format!(
            "nginx:1.27@{}\n# x\ndocker.io/library/nginx:1.27@{}\n",
            d(b"a"),
            d(b"b")
        );
        let e = Lock::parse(&text, "site.lock").unwrap_err();
        assert!(
            matches!(
                e,
                LockError::Conflict {
                    line: 3,
                    first_line: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("docker.io/library/nginx:1.27 is locked to"),
            "{e}"
        );

        for (bad, want) in [
            ("nginx:1.27".to_string(), "is not NAME@sha256:<hex>"),
            ("nginx@sha256:abc".to_string(), "invalid digest"),
            (format!("Not/Valid@{}", d(b"a")), "invalid image reference"),
            (format!("@{}", d(b"a")), "invalid image reference"),
        ] {
            let e = Lock::parse(&format!("\n{bad}\n"), "l")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("lock file l, line 2: "), "{e}");
            assert!(e.contains(want), "{bad}: {e}");
        }
        let missing = Lock::load(Path::new("/nonexistent/airlift.lock")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/airlift.lock"),
            "{missing}"
        );
    }
}
