//! Fuzz target `filters`: runs [`airlift::fuzzing::filters`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::fuzzing::filters(data));
