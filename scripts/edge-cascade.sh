#!/usr/bin/env bash
# Edge hosts (issue 14): a real cascade on loopback in which hosts run the aarch64 build of
# mixnn-host under qemu-user beside native x86_64 hosts, started as the README's walkthrough
# does (keygen, a directory, hosts from TOML configs, `mixnn train --directory`). It trains the
# paper's MLP on a slice of MNIST over that cascade, then the same training in this process,
# and compares the two weights files bit for bit. Exits non-zero if any step fails, if an
# aarch64 host ran no layer, or if the weights differ.
#
# Needs: rustup target add aarch64-unknown-linux-gnu;
#        apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
# (the linker and the qemu runner are set in .cargo/config.toml).
#
# Settings (environment): QEMU_HOSTS (1) aarch64 hosts and NATIVE_HOSTS (1) x86_64 hosts;
# MIXNN_DATA (../shared/data/mnist), TRAIN_LIMIT (3200), TEST_LIMIT (1000), EPOCHS (1),
# SEED (1); NO_KEEP_LAST=1: hosts run every layer, as in the paper; PROFILE (release): the
# aarch64 host's cargo profile (dev: target/aarch64-unknown-linux-gnu/debug); OUT
# (target/edge-cascade): logs, weights, the hosts' files; SKIP_BUILD=1: use the binaries as
# they are; X86_CPU: run the x86_64 hosts under qemu-x86_64 as that CPU model.
set -euo pipefail
cd "$(dirname "$0")/.."

QEMU_HOSTS=${QEMU_HOSTS:-1}
NATIVE_HOSTS=${NATIVE_HOSTS:-1}
DATA=${MIXNN_DATA:-../shared/data/mnist}
TRAIN_LIMIT=${TRAIN_LIMIT:-3200}
TEST_LIMIT=${TEST_LIMIT:-1000}
EPOCHS=${EPOCHS:-1}
SEED=${SEED:-1}
PROFILE=${PROFILE:-release}
OUT=${OUT:-target/edge-cascade}
MODEL=models/paper-mlp.toml
TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu

# The paper's MLP, the designer keeping the last layers (the default): two hosts run its two
# linear-relu layers; with NO_KEEP_LAST=1 hosts run all five, as in the paper. The rest of the
# pool become dummies, so every host started is in the cascade (a random pick from a larger
# pool might leave the aarch64 hosts out).
ACTUAL=2
keep_last=()
if [[ ${NO_KEEP_LAST:-0} == 1 ]]; then
    ACTUAL=5
    keep_last=(--no-keep-last)
fi
HOSTS=$((QEMU_HOSTS + NATIVE_HOSTS))
if ((HOSTS < ACTUAL)); then
    echo "need at least $ACTUAL hosts (QEMU_HOSTS + NATIVE_HOSTS)" >&2
    exit 2
fi
DUMMIES=$((HOSTS - ACTUAL))

profile_dir=$PROFILE
if [[ $PROFILE == dev ]]; then profile_dir=debug; fi
native_host=target/release/mixnn-host
arm_host=target/$TARGET/$profile_dir/mixnn-host
mixnn=target/release/mixnn

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "== building: the designer and the x86_64 host, and the aarch64 host ($PROFILE)"
    cargo build --release -p mixnn-designer -p mixnn-host
    cargo build --profile "$PROFILE" --target "$TARGET" -p mixnn-host
fi
for exe in "$native_host" "$arm_host" "$mixnn"; do
    [[ -x $exe ]] || { echo "missing $exe (build it, or drop SKIP_BUILD)" >&2; exit 2; }
done

rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Every process started here, stopped on any exit.
pids=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local status=$?
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        # Give them 10 s to drain, then kill what is left.
        for _ in $(seq 100); do
            kill -0 "${pids[@]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    # The audits hold every frame twice: keep the setups, drop the rest.
    find "$OUT" -path '*/audit/session-*' -type f ! -name setup.json -delete 2>/dev/null || true
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sets `host` to the command that runs host i's binary: the aarch64 one under qemu for the
# first QEMU_HOSTS hosts, else the x86_64 one (under qemu-x86_64 emulating the CPU model
# X86_CPU, if set: IvyBridge, say, an x86_64 without FMA).
host_cmd() {
    if (($1 < QEMU_HOSTS)); then
        host=(qemu-aarch64 -L "$SYSROOT" "$arm_host")
    elif [[ -n ${X86_CPU:-} ]]; then
        host=(qemu-x86_64 -cpu "$X86_CPU" "$native_host")
    else
        host=("$native_host")
    fi
}
arch_of() {
    if (($1 < QEMU_HOSTS)); then
        echo aarch64-qemu
    else
        echo "x86_64${X86_CPU:+-$X86_CPU}"
    fi
}

