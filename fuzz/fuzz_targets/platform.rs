//! Fuzz target `platform`: runs [`airlift::testkit::fuzz::platform`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::testkit::fuzz::platform(data));
