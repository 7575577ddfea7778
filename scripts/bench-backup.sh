#!/usr/bin/env bash
# Benchmark: what a backup and a restore cost. Starts one --dev node on
# loopback (port 17479), fills it with `kvctl bench --prefill` (KEYS keys of
# VALUE_SIZE bytes), then times `kvctl snapshot save` and `kvnode restore`
# and samples the resident memory of the node, kvctl and the restore while
# they run (every 100 ms), so "memory flat in the data size" is a figure:
# run it with two KEYS and compare.
#
#   scripts/bench-backup.sh                       # the workspace's debug binaries
#   KVNODE=.../release/kvnode KVCTL=.../release/kvctl KEYS=1000000 VALUE_SIZE=1024 \
#     scripts/bench-backup.sh
set -euo pipefail
TARGET=${CARGO_TARGET_DIR:-${RAFTKV_CACHE:-$HOME/.cache/raftkv}/target}
KVNODE=${KVNODE:-$TARGET/debug/kvnode}
KVCTL=${KVCTL:-$TARGET/debug/kvctl}
KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-1024}
for b in "$KVNODE" "$KVCTL"; do [ -x "$b" ] || { echo "missing $b (cargo build --workspace --all-targets)" >&2; exit 1; }; done

DIR=$(mktemp -d /tmp/raftkv-backupbench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Largest VmRSS of process $1 until it exits or $2 (a file) appears; prints MiB.
max_rss_while() {
  local pid=$1 stop=$2 max=0 r
  while kill -0 "$pid" 2>/dev/null && [ ! -e "$stop" ]; do
    r=$(rss_mb "$pid"); [ "$r" -gt "$max" ] && max=$r
    sleep 0.1
  done
  echo "$max"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

EP=http://127.0.0.1:17479
"$KVNODE" --dev --data-dir "$DIR/node" --client-addr 127.0.0.1:17479 --peer-addr 127.0.0.1:17480 \
  2>>"$DIR/node.log" &
node=$!
pids+=("$node")
for _ in $(seq 100); do curl -sf "$EP/readyz" >/dev/null && break; sleep 0.1; done

echo "filling: $KEYS keys of $VALUE_SIZE bytes"
t0=$(now_ms)
"$KVCTL" --endpoints "$EP" bench --prefill --clients 32 --duration 1 --keys "$KEYS" \
  --value-size "$VALUE_SIZE" >/dev/null
echo "filled in $(($(now_ms) - t0)) ms; node RSS $(rss_mb "$node") MiB"

# Save, sampling the node (it streams) and kvctl (it checks and writes).
rm -f "$DIR/done"
max_rss_while "$node" "$DIR/done" >"$DIR/node.max" &
sampler=$!
t0=$(now_ms)
"$KVCTL" --endpoints "$EP" -o json snapshot save "$DIR/backup.snap" >"$DIR/save.json" 2>"$DIR/save.err" &
kv=$!
kvmax=$(max_rss_while "$kv" "$DIR/never")
wait "$kv" || { cat "$DIR/save.err" >&2; exit 1; }
ms=$(($(now_ms) - t0))
touch "$DIR/done"
wait "$sampler"
size=$(stat -c %s "$DIR/backup.snap")
keys=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["keys"])' "$DIR/save.json")
echo "save: $keys keys, $((size / 1048576)) MiB in $ms ms ($((size * 1000 / (ms + 1) / 1048576)) MiB/s);" \
  "node RSS max $(cat "$DIR/node.max") MiB while streaming; kvctl RSS max $kvmax MiB"

t0=$(now_ms)
"$KVNODE" --data-dir "$DIR/restored" --name r restore --snapshot "$DIR/backup.snap" >"$DIR/restore.out" &
rs=$!
rsmax=$(max_rss_while "$rs" "$DIR/never")
wait "$rs"
ms=$(($(now_ms) - t0))
echo "restore: $ms ms ($((size * 1000 / (ms + 1) / 1048576)) MiB/s); RSS max $rsmax MiB; $(cat "$DIR/restore.out")"
