//! mixnn's fuzz targets, as a library the targets (`fuzz_targets/`), the seed generator
//! (`src/bin/seeds.rs`) and the stable regression tests share.
//!
//! The regression tests (`wire/tests/fuzz_regressions.rs`, `host/tests/fuzz_regressions.rs`)
//! include these modules by `#[path]` rather than depend on this crate (which lives in its
//! own workspace, and may not be added to theirs): so each module uses only `std`,
//! `mixnn_wire`, and for the hop `mixnn_host`, `mixnn_sandbox` and `mixnn_components`, and names
//! its siblings by `crate::`.

#![forbid(unsafe_code)]

pub mod fixtures;
#[cfg(feature = "hop")]
pub mod hop_checks;
pub mod hop_input;
pub mod input;
pub mod wire_checks;
pub mod wire_seeds;
