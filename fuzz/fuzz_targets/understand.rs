//! Fuzz target `understand`: runs [`airlift::testkit::fuzz::understand`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::testkit::fuzz::understand(data));
