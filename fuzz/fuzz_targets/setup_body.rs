//! Fuzz target `setup_body`: see [`mixnn_fuzz::wire_checks::setup_body`] for what it
//! feeds to which decoder, and what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mixnn_fuzz::wire_checks::setup_body(data));
