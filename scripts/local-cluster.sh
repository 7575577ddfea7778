#!/usr/bin/env bash
# Starts a 3-node raftkv cluster on loopback, initializes it, waits until
# every node is ready and prints the endpoints. Ctrl-C stops the nodes
# gracefully; data stays in $RAFTKV_LOCAL_DIR for the next start.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RAFTKV_CACHE:-$HOME/.cache/raftkv}/target}"
DATA="${RAFTKV_LOCAL_DIR:-$PWD/data/local-cluster}"
PROFILE_DIR="$CARGO_TARGET_DIR/${RAFTKV_PROFILE:-debug}"

# Installs what is missing (libclang for RocksDB's bindings, curl), then
# builds the workspace as the tests do, with progress.
if [ "${RAFTKV_PROFILE:-debug}" = release ]; then scripts/build.sh --release; else scripts/build.sh; fi
KVNODE="$PROFILE_DIR/kvnode"
KVCTL="$PROFILE_DIR/kvctl"

mkdir -p "$DATA"
pids=()
stop() {
  trap - INT TERM
  echo; echo "stopping (SIGTERM, leadership handed over first)..." >&2
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "stopped; data kept in $DATA" >&2
  exit 0
}
trap stop INT TERM

endpoints=()
members=()
for i in 1 2 3; do
  cport=$((7379 + (i - 1) * 10)); pport=$((cport + 1))
  "$KVNODE" --id "$i" --name "node$i" --data-dir "$DATA/node$i" \
    --client-addr "127.0.0.1:$cport" --peer-addr "127.0.0.1:$pport" \
    ${RAFTKV_NODE_ARGS:-} 2>>"$DATA/node$i.log" &
  pids+=($!)
  endpoints+=("http://127.0.0.1:$cport")
  members+=(--member "$i=http://127.0.0.1:$pport,http://127.0.0.1:$cport,node$i")
done
EP=$(IFS=,; echo "${endpoints[*]}")

for ep in "${endpoints[@]}"; do
  for _ in $(seq 100); do curl -sf "$ep/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
done
# Idempotent: on a restart with kept data the cluster is already initialized.
"$KVCTL" --endpoints "${endpoints[0]}" init "${members[@]}" >/dev/null 2>&1 || true
for _ in $(seq 200); do
  "$KVCTL" --endpoints "$EP" health >/dev/null 2>&1 && break
  sleep 0.1
done
"$KVCTL" --endpoints "$EP" status
cat <<MSG

raftkv is running: 3 nodes, data in $DATA (logs: node*.log)
  export KVCTL_ENDPOINTS=$EP
  $KVCTL put hello world && $KVCTL get hello
  curl -X PUT --data-binary world ${endpoints[0]}/v1/kv/hello
Ctrl-C stops the cluster (data is kept for the next start).
MSG
wait
