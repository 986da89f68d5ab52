#!/usr/bin/env bash
# The README's "Hosts, a directory, and training over them", done literally on loopback, and
# checked: keys for a directory and five hosts, the directory, hosts from TOML files (each
# checked with `mixnn-host check` first), `mixnn train --directory` over them, then every
# host stopped with SIGTERM, as systemd stops it: each must exit cleanly, and its Prometheus
# metrics must show the sessions it served; contrib/systemd's units pass systemd-analyze. Exits non-zero, saying why, if any step fails.
#
#   scripts/walkthrough.sh [--data DIR] [--keep]      (DIR: MNIST; default $MIXNN_DATA, else
#                                                      ../shared/data/mnist)
set -euo pipefail
cd "$(dirname "$0")/.."

data="${MIXNN_DATA:-../shared/data/mnist}"
keep=false
while [ $# -gt 0 ]; do
    case "$1" in
        --data) data="$2"; shift 2 ;;
        --keep) keep=true; shift ;;
        *) echo "usage: $0 [--data DIR] [--keep]" >&2; exit 2 ;;
    esac
done
[ -d "$data" ] || { echo "no data set at $data (MNIST's IDX files)" >&2; exit 2; }
data="$(cd "$data" && pwd)"
hosts=5

step() { echo "== $*"; }
fail() { echo "walkthrough FAILED: $*" >&2; exit 1; }

step "building mixnn-host and mixnn (release)"
cargo build --release --quiet -p mixnn-host -p mixnn-designer
host_bin="$PWD/target/release/mixnn-host"
mixnn_bin="$PWD/target/release/mixnn"

work="$(mktemp -d -t mixnn-walkthrough-XXXXXX)"

# The systemd units of contrib/ run these same commands: systemd's own checker reads them
# (with the binary where it was built).
if command -v systemd-analyze >/dev/null; then
    step "contrib/systemd's units, as systemd-analyze verify reads them"
    for unit in contrib/systemd/*.service; do
        sed "s|/usr/local/bin/mixnn-host|$host_bin|g" "$unit" >"$work/$(basename "$unit")"
    done
    report="$(systemd-analyze verify "$work"/*.service 2>&1)" ||
        { echo "$report"; fail "systemd-analyze verify refused a unit"; }
    [ -z "$report" ] || { echo "$report"; fail "systemd-analyze verify had remarks"; }
    rm "$work"/*.service
fi
pids=()
cleanup() {
    # Whatever is still running (on a failure): stopped and reaped, quietly. `|| true`: a
    # reaped process's status must not become the script's under `set -e`.
    for pid in "${pids[@]}"; do
        { kill -9 "$pid" && wait "$pid"; } 2>/dev/null || true
    done
    if $keep; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"

# Waits for a process's "listening on ADDR fingerprint HEX" line in FILE; prints "ADDR HEX".
listening() {
    local file="$1" deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
        if line="$(grep -m1 '^listening on ' "$file" 2>/dev/null)"; then
            echo "$line" | awk '{ print $3, $5 }'
            return 0
        fi
        sleep 0.1
    done
    fail "no 'listening on' line in $file"
}

step "keys for the directory and $hosts hosts"
"$host_bin" keygen --dir dir-keys >/dev/null
for i in $(seq 1 $hosts); do "$host_bin" keygen --dir "host-keys-$i" >/dev/null; done

step "the directory"
"$host_bin" directory --listen 127.0.0.1:0 --state directory.json --keys dir-keys \
    >directory.out 2>directory.log &
pids+=($!)
read -r dir_addr dir_fp < <(listening directory.out)
echo "   listening on $dir_addr fingerprint ${dir_fp:0:16}..."

step "$hosts hosts from TOML files, each checked first"
host_pids=()
for i in $(seq 1 $hosts); do
    cat >"host-$i.toml" <<TOML
listen = "127.0.0.1:0"
keys = "host-keys-$i"
cache_dir = "compiled"
stats_file = "stats-$i.json"
metrics_file = "host-$i.prom"
[directory]
address = "$dir_addr"
fingerprint = "$dir_fp"
heartbeat_s = 5
[limits]
max_sessions = 64
setups_per_minute = 60
TOML
    "$host_bin" check --config "host-$i.toml" >"check-$i.out" ||
        { cat "check-$i.out"; fail "mixnn-host check refused host-$i.toml"; }
    grep -q ': ready' "check-$i.out" || { cat "check-$i.out"; fail "check did not say ready"; }
    "$host_bin" run --config "host-$i.toml" >"host-$i.out" 2>"host-$i.log" &
    pids+=($!)
    host_pids+=($!)
done
for i in $(seq 1 $hosts); do listening "host-$i.out" >/dev/null; done
cat check-1.out | sed 's/^/   /'

# The directory writes its state after every change: every host is in it once registered.
deadline=$((SECONDS + 30))
until [ "$(grep -o '"signed_hex"' directory.json 2>/dev/null | wc -l)" -ge $hosts ]; do
    [ $SECONDS -lt $deadline ] || fail "the hosts did not all register with the directory"
    sleep 0.2
done
echo "   all $hosts hosts registered"

step "the designer: the paper's model over a cascade from the directory's pool"
model="$OLDPWD/models/paper-mlp.toml"
train=(train --model "$model" --data "$data" --epochs 1 --train-limit 6000 --test-limit 2000 --json)
"$mixnn_bin" "${train[@]}" --directory "$dir_addr" --directory-fingerprint "$dir_fp" --dummies 2 \
    --save-weights cascade.safetensors >cascade.jsonl 2>cascade.log ||
    { tail -20 cascade.log; fail "mixnn train over the hosts failed"; }
echo "   $(tail -1 cascade.jsonl)"

step "the same training in this process: the same figures, the same weights, bit for bit"
"$mixnn_bin" "${train[@]}" --save-weights inproc.safetensors >inproc.jsonl 2>inproc.log ||
    { tail -20 inproc.log; fail "mixnn train in process failed"; }
echo "   $(tail -1 inproc.jsonl)"
python3 - cascade.jsonl inproc.jsonl <<'PY' || fail "the cascade and this process disagree"
import json, sys
cascade, inproc = ([json.loads(l) for l in open(f) if l.startswith("{")] for f in sys.argv[1:])
assert cascade[-1]["mode"] == "cascade", cascade[-1]
for c, i in zip(cascade, inproc, strict=True):
    for key in ("train_loss", "test_acc"):
        assert c[key] == i[key], (key, c[key], i[key])
PY
cmp cascade.safetensors inproc.safetensors || fail "the weights differ"

step "SIGTERM to every host: each drains and exits cleanly"
for pid in "${host_pids[@]}"; do kill -TERM "$pid"; done
for pid in "${host_pids[@]}"; do
    if ! wait "$pid"; then fail "host $pid did not exit cleanly after SIGTERM"; fi
done
served=0
for i in $(seq 1 $hosts); do
    grep -q '^mixnn_host_draining 1$' "host-$i.prom" || fail "host-$i.prom: not marked draining"
    n="$(awk '$1 == "mixnn_host_setups_accepted_total" { print $2 }' "host-$i.prom")"
    served=$((served + n))
done
# Two actual hosts and two dummies (the designer keeps the last layer and the loss).
[ "$served" -ge 4 ] || fail "the hosts' metrics count $served sessions, not at least 4"
echo "   $served sessions served in all, by the metrics files"

echo "walkthrough passed"
