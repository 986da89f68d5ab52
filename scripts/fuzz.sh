#!/usr/bin/env bash
# Runs mixnn's cargo-fuzz targets (fuzz/fuzz_targets/) for SECONDS each, after building them
# and writing the seed corpora; prints each target's executions and whether it crashed,
# writes fuzz/last-run.json, and exits non-zero if any target crashed.
#
# Sanitizer: none by default (FUZZ_SANITIZER=address to choose one). Every crate of ours is
# #![forbid(unsafe_code)], so what the fuzzers hunt are panics: out-of-range slices,
# arithmetic overflow (cargo-fuzz builds with debug assertions and overflow checks on), a
# failed assert of a harness, allocation by peer-chosen lengths (libFuzzer's -rss_limit_mb),
# hangs (-timeout). AddressSanitizer would only add checks of the unsafe code of our
# dependencies' Rust (wasmtime's runtime, bytemuck); aws-lc's C is not instrumented by
# -Zsanitizer anyway. It costs 2-3x in executions, and needs a nightly toolchain that also has
# the wasm32-wasip2 target (mixnn-components builds the layer components for it): worth a
# long run now and then, not every run.
#
# Toolchain: FUZZ_TOOLCHAIN, else nightly if a sanitizer is asked for or if nightly has the
# wasm32-wasip2 target (the hop target's layer components need it), else stable: cargo-fuzz
# needs nightly only for sanitizers; with none, stable builds the same instrumented targets.
#
# Environment: FUZZ_TOOLCHAIN, FUZZ_SANITIZER (none | address | ...), FUZZ_ARGS (more
# libFuzzer flags, e.g. "-jobs=2" or "-max_len=4096"), MIXNN_FUZZ_TRACE=1 (the hop target
# prints what each input does: for reading one crash, not for a run).

set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/fuzz.sh SECONDS [TARGET...]

Builds the fuzz targets (fuzz/, cargo-fuzz), writes the seed corpora (fuzz/corpus/), then runs
every target (or those named) for SECONDS seconds each. Prints per target its executions,
executions per second and whether it crashed; writes fuzz/last-run.json; exits 1 if any target
crashed (its input is in fuzz/artifacts/<target>/: see wire/tests/fuzz_regressions.rs for
making it a regression test), 2 if something needed is missing.

Targets: frame_body setup_head setup_layer setup_body blob report export_slot route_layer
         descriptor directory_answer stream_header hop

Environment: FUZZ_TOOLCHAIN (default: nightly if it has wasm32-wasip2, else stable),
             FUZZ_SANITIZER (default none), FUZZ_ARGS (extra libFuzzer flags).
EOF
}

