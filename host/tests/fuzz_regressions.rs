//! The `hop` fuzz target's findings, replayed on stable as ordinary tests: every file under
//! `fuzz/regressions/hop/` is a scenario (`fuzz/src/hop_input.rs`) that runs through the
//! same harness and checks as the cargo-fuzz target (`fuzz/src/hop_checks.rs`, included
//! here by path: one copy of them), on a real hop with the standard layer components; so do
//! the seed scenarios, which train, test and export as a designer would and must pass.
//!
//! How files get there: when `scripts/fuzz.sh` finds a crash, libFuzzer leaves the input in
//! `fuzz/artifacts/hop/crash-<sha1>` (the script prints the path); minimise it with
//! `cargo fuzz tmin hop <that file>` (in `fuzz/`), then copy the minimised input to
//! `fuzz/regressions/hop/` under a name that says what it found, and commit it with the fix.
//! A missing or empty directory passes. `MIXNN_FUZZ_CORPUS=1` also replays
//! `fuzz/corpus/hop/` (the seeds and what the fuzzer kept).
//!
//! The wire targets' regressions are replayed by `wire/tests/fuzz_regressions.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::{
    fs,
    path::{Path, PathBuf},
};

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/input.rs"]
mod input;

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/fixtures.rs"]
mod fixtures;

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/hop_input.rs"]
mod hop_input;

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/hop_checks.rs"]
mod hop_checks;

/// The files of `fuzz/<kind>/hop/` (none if it does not exist), sorted; dot files and notes
/// (`*.md`) are not inputs.
fn inputs(kind: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join("hop");
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && !name.ends_with(".md")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

#[test]
fn hop() {
    let mut kinds = vec!["regressions"];
    if std::env::var_os("MIXNN_FUZZ_CORPUS").is_some_and(|v| v == "1") {
        kinds.push("corpus");
    }
    for kind in kinds {
        for (path, bytes) in inputs(kind) {
            // Captured, and shown if the check panics: which file it was.
            eprintln!("hop: replaying {}", path.display());
            hop_checks::hop(&bytes);
        }
    }
}

/// A designer's own traffic, and the refusals among it, pass every check of the harness in
/// every role.
#[test]
fn seeds_pass_the_checks() {
    let seeds = hop_input::seeds();
    assert!(!seeds.is_empty());
    for (i, seed) in seeds.iter().enumerate() {
        eprintln!("hop: seed {i} (role {})", seed[0]);
        hop_checks::hop(seed);
    }
}
