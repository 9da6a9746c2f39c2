//! Fuzz target `archive`: runs [`airlift::fuzzing::archive`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::fuzzing::archive(data));
