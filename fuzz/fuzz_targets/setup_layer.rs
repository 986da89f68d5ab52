//! Fuzz target `setup_layer`: see [`mixnn_fuzz::wire_checks::setup_layer`] for what it
//! feeds to which decoder, and what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mixnn_fuzz::wire_checks::setup_layer(data));
