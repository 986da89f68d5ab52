//! The fuzzers' findings, replayed on stable as ordinary tests: every file under
//! `fuzz/regressions/<target>/` goes through the same checks as the cargo-fuzz target of
//! that name (`fuzz/src/wire_checks.rs`, included here by path, so there is one copy of
//! them), and so do the seed inputs (`fuzz/src/wire_seeds.rs`: valid messages of every
//! kind, which the checks must take).
//!
//! How files get there: when `scripts/fuzz.sh` finds a crash, libFuzzer leaves the input in
//! `fuzz/artifacts/<target>/crash-<sha1>` (the script prints the path); minimise it with
//! `cargo fuzz tmin <target> <that file>` (in `fuzz/`), then copy the minimised input to
//! `fuzz/regressions/<target>/` under a name that says what it found, and commit it with the
//! fix. A missing or empty directory passes. `MIXNN_FUZZ_CORPUS=1` also replays whatever is
//! in `fuzz/corpus/<target>/` (the seeds and what the fuzzer kept).
//!
//! The `hop` target's regressions are replayed by `host/tests/fuzz_regressions.rs`.

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
#[path = "../../fuzz/src/wire_checks.rs"]
mod wire_checks;

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/wire_seeds.rs"]
mod wire_seeds;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>/` (none if it does not exist), sorted; dot files and
/// notes (`*.md`) are not inputs.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(fuzz_dir().join(kind).join(target)) else {
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

fn check(target: &str) -> fn(&[u8]) {
    wire_checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .unwrap_or_else(|| panic!("no wire target {target}"))
}

/// Replays the regressions (and, with `MIXNN_FUZZ_CORPUS=1`, the corpus) of `target`.
fn replay(target: &str) {
    let check = check(target);
    let mut kinds = vec!["regressions"];
    if std::env::var_os("MIXNN_FUZZ_CORPUS").is_some_and(|v| v == "1") {
        kinds.push("corpus");
    }
    for kind in kinds {
        for (path, bytes) in inputs(kind, target) {
            // Captured, and shown if the check panics: which file it was.
            eprintln!("{target}: replaying {}", path.display());
            check(&bytes);
        }
    }
}

#[test]
fn frame_body() {
    replay("frame_body");
}

#[test]
fn setup_head() {
    replay("setup_head");
}

#[test]
fn setup_layer() {
    replay("setup_layer");
}

#[test]
fn setup_body() {
    replay("setup_body");
}

#[test]
fn blob() {
    replay("blob");
}

#[test]
fn report() {
    replay("report");
}

#[test]
fn export_slot() {
    replay("export_slot");
}

#[test]
fn route_layer() {
    replay("route_layer");
}

#[test]
fn descriptor() {
    replay("descriptor");
}

#[test]
fn directory_answer() {
    replay("directory_answer");
}

#[test]
fn stream_header() {
    replay("stream_header");
}

#[test]
fn every_target_has_a_test_here() {
    let here = include_str!("fuzz_regressions.rs");
    for (name, _) in wire_checks::TARGETS {
        assert!(
            here.contains(&format!("replay(\"{name}\")")),
            "add a test that replays {name}"
        );
    }
}

/// Valid messages of every kind pass every check: the checks are no stricter than the
/// format, and the seeds still say what the library makes.
#[test]
fn seeds_pass_the_checks() {
    for (target, seeds) in wire_seeds::all() {
        let check = check(target);
        assert!(!seeds.is_empty(), "{target} has no seeds");
        for (i, seed) in seeds.iter().enumerate() {
            eprintln!("{target}: seed {i}");
            check(seed);
        }
    }
}
