//! Fuzz target `platform`: runs [`airlift::fuzzing::platform`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::fuzzing::platform(data));
