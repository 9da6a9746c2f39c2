//! airlift puts container images into containerd from archives on disk, for nodes that cannot
//! or should not pull from a registry.
//!
//! # Layout
//!
//! The modules are the stations of one archive's journey — decode → walk → understand → store →
//! record — and imports point one way along it: nothing downstream is used upstream, and the
//! archive side never talks to containerd.
//!
//! - [`archive`] — the archive side: [`archive::decode`] (compression by magic bytes; a large
//!   zstd window spilled to a file by [`archive::spill`], decoding ahead on its own thread in
//!   [`archive::readahead`]) → [`archive::walk`] (tar entries, refusing escapes) →
//!   [`archive::understand`] (OCI layout / docker save → a plan of images and labels, of the
//!   platforms the node runs and of those it only serves to others). It is the
//!   `airlift-archive` crate (`archive/`), with [`oci`] and the value types below: a crate that
//!   does not depend on this one, so nothing on the archive side can talk to containerd; each
//!   of its modules is re-exported here under its old path;
//! - [`oci`] — the image formats themselves (media types, descriptors, manifests, indexes,
//!   configs, containerd's GC labels), shared by the archive side, ingest, unpacking, the
//!   registry endpoint, client pulls and the visibility walk;
//! - [`store`] — the one content-store trait and its homes (direct into containerd's content
//!   root, streamed over the Content API, airlift's own store for the content proxy) and the
//!   content root's layout ([`store::layout`]);
//! - [`ingest`] — drives an archive through decode and walk into the store, producing the
//!   inventory the plan is made from (and telling an observer of each blob as it is stored);
//! - [`unpack`] — the images of the selected platforms (never one only served) unpacked into a
//!   snapshotter through containerd's snapshot and diff services, each chain as soon as its
//!   layer is stored, while the archive is still read ([`unpack::scheduler`]); also, later,
//!   from containerd's content;
//! - [`import`] — one source's import and its vocabulary (source, options, report, errors, the
//!   precedence question): an archive read into the store and planned ([`import::archive`]),
//!   then verification's gate between plan and record when asked for ([`verify::gate`]; a
//!   docker-save archive's signatures from the file beside it, [`import::sidecar`]), then the
//!   record step ([`import::record`]: labels, the archive's pinned lease, image records, last),
//!   unpacking beside it when asked;
//! - [`pull`] — the pull side: `.txt` pull lists ([`pull::list`]: containerd pulls, then the
//!   archive's record step pins, leases and records), airlift's own client pull for containerd
//!   1.7 (hosts resolved from the hosts directory as containerd does, [`hosts::read`]; content
//!   fetched over HTTP(S) with registry tokens by its registry client, [`pull::client`],
//!   straight into the content store), and `airlift serve --follow URL` ([`pull::follow`]: a
//!   peer's registry endpoint listed and kept as a pull list of the daemon's own); under a
//!   policy, what a list pulled is verified before it is pinned ([`pull::verified`]);
//! - [`state`] — what airlift remembers of each archive, in a numbered state format (a record
//!   of a newer one is refused and left alone), and whether (and how) a record still stands in
//!   containerd ([`state::verify`]);
//! - [`service`] — the one import flow, for archives and pull lists, whoever asks (`airlift
//!   import`, the daemon, through it the API): containerd reached or waited for
//!   ([`service::connection`]), where blobs may be written and what dead processes left there
//!   ([`service::placement`]), an unchanged source answered from its record
//!   ([`service::recall`]), the import or pull tried again while containerd fails and the
//!   record it leaves ([`service::job`]), the options built from flags or the configuration
//!   ([`service::options`]);
//! - [`pins`] — what containerd must show of a name airlift provides (its winner's target and
//!   labels), and the one place that writes it or takes the pins off;
//! - [`leftovers`] — what dead airlift processes left behind, removed ([`liveness`] tells who
//!   is dead, across PID namespaces);
//! - [`daemon`] — `airlift serve`: startup, reconciliation per archive, the rule for names
//!   several archives provide ([`daemon::names`]), repairs following containerd's events
//!   ([`daemon::repair`]), import slots in priority order, the directory watcher, the API server
//!   and metrics; configured by [`config`];
//! - [`registry`] — the namespace's images served read-only over the OCI Distribution API
//!   (to other nodes: containerd mirrors, skopeo): which images and what each reaches
//!   ([`registry::served`]), repository names ([`registry::names`]), blobs by `sendfile` from
//!   the content root ([`registry::http`]), TLS with client certificates ([`registry::tls`]);
//!   started by [`daemon`];
//! - [`mirrors`] — `airlift mirrors`: containerd's `hosts.toml` files written from a k3s
//!   `registries.yaml` and the peers (other nodes' registry endpoints, tried first), the image's
//!   own registry always last: [`mirrors::registries`] (the YAML) → [`mirrors::plan`] (the
//!   files to write) → [`mirrors::files`] (written atomically, what they replace kept, taken
//!   away by `--remove`); run by [`cli`] and at [`daemon`] start;
//! - [`hosts`] — containerd's registry hosts directory in one home: the rules containerd
//!   applies to it, its reading as containerd resolves a registry's hosts ([`hosts::read`]),
//!   the text of the `hosts.toml` files airlift writes ([`hosts::write`]), and the one reader of
//!   endpoint URLs ([`hosts::endpoint`], on the `url` crate);
//! - [`verify`] — whether policy allows an image, decided offline at import: a
//!   containers-policy.json(5) file ([`verify::policy`]) evaluated against the cosign
//!   signatures found for the image's digest ([`verify::signature`]: simple signing and
//!   Sigstore bundles), the digest lock ([`verify::lock`]), and containerd's image verifier
//!   plugins run as containerd runs them on a pull ([`verify::bindir`]); the three loaded from
//!   `[verify]` or the flags and applied to an import's plan by [`verify::gate`];
//! - [`visibility`] — what others see of an image: a Spegel-style walk of its content (every
//!   blob present with its distribution source) and CRI's view (`airlift verify`);
//! - [`proxy`] — containerd's content service over [`store::local`], for running airlift as
//!   containerd's content proxy plugin;
//! - [`cli`] — the command line, a thin adapter over [`service`], [`daemon`] and [`api`]; the
//!   daemon is one too, between its own parts (import slots, the rule for shared names,
//!   repairs); its man pages and shell completions are made from it ([`cli::generate`]);
//! - `testkit` (compiled for the crate's tests and with the `testkit` feature, which
//!   `integration/` and `fuzz/` turn on; never shipped) — what the tests share: the in-memory
//!   containerd fake, the behaviour suite that holds it to real containerd 2.x and 1.7, the
//!   content-store conformance suite every home passes, an in-memory store, and what each
//!   `cargo fuzz` target (`fuzz/`) runs on one input;
//! - the edges every station uses: [`containerd`] (the operations airlift asks of containerd,
//!   one trait per containerd service — content, leases, images, snapshots and diff, events,
//!   introspection, transfer — summed in [`containerd::Containerd`], each with its gRPC client
//!   in [`containerd::grpc`] and its fake in the test kit), [`api`] (airlift's own gRPC API),
//!   [`error`] (containerd's error classes and their one mapping to gRPC codes), [`labels`] (the
//!   names airlift writes into containerd), [`escape`] (paths as text, escaped and
//!   reversible), [`sys`] (system calls, through safe wrappers);
//! - value types: [`digest`], [`reference`](mod@reference), [`platform`], and [`filters`]
//!   (containerd's filter syntax, for the Content API's `List` and the fake).
//!
//! Two seams carry the tests: [`containerd::Containerd`], whose fake lets everything above it
//! be unit-tested (ordering, pins, repair, recall, claims) and one behaviour suite holds to what
//! real containerd does, and [`store::ContentStore`], whose conformance suite runs against every
//! home.

pub use airlift_archive::{digest, escape, oci, platform, reference};

pub mod api;
pub mod archive;
pub mod cli;
pub mod config;
pub mod containerd;
pub mod daemon;
pub mod error;
pub mod filters;
pub mod hosts;
pub mod import;
pub mod ingest;
pub mod labels;
pub mod leftovers;
pub mod liveness;
pub mod mirrors;
pub mod pins;
pub mod proxy;
pub mod pull;
pub mod registry;
pub mod service;
pub mod state;
pub mod store;
pub mod sys;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod unpack;
pub mod verify;
pub mod visibility;

#[cfg(test)]
mod testing;
