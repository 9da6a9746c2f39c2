//! The test kit: what airlift's tests share, compiled for the crate's own unit tests and, with
//! the `testkit` feature, for the end-to-end tests (`integration/`) and the fuzz targets
//! (`fuzz/`) — never into the shipped library or binary.
//!
//! - [`fake`] — an in-memory containerd implementing every service trait of
//!   [`crate::containerd`], recording each call and failing the ones it is told to: the seam the
//!   unit tests of everything above containerd stand on;
//! - [`conformance`] — what every [`crate::store::ContentStore`] home must do, and the Content
//!   API's wire semantics ([`conformance::content_api`]), run against every home;
//! - [`memory`] — an in-memory content store;
//! - [`fuzz`] — what each `cargo fuzz` target runs on one input.

pub mod conformance;
pub mod fake;
pub mod fuzz;
pub mod memory;
