//! Writes the seed corpora: valid encodings of every message kind, in each target's input
//! format, under `corpus/<target>/` (or the directory given as the only argument).
//!
//! Built without libFuzzer and wasmtime (`--no-default-features --features seeds`), so it
//! is quick; `scripts/fuzz.sh` runs it before fuzzing. Files are named by their content's
//! hash (FNV-1a), so a run adds what is new and keeps what the fuzzer found.

#![forbid(unsafe_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use mixnn_fuzz::{hop_input, wire_seeds};

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn write(dir: &Path, target: &str, inputs: &[Vec<u8>]) -> std::io::Result<usize> {
    let dir = dir.join(target);
    fs::create_dir_all(&dir)?;
    for input in inputs {
        fs::write(dir.join(format!("seed-{:016x}", fnv1a(input))), input)?;
    }
    Ok(inputs.len())
}

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut all = wire_seeds::all();
    all.push(("hop", hop_input::seeds()));
    for (target, inputs) in &all {
        match write(&dir, target, inputs) {
            Ok(n) => println!("{target}: {n} seeds in {}", dir.join(target).display()),
            Err(e) => {
                eprintln!("seeds: cannot write {}: {e}", dir.join(target).display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
