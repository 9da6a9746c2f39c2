//! Fuzz target `config`: runs [`airlift::fuzzing::config`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::fuzzing::config(data));
