//! Fuzz target `understand`: runs [`airlift::fuzzing::understand`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::fuzzing::understand(data));