# Waits for `listening on ADDR fingerprint HEX` in a process's stdout file; prints "ADDR HEX".
wait_listening() {
    local file=$1 pid=$2 name=$3
    for _ in $(seq 600); do
        if grep -q '^listening on ' "$file" 2>/dev/null; then
            sed -n 's/^listening on \(.*\) fingerprint \([0-9a-f]*\)$/\1 \2/p' "$file" | head -1
            return
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start; its log:" >&2
    cat "$file" "${file%.out}.err" >&2 || true
    return 1
}

echo "== keys, a directory and $HOSTS hosts ($QEMU_HOSTS aarch64 under qemu, $NATIVE_HOSTS x86_64)"
"$native_host" keygen --dir "$OUT/directory/keys" >/dev/null
"$native_host" directory --listen 127.0.0.1:0 --state "$OUT/directory/state.json" \
    --keys "$OUT/directory/keys" >"$OUT/directory/log.out" 2>"$OUT/directory/log.err" &
pids+=($!)
read -r dir_addr dir_fp < <(wait_listening "$OUT/directory/log.out" "${pids[0]}" "the directory")
echo "directory: $dir_addr fingerprint $dir_fp"

for ((i = 0; i < HOSTS; i++)); do
    dir=$OUT/host-$i
    mkdir -p "$dir"
    # Each host makes its own keys, with its own binary.
    host_cmd "$i"
    "${host[@]}" keygen --dir "$dir/keys" >/dev/null
    # No shared compilation cache: each compiles the components it is given (under qemu too).
    cat >"$dir/host.toml" <<TOML
listen = "127.0.0.1:0"
keys = "keys"
stats_file = "stats.json"
audit_dir = "audit"
[directory]
address = "$dir_addr"
fingerprint = "$dir_fp"
heartbeat_s = 10
[metadata]
arch = "$(arch_of "$i")"
TOML
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "${host[@]}" run --config "$dir/host.toml" \
        >"$dir/log.out" 2>"$dir/log.err" &
    pids+=($!)
done
for ((i = 0; i < HOSTS; i++)); do
    read -r addr _ < <(wait_listening "$OUT/host-$i/log.out" "${pids[i + 1]}" "host $i")
    echo "host $i ($(arch_of "$i")): $addr"
    echo "$addr" >"$OUT/host-$i/address"
done

# Every host must be in the pool before the designer picks: the directory's state file lists
# each registered descriptor.
for _ in $(seq 300); do
    registered=$(grep -c '"signed_hex"' "$OUT/directory/state.json" 2>/dev/null || true)
    ((${registered:-0} >= HOSTS)) && break
    sleep 0.1
done
if ((${registered:-0} < HOSTS)); then
    echo "only ${registered:-0} of $HOSTS hosts registered" >&2
    exit 1
fi

# Seconds since a `date +%s.%N` reading.
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }

common=(--model "$MODEL" --data "$DATA" --train-limit "$TRAIN_LIMIT" --test-limit "$TEST_LIMIT"
    --epochs "$EPOCHS" --seed "$SEED" --json)

# Runs `mixnn train`, the common arguments and "${@:2}", its JSON lines kept in the file $1
# and then summed up; in the background and waited for, so that a signal reaches the trap (which
# stops the designer too) at once.
train() {
    local status=0
    "$mixnn" train "${common[@]}" "${@:2}" >"$1" &
    pids+=($!)
    wait "$!" || status=$?
    unset 'pids[-1]'
    show "$1"
    return "$status"
}

# The main fields of each JSON line of a file.
show() {
    awk 'function f(key, n) {
            n = length(key) + 3 # the quotes and the colon
            if (match($0, "\"" key "\":[^,}]*")) return substr($0, RSTART + n, RLENGTH - n)
            return "?"
        }
        { printf "epoch %s: train_loss %s, test_acc %s, train_s %s, mode %s\n",
            f("epoch"), f("train_loss"), f("test_acc"), f("train_s"), f("mode") }' "$1" | tr -d '"'
}

echo "== training over the cascade ($ACTUAL actual hosts + $DUMMIES dummies)"
start=$(date +%s.%N)
if ! train "$OUT/cascade.jsonl" --directory "$dir_addr" --directory-fingerprint "$dir_fp" \
    --dummies "$DUMMIES" "${keep_last[@]}" --save-weights "$OUT/cascade.safetensors"; then
    # A host whose arithmetic differs from the designer's is caught by its audits as a liar.
    echo "FAIL: training over the cascade failed (hosts' logs in $OUT/host-*/log.err)" >&2
    exit 1
fi
cascade_wall=$(elapsed "$start")
sleep 1.5 # the hosts rewrite their stats every second

