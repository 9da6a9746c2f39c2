//! Fuzz target `archive`: runs [`airlift::testkit::fuzz::archive`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::testkit::fuzz::archive(data));
