//! Fuzz target `filters`: runs [`airlift::testkit::fuzz::filters`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::testkit::fuzz::filters(data));
