//! Fuzz target `config`: runs [`airlift::testkit::fuzz::config`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::testkit::fuzz::config(data));
