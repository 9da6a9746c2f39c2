//! The archive side of airlift: what it takes to read a container image archive, and nothing
//! that talks to containerd — a crate of its own, so that the compiler holds that line.
//!
//! An archive travels a straight line through it: [`decode`] (compression by magic bytes; a
//! large zstd window spilled to a file by [`spill`], decoding ahead on its own thread in
//! [`readahead`]) → [`walk`] (tar entries, refusing escapes) → [`understand`] (OCI layout /
//! docker save → a plan of images and labels, and of the signatures and referrers carried for
//! them, [`understand::attached`]). Beside them, the value types every station of
//! airlift shares: [`digest`], [`reference`](mod@reference), [`platform`], the image formats
//! ([`oci`]), paths as text ([`escape`]), and the two system calls the archive side makes
//! ([`sys`]). The `airlift` crate re-exports each under its old path (`airlift::digest`,
//! `airlift::archive::decode`, …).

pub mod decode;
pub mod digest;
pub mod escape;
pub mod oci;
pub mod platform;
pub mod readahead;
pub mod reference;
pub mod spill;
pub mod sys;
pub mod understand;
pub mod walk;
