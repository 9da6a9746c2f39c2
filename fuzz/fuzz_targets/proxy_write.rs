//! Fuzz target `proxy_write`: runs [`airlift::testkit::fuzz::proxy_write`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| airlift::testkit::fuzz::proxy_write(data));
