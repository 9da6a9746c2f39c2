//! The test kit: what airlift's tests share, compiled for the crate's own unit tests and, with
//! the `testkit` feature, for the end-to-end tests (`integration/`) and the fuzz targets
//! (`fuzz/`) — never into the shipped library or binary.
//!
//! - [`fake`] — an in-memory containerd implementing every service trait of
//!   [`crate::containerd`], recording each call and failing the ones it is told to: the seam the
//!   unit tests of everything above containerd stand on;
//! - [`behaviour`] — what airlift relies on containerd to do (leases holding content and
//!   snapshots, the garbage collector following `containerd.io/gc.ref.*` labels, image events,
//!   claims of shared content, verified commits), written once and run against the fake in the
//!   unit tests and against real containerd 2.x and 1.7 end to end, so the fake cannot drift;
//! - [`conformance`] — what every [`crate::store::ContentStore`] home must do, and the Content
//!   API's wire semantics ([`conformance::content_api`]), run against every home;
//! - [`memory`] — an in-memory content store;
//! - [`fuzz`] — what each `cargo fuzz` target runs on one input.

pub mod behaviour;
pub mod conformance;
pub mod fake;
pub mod fuzz;
pub mod memory;
