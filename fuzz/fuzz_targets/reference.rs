//! Fuzz target `reference`: runs [`airlift::testkit::fuzz::reference`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::testkit::fuzz::reference(data));