die() {
    echo "fuzz.sh: $*" >&2
    exit 2
}

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    usage
    [[ $# -ge 1 ]] && exit 0
    exit 2
fi
seconds=$1
shift
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { usage >&2; die "SECONDS must be a positive whole number, not '$seconds'"; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fuzz="$root/fuzz"
cd "$fuzz"

all_targets=()
for f in fuzz_targets/*.rs; do
    all_targets+=("$(basename "$f" .rs)")
done
if [[ $# -gt 0 ]]; then
    targets=("$@")
    for t in "${targets[@]}"; do
        [[ -f fuzz_targets/$t.rs ]] || die "no target '$t' (targets: ${all_targets[*]})"
    done
else
    targets=("${all_targets[@]}")
fi

# --- What is needed, said plainly if missing -----------------------------------------------
command -v cargo >/dev/null || die "missing: cargo (install Rust with rustup: https://rustup.rs)"
command -v rustup >/dev/null || die "missing: rustup (needed to pick the toolchain: cargo +TOOLCHAIN)"

has_wasm_target() {
    local sysroot
    sysroot=$(rustup run "$1" rustc --print sysroot 2>/dev/null) || return 1
    [[ -d $sysroot/lib/rustlib/wasm32-wasip2 ]]
}
has_toolchain() {
    rustup run "$1" rustc --version >/dev/null 2>&1
}

sanitizer=${FUZZ_SANITIZER:-none}

# Only the hop target needs the layer components (wasm32-wasip2) and wasmtime: without it, the
# targets build without the `hop` feature, on any toolchain, and much faster.
needs_hop=false
for t in "${targets[@]}"; do
    [[ $t == hop ]] && needs_hop=true
done
features=()
$needs_hop || features=(--no-default-features --features libfuzzer)

# The default does not depend on the targets asked for, so that runs of some targets and of all
# share one build.
if [[ -n ${FUZZ_TOOLCHAIN:-} ]]; then
    toolchain=$FUZZ_TOOLCHAIN
elif [[ $sanitizer != none ]]; then
    has_toolchain nightly ||
        die "missing: a nightly toolchain, which FUZZ_SANITIZER=$sanitizer needs (rustup toolchain install nightly --target wasm32-wasip2)"
    toolchain=nightly
elif has_toolchain nightly && has_wasm_target nightly; then
    toolchain=nightly
else
    toolchain=stable
    if has_toolchain nightly; then
        echo "fuzz.sh: nightly has no wasm32-wasip2 target, which the hop target needs (rustup target add wasm32-wasip2 --toolchain nightly): using stable, which needs no nightly feature without a sanitizer"
    else
        echo "fuzz.sh: no nightly toolchain: using stable, which needs no nightly feature without a sanitizer"
    fi
fi
has_toolchain "$toolchain" || die "missing: the $toolchain toolchain (rustup toolchain install $toolchain)"
if $needs_hop && ! has_wasm_target "$toolchain"; then
    die "missing: the wasm32-wasip2 target of $toolchain, for the hop target's layer components (rustup target add wasm32-wasip2 --toolchain $toolchain; or leave out hop: scripts/fuzz.sh SECONDS frame_body ...)"
fi

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed: cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked || die "missing: cargo-fuzz, and 'cargo install cargo-fuzz --locked' failed"
fi
command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null ||
    die "missing: a C++ compiler, for libFuzzer (libfuzzer-sys builds it): apt-get install g++"

echo "fuzz.sh: $(cargo "+$toolchain" fuzz --version), $(rustup run "$toolchain" rustc --version), sanitizer $sanitizer"

# The layer components are built by a nested cargo into $CARGO_TARGET_DIR/guests: keep them,
# and everything else, in fuzz/target, away from the main workspace's target/.
export CARGO_TARGET_DIR="$fuzz/target"

# --- Build, then seeds ----------------------------------------------------------------------
build_start=$(date +%s)
cargo "+$toolchain" fuzz build -s "$sanitizer" "${features[@]}" || die "the fuzz targets did not build"
build_seconds=$(($(date +%s) - build_start))
echo "fuzz.sh: built the targets in ${build_seconds}s"

cargo "+$toolchain" run --quiet --release --no-default-features --features seeds --bin seeds -- "$fuzz/corpus" ||
    die "the seed generator failed"

# --- Run ------------------------------------------------------------------------------------
mkdir -p logs
read -r -a extra <<<"${FUZZ_ARGS:-}"
results=()
crashed_any=0
for t in "${targets[@]}"; do
    log="logs/$t.log"
    echo "fuzz.sh: $t for ${seconds}s (log: fuzz/$log)"
    mkdir -p "corpus/$t"
    # -timeout: an input that runs a minute is a finding (a hop's first input compiles the
    # components, a few seconds). -print_final_stats: the numbers parsed below.
    if cargo "+$toolchain" fuzz run -s "$sanitizer" "${features[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=60 "${extra[@]}" >"$log" 2>&1; then
        crashed=false
    else
        crashed=true
        crashed_any=1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    if [[ -z $execs ]]; then
        # No final stats (a crash stops libFuzzer before it prints them): its last status line.
        status='^#\([0-9][0-9]*\)\t\(INITED\|NEW\|REDUCE\|pulse\|RELOAD\|DONE\)'
        execs=$(sed -n "s/$status.*/\\1/p" "$log" | tail -1)
        rate=$(sed -n "s/$status.* exec\/s: \([0-9]*\).*/\\3/p" "$log" | tail -1)
    fi
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if $crashed && [[ -z $artifact ]] && ! grep -q "deadly signal\|ERROR: libFuzzer\|panicked" "$log"; then
        # Not a finding: the run itself failed (build, arguments). Say so and stop.
        tail -20 "$log" >&2
        die "running $t failed before fuzzing (see fuzz/$log)"
    fi
    printf '  %-17s %10s execs %8s/s  %s\n' "$t" "${execs:-?}" "${rate:-?}" \
        "$($crashed && echo "CRASHED: ${artifact:-see fuzz/$log}" || echo "no crash")"
    results+=("$(printf '{"target": "%s", "seconds": %s, "execs": %s, "execs_per_sec": %s, "crashes": %s, "artifact": %s, "log": "fuzz/%s"}' \
        "$t" "$seconds" "${execs:-null}" "${rate:-null}" "$($crashed && echo 1 || echo 0)" \
        "$([[ -n $artifact ]] && printf '"%s"' "$artifact" || echo null)" "$log")")
done

{
    printf '{\n  "date": "%s",\n  "toolchain": "%s",\n  "sanitizer": "%s",\n  "build_seconds": %s,\n  "target_dir_bytes": %s,\n  "targets": [\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$toolchain" "$sanitizer" "$build_seconds" \
        "$(du -sb "$CARGO_TARGET_DIR" | cut -f1)"
    for i in "${!results[@]}"; do
        sep=$([[ $i -lt $((${#results[@]} - 1)) ]] && echo "," || echo "")
        printf '    %s%s\n' "${results[$i]}" "$sep"
    done
    printf '  ]\n}\n'
} >last-run.json
echo "fuzz.sh: summary in fuzz/last-run.json; fuzz/target holds $(du -sh "$CARGO_TARGET_DIR" | cut -f1)"

if [[ $crashed_any -ne 0 ]]; then
    echo "fuzz.sh: a target crashed: minimise with 'cd fuzz && cargo +$toolchain fuzz tmin -s $sanitizer TARGET ARTIFACT', then add it to fuzz/regressions/TARGET/" >&2
    exit 1
fi
