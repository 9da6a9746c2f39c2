//! Fuzzing: the code each `cargo fuzz` target in `fuzz/` runs on one input (one file each here),
//! shared with the test that replays every saved reproducer and seed
//! (`integration/tests/fuzz_regressions.rs`), so that a crash the fuzzer found stays a failing
//! test until it is fixed. The harnesses call airlift's own functions for everything they
//! exercise; what they add is the input's reading and the properties they check.
//!
//! Every function takes arbitrary bytes and must never panic, except where it checks a property
//! of airlift (an `assert!` saying what broke). Each is deterministic, touches no network and
//! removes whatever it creates before it returns. Memory and time per input are bounded: an
//! archive may decode to at most [`DECODED_LIMIT`] bytes before it is ingested (a decompression
//! bomb is only walked that far), blobs larger than that are refused by the in-memory store the
//! ingest writes to, as a full disk would refuse them, and a Write session runs at most
//! [`WRITE_OPS`] requests.
//!
//! The targets:
//!
//! - [`archive()`]: bytes as an archive file, through decode, walk, ingest (into memory) and
//!   planning with several option sets; decoding must not depend on read sizes, and every image of
//!   a plan must be able to find each of its blobs;
//! - [`understand()`]: a list of named files whose digests are taken on trust (the names declare
//!   them, as a real archive's would if the fuzzer could forge SHA-256), through planning, so that
//!   manifests and indexes the fuzzer mutates still reach the planner;
//! - [`reference()`]: image references, compared with containerd's own grammar
//!   (`reference/docker.ParseDockerRef`);
//! - [`platform()`]: platform parsing, normalisation and matching;
//! - [`filters()`]: containerd's filter syntax, parsed and evaluated against labelled items;
//! - [`config()`]: the daemon's configuration file;
//! - [`proxy_write()`]: the content proxy's `Write` streams (STAT, WRITE, COMMIT, and Abort),
//!   interpreted from bytes, against a model of what each request must answer; committed blobs
//!   must hash to their digest.

mod archive;
mod config;
mod filters;
mod platform;
mod proxy_write;
mod reference;
mod understand;

pub use archive::archive;
pub use config::config;
pub use filters::filters;
pub use platform::platform;
pub use proxy_write::proxy_write;
pub use reference::reference;
pub use understand::understand;

/// Most bytes an input may decode to and still be ingested; beyond that it is only walked this
/// far.
pub const DECODED_LIMIT: u64 = 4 << 20;

/// Most requests (and other operations) one [`proxy_write()`] input runs.
pub const WRITE_OPS: usize = 64;
