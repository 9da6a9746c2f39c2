//! Fuzz target `reference`: runs [`airlift::fuzzing::reference`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::fuzzing::reference(data));
