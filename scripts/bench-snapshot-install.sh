#!/usr/bin/env bash
# Benchmark: how much memory and time a node needs to catch up through a
# snapshot. Starts 3 nodes on loopback (ports 17379-17410), writes with
# `kvctl bench` (8 KiB values, 40,000 keys, 25 s by default), then starts an
# empty 4th node, adds it as a learner (the leader has purged its log, so it
# must receive a snapshot) and prints its peak RSS (VmHWM) and catch-up time.
#
#   scripts/bench-snapshot-install.sh            # uses the workspace's debug kvnode
#   KVNODE=/path/to/kvnode scripts/bench-snapshot-install.sh
#   DURATION=10 VALUE_SIZE=4096 KEYS=20000 scripts/bench-snapshot-install.sh
set -euo pipefail
TARGET=${CARGO_TARGET_DIR:-${RAFTKV_CACHE:-$HOME/.cache/raftkv}/target}
KVNODE=${KVNODE:-$TARGET/debug/kvnode}
KVCTL=${KVCTL:-$TARGET/debug/kvctl}
DURATION=${DURATION:-25}
VALUE_SIZE=${VALUE_SIZE:-8192}
KEYS=${KEYS:-40000}
for b in "$KVNODE" "$KVCTL"; do [ -x "$b" ] || { echo "missing $b (cargo build --workspace --all-targets)" >&2; exit 1; }; done

DIR=$(mktemp -d /tmp/raftkv-snapbench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

start_node() { # id
  local i=$1
  local c=$((17379 + (i - 1) * 10))
  "$KVNODE" --id "$i" --name "n$i" --data-dir "$DIR/n$i" \
    --client-addr "127.0.0.1:$c" --peer-addr "127.0.0.1:$((c + 1))" \
    --snapshot-log-threshold 5000 2>>"$DIR/n$i.log" &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$c/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "node $i did not start:" >&2; tail -5 "$DIR/n$i.log" >&2; exit 1
}
applied() { curl -sf "$1/v1/cluster/status" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("applied_index") or 0)'; }
peak_rss_mb() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

for i in 1 2 3; do start_node "$i"; done
EP=http://127.0.0.1:17379,http://127.0.0.1:17389,http://127.0.0.1:17399
members=()
for i in 1 2 3; do
  c=$((17379 + (i - 1) * 10))
  members+=(--member "$i=http://127.0.0.1:$((c + 1)),http://127.0.0.1:$c,n$i")
done
"$KVCTL" --endpoints http://127.0.0.1:17379 init "${members[@]}" >/dev/null
for _ in $(seq 100); do "$KVCTL" --endpoints "$EP" health >/dev/null 2>&1 && break; sleep 0.2; done

echo "writing: $DURATION s, values of $VALUE_SIZE bytes over $KEYS keys"
"$KVCTL" --endpoints "$EP" bench --clients 32 --duration "$DURATION" --value-size "$VALUE_SIZE" \
  --keys "$KEYS" --target leader | tail -2
sleep 2
snap=$(find "$DIR/n1/snapshots" -name '*.snap' -printf '%s\n' | sort -n | tail -1)
echo "leader: snapshot file $((snap / 1048576)) MiB, peak RSS $(peak_rss_mb "${pids[0]}") MiB"

start_node 4
want=$(applied http://127.0.0.1:17379)
t0=$(date +%s%N)
"$KVCTL" --endpoints "$EP" add-learner 4 http://127.0.0.1:17410 http://127.0.0.1:17409 --name n4 >/dev/null
got=0
for _ in $(seq 1200); do
  got=$(applied http://127.0.0.1:17409 || echo 0)
  [ "$got" -ge "$want" ] && break
  sleep 0.1
done
[ "$got" -ge "$want" ] || { echo "learner did not catch up (applied $got < $want)" >&2; tail -5 "$DIR/n4.log" >&2; exit 1; }
ms=$((($(date +%s%N) - t0) / 1000000))
grep -q "installed snapshot" "$DIR/n4.log" || { echo "learner caught up without a snapshot: raise DURATION" >&2; exit 1; }
echo "learner: caught up to index $want in $ms ms through a snapshot; peak RSS $(peak_rss_mb "${pids[3]}") MiB"
