//! Builds the layer components for `wasm32-wasip2` with a nested cargo (its own target
//! directory, the workspace's `guest` profile, SIMD on) and embeds them.

use std::{
    env,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";

/// (constant name, package): the standard layers.
const STANDARD: &[(&str, &str)] = &[
    ("LINEAR", "mixnn-component-linear"),
    ("RELU", "mixnn-component-relu"),
    ("LINEAR_RELU", "mixnn-component-linear-relu"),
    ("LOG_SOFTMAX", "mixnn-component-log-softmax"),
    ("NLL_LOSS", "mixnn-component-nll-loss"),
    (
        "SOFTMAX_CROSS_ENTROPY",
        "mixnn-component-softmax-cross-entropy",
    ),
    ("MSE_LOSS", "mixnn-component-mse-loss"),
    ("IDENTITY", "mixnn-component-identity"),
    ("CONV2D", "mixnn-component-conv2d"),
    ("FLATTEN", "mixnn-component-flatten"),
    ("MAX_POOL2D", "mixnn-component-max-pool2d"),
    ("AVG_POOL2D", "mixnn-component-avg-pool2d"),
    ("DROPOUT", "mixnn-component-dropout"),
    ("BATCH_NORM2D", "mixnn-component-batch-norm2d"),
];

/// Built with the `test-guests` feature.
const TEST_GUESTS: &[(&str, &str)] = &[
    ("SCALED_SWISH", "scaled-swish"),
    ("HOSTILE", "mixnn-test-hostile"),
    ("READS_FILE", "mixnn-test-reads-file"),
];

fn main() {
    if let Err(message) = run() {
        // A build script reports through a panic; say what to do.
        panic!("\n\nbuilding the layer components failed: {message}\n\n");
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = manifest
        .ancestors()
        .nth(2)
        .ok_or("cannot find the workspace root")?
        .to_path_buf();
    for dir in ["wit", "kernels", "layer-guest", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let mut guests: Vec<(&str, &str)> = STANDARD.to_vec();
    if env::var_os("CARGO_FEATURE_TEST_GUESTS").is_some() {
        guests.extend_from_slice(TEST_GUESTS);
    }

    check_target_installed()?;
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--locked",
            "--target",
            TARGET,
            "--profile",
            PROFILE,
            "--target-dir",
        ])
        .arg(&target_dir);
    for (_, package) in &guests {
        cmd.args(["-p", package]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are not for the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("`cargo build --target {TARGET}` failed ({status})"));
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let built = target_dir.join(TARGET).join(PROFILE);
    let mut code = String::new();
    for (name, package) in &guests {
        let file = format!("{}.wasm", package.replace('-', "_"));
        let dest = out_dir.join(&file);
        fs::copy(built.join(&file), &dest)
            .map_err(|e| format!("cannot copy {}: {e}", built.join(&file).display()))?;
        let _ = writeln!(
            code,
            "/// The `{package}` component.\npub const {name}: &[u8] = include_bytes!({:?});",
            dest.display()
        );
    }
    fs::write(out_dir.join("components.rs"), code).map_err(|e| e.to_string())
}

fn check_target_installed() -> Result<(), String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .exists()
    {
        Ok(())
    } else {
        Err(format!(
            "the {TARGET} target is not installed: run `rustup target add {TARGET}`"
        ))
    }
}
