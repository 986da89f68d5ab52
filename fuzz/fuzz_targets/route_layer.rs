//! Fuzz target `route_layer`: see [`mixnn_fuzz::wire_checks::route_layer`] for what it
//! feeds to which decoder, and what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mixnn_fuzz::wire_checks::route_layer(data));
