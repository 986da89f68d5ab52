//! Fuzz target `hop`: see [`mixnn_fuzz::hop_checks`] for the session it drives and what it
//! checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mixnn_fuzz::hop_checks::hop(data));
