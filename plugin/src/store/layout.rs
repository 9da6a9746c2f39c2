//! The content root's layout: containerd's (`io.containerd.content.v1.content`), plus the two
//! directories airlift keeps beside it. Every path into a content root is made here.
//!
//! - `blobs/sha256/<hex>` — committed blobs, read-only;
//! - `ingest/<sha256 of the ref>/` — one directory per ingest in progress: `ref`, `data`,
//!   `startedat`, `updatedat`, `total` (containerd's own files; airlift's store writes the same);
//! - `airlift.tmp/` — airlift's staged blobs and its processes' liveness locks (outside
//!   `ingest/`, which containerd's garbage collector owns);
//! - `airlift.labels/sha256/<hex>` — labels set through the Content API on airlift's own store.

use crate::digest::Digest;
use std::path::{Path, PathBuf};

/// Name of airlift's temporary directory inside the content root.
pub const TEMP_DIR: &str = "airlift.tmp";

/// Name of the directory of Content API labels in airlift's own store.
pub const LABELS_DIR: &str = "airlift.labels";

/// A content root: the paths of everything in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRoot {
    root: PathBuf,
}

impl ContentRoot {
    /// The content root at `root`.
    pub fn new(root: impl Into<PathBuf>) -> ContentRoot {
        ContentRoot { root: root.into() }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `blobs/sha256`.
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Where the blob `d` lives.
    pub fn blob(&self, d: &Digest) -> PathBuf {
        self.blobs().join(d.hex())
    }

    /// `ingest`.
    pub fn ingests(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// The directory of the ingest `reference` (named by the SHA-256 of the ref, as containerd).
    pub fn ingest(&self, reference: &str) -> PathBuf {
        self.ingests().join(Digest::of(reference.as_bytes()).hex())
    }

    /// airlift's temporary directory.
    pub fn temp(&self) -> PathBuf {
        self.root.join(TEMP_DIR)
    }

    /// The labels file of blob `d` in airlift's own store.
    pub fn labels(&self, d: &Digest) -> PathBuf {
        self.root.join(LABELS_DIR).join("sha256").join(d.hex())
    }

    /// Whether this root can be containerd's on this machine: it exists, or its parent
    /// (containerd's root, where it creates the content root lazily on its first blob) does.
    pub fn is_here(&self) -> bool {
        self.root.is_dir() || self.root.parent().is_some_and(Path::is_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_containerds() {
        let r = ContentRoot::new("/c");
        let d = Digest::of(b"x");
        assert_eq!(
            r.blob(&d),
            PathBuf::from(format!("/c/blobs/sha256/{}", d.hex()))
        );
        // containerd names an ingest directory after the digest of its ref.
        assert_eq!(
            r.ingest("ref"),
            PathBuf::from(format!("/c/ingest/{}", Digest::of(b"ref").hex()))
        );
        assert_eq!(r.temp(), PathBuf::from("/c/airlift.tmp"));
        assert_eq!(
            r.labels(&d),
            PathBuf::from(format!("/c/airlift.labels/sha256/{}", d.hex()))
        );
    }
}
