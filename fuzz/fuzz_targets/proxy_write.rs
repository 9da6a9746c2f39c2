//! Fuzz target `proxy_write`: runs [`airlift::fuzzing::proxy_write`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::fuzzing::proxy_write(data));
