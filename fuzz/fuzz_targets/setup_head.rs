//! Fuzz target `setup_head`: see [`mixnn_fuzz::wire_checks::setup_head`] for what it
//! feeds to which decoder, and what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mixnn_fuzz::wire_checks::setup_head(data));
