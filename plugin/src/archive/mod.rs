//! The archive side of the journey: decode → walk → understand. It lives in the
//! `airlift-archive` crate (`archive/` at the repository's root), which never talks to
//! containerd — the compiler holds that line — and is re-exported here under its old paths.

pub use airlift_archive::{decode, readahead, spill, understand, walk};
