//! airlift puts container images into containerd from archives on disk, for nodes that cannot
//! or should not pull from a registry.
//!
//! # Layout
//!
//! The modules are the stations of one archive's journey, and imports point one way along it:
//!
//! - [`archive`] — the archive side, which never talks to containerd:
//!   [`archive::decode`] (compression by magic bytes; a large zstd window spilled to a file by
//!   [`archive::spill`], decoding ahead on its own thread in [`archive::readahead`]) →
//!   [`archive::walk`] (tar entries, refusing escapes) → [`archive::understand`] (OCI layout /
//!   docker save → a plan of images and labels), with the formats themselves in [`archive::oci`];
//! - [`store`] — the one content-store abstraction and its homes (direct into containerd's
//!   content root, streamed over the Content API, in memory for tests), with the conformance
//!   suite every home passes;
//! - [`ingest`] — drives an archive through decode and walk into the store, producing the
//!   inventory the plan is made from;
//! - [`import`] — one import start to finish: leases, plan, then the record step (labels, the
//!   archive's pinned lease, image records);
//! - [`recall`] — answers a repeated `airlift import` of an unchanged archive from its record;
//! - [`containerd`] — the gRPC client, with containerd's error classes mapped in one place;
//! - [`digest`], [`reference`], [`platform`] — the value types everything shares;
//! - [`filters`] — containerd's filter syntax (`labels."example.com/x"==y`), parsed and matched
//!   for the Content API's `List` and `ListStatuses`;
//! - [`liveness`] — which airlift process owns a leftover, across PID namespaces;
//! - [`proxy`] — containerd's content service over a [`store::local`] store, for running airlift
//!   as containerd's content proxy plugin;
//! - [`daemon`] — `airlift serve`: startup reconciliation, the directory watcher, pins and
//!   leases following the archives, the API socket and metrics; configured by [`config`];
//! - [`cli`] — the command line, a thin adapter over [`import`] and [`daemon`].

pub mod archive;
pub mod cli;
pub mod config;
pub mod containerd;
pub mod daemon;
pub mod digest;
pub mod filters;
pub mod import;
pub mod ingest;
pub mod liveness;
pub mod platform;
pub mod proxy;
pub mod recall;
pub mod reference;
pub mod store;