echo "== what each host did"
batches_per_epoch=$(((TRAIN_LIMIT + 63) / 64)) # the paper's batch size
batches=$((batches_per_epoch * EPOCHS))
served_arm=0
printf '%-5s %-13s %-20s %7s %10s %14s %13s\n' \
    host arch layer frames "ms/frame" "layers ms/fr" "compile ms"
for ((i = 0; i < HOSTS; i++)); do
    dir=$OUT/host-$i
    counter() { sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" "$dir/stats.json" | head -1; }
    frames=$(counter frames_processed)
    frame_us=$(counter frame_us)
    layer_us=$(counter layer_us)
    # The layer it ran, from the setup it decrypted (its audit): a weight layer's sizes.
    setup=$(find "$dir/audit" -name setup.json 2>/dev/null | head -1)
    config=
    if [[ -n $setup ]]; then
        config=$(tr -d '\\"' <"$setup" | sed -n 's/.*layers:\[\(..*\)\].*/\1/p')
    fi
    sizes=$(sed -n 's/.*in_features:\([0-9]*\),out_features:\([0-9]*\).*/\1-\2/p' <<<"$config")
    if [[ -z $setup ]]; then
        layer="no session"
    elif [[ $config == *'lr:0.0,momentum:0.0},layer:{}'* ]]; then
        layer=dummy # an identity layer that never learns
    elif [[ -z $sizes ]]; then
        layer="no weights" # log-softmax, the loss
    else
        layer="linear $sizes"
    fi
    if [[ -n $setup ]]; then
        if grep -q '"prev":{"designer":true}' "$setup"; then layer="$layer, 1st"; fi
        if grep -q '"next":{"designer":true}' "$setup"; then layer="$layer, last"; fi
    fi
    # "layers loaded ... ms=T": the setup's compile and instantiation.
    load_ms=$(sed -e 's/\x1b\[[0-9;]*m//g' "$dir/log.err" |
        sed -n 's/.*layers loaded.* ms=\([0-9]*\).*/\1/p' | head -1)
    awk -v i="$i" -v a="$(arch_of "$i")" -v l="$layer" -v f="${frames:-0}" \
        -v fu="${frame_us:-0}" -v lu="${layer_us:-0}" -v c="${load_ms:-?}" 'BEGIN {
            n = f > 0 ? f : 1
            printf "%-5s %-13s %-20s %7d %10.2f %14.2f %13s\n",
                i, a, l, f, fu / n / 1000, lu / n / 1000, c }'
    if ((i < QEMU_HOSTS)) && [[ $layer != dummy* && $layer != "no session" ]] &&
        ((${frames:-0} >= batches)); then
        served_arm=$((served_arm + 1))
    fi
done
if ((QEMU_HOSTS > 0 && served_arm == 0)); then
    echo "FAIL: no aarch64 host ran a layer of the session" >&2
    exit 1
fi

echo "== the same training in this process"
start=$(date +%s.%N)
train "$OUT/inproc.jsonl" --save-weights "$OUT/inproc.safetensors"
inproc_wall=$(elapsed "$start")

# The epochs' losses and accuracies (the modes' names and times aside) and the weights.
strip() { sed -e 's/"train_s":[^,}]*//' -e 's/"test_s":[^,}]*//' -e 's/"mode":"[^"]*"//' "$1"; }
train_s() { sed -n 's/.*"train_s":\([0-9.]*\).*/\1/p' "$1" | awk '{ s += $1 } END { print s }'; }
echo "== verdict"
awk -v c="$(train_s "$OUT/cascade.jsonl")" -v p="$(train_s "$OUT/inproc.jsonl")" -v n="$batches" \
    -v cw="$cascade_wall" -v pw="$inproc_wall" 'BEGIN {
        printf "training: over the cascade %.2f s (%.1f ms a batch), in process %.2f s",
            c, 1000 * c / n, p
        printf " (%.1f ms a batch); whole runs %.1f s and %.1f s\n", 1000 * p / n, cw, pw }'
status=0
if diff <(strip "$OUT/cascade.jsonl") <(strip "$OUT/inproc.jsonl") >/dev/null; then
    echo "losses and test accuracy of every epoch: identical"
else
    echo "losses or test accuracy differ:"
    diff <(strip "$OUT/cascade.jsonl") <(strip "$OUT/inproc.jsonl") || true
    status=1
fi
if cmp "$OUT/cascade.safetensors" "$OUT/inproc.safetensors"; then
    echo "final weights: bit-identical ($QEMU_HOSTS aarch64 host(s) under qemu," \
        "$NATIVE_HOSTS x86_64${X86_CPU:+ ($X86_CPU)}, and in process)"
else
    echo "final weights: DIFFERENT between the cascade and this process"
    status=1
fi
exit "$status"
