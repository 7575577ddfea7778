#!/usr/bin/env bash
# What TLS and authentication cost: the same kvctl bench workloads against
# the loopback cluster of scripts/local-cluster.sh, plaintext and --secure,
# in one run. The secure cluster is measured twice: kvctl identified by a
# token (user root and its password; TLS with server verification only) and by its
# client certificate (mutual TLS, CN root). Rounds alternate plaintext and
# secure so that drift on a shared machine hits both alike.
#
#   scripts/bench-security.sh                 2 rounds, 10 s per workload
#   ROUNDS=1 DURATION=5 scripts/bench-security.sh
#
# Prints one markdown table row per run (docs/benchmarks.md). Uses the
# ports of local-cluster.sh (7379-7400): no other local cluster may run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RAFTKV_CACHE:-$HOME/.cache/raftkv}/target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-64}"
WORK="${BENCH_DIR:-$(mktemp -d /tmp/raftkv-bench-security.XXXXXX)}"
mkdir -p "$WORK"
KVCTL="$CARGO_TARGET_DIR/debug/kvctl"

for port in 7379 7389 7399; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "bench-security: port $port is in use (a local cluster running?); stop it first" >&2
    exit 1
  fi
done

scripts/build.sh

cluster=""
stop_cluster() {
  if [ -n "$cluster" ]; then
    kill -TERM "$cluster" 2>/dev/null || true
    wait "$cluster" 2>/dev/null || true
    cluster=""
  fi
}
trap stop_cluster EXIT

# start MODE: runs local-cluster.sh in the background until it prints
# "raftkv is running".
start() {
  local mode=$1 log="$WORK/$1.out"
  local args=()
  [ "$mode" = secure ] && args=(--secure)
  RAFTKV_LOCAL_DIR="$WORK/$mode" scripts/local-cluster.sh "${args[@]}" >"$log" 2>&1 &
  cluster=$!
  for _ in $(seq 600); do
    grep -q "raftkv is running" "$log" 2>/dev/null && return 0
    kill -0 "$cluster" 2>/dev/null || break
    sleep 0.2
  done
  echo "bench-security: the $mode cluster did not start; its output:" >&2
  cat "$log" >&2
  exit 1
}

# bench LABEL KVCTL-ARGS... -- BENCH-ARGS...: one workload, one table row.
bench() {
  local label=$1; shift
  local conn=()
  while [ "$1" != -- ]; do conn+=("$1"); shift; done
  shift
  local out
  out=$("$KVCTL" "${conn[@]}" -o json bench --clients "$CLIENTS" --duration "$DURATION" "$@")
  python3 - "$label" "$*" "$out" <<'PY'
import json, sys
label, args, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
work = "writes" if out["read_ratio"] == 0 else ("serializable reads" if "--serializable" in args else "linearizable reads")
print(f"| {label} | {work} | {out['target'].lower()} | {out['throughput_ops_s']:,.0f} | "
      f"{out['p50_ms']:.1f} | {out['p90_ms']:.1f} | {out['p99_ms']:.1f} | {out['max_ms']:.0f} | {out['errors']} |")
PY
}

workloads() {
  local label=$1; shift
  bench "$label" "$@" -- --value-size 256 --target leader
  bench "$label" "$@" -- --value-size 256 --target leader --read-ratio 1 --prefill
  bench "$label" "$@" -- --value-size 256 --target all --read-ratio 1 --serializable
}

plain_ep=http://127.0.0.1:7379,http://127.0.0.1:7389,http://127.0.0.1:7399
secure_ep=https://127.0.0.1:7379,https://127.0.0.1:7389,https://127.0.0.1:7399
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $CLIENTS clients, ${DURATION} s per run, 256-byte values"
echo
echo "| cluster | workload | target | ops/s | p50 ms | p90 ms | p99 ms | max ms | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  start plain
  workloads "plaintext (r$round)" --endpoints "$plain_ep"
  stop_cluster

  start secure
  pki="$WORK/secure/pki"
  # The password through kvctl's environment, not its command line.
  (KVCTL_PASSWORD="$(cat "$pki/root-password")"
   export KVCTL_USER=root KVCTL_PASSWORD
   workloads "TLS + token (r$round)" --endpoints "$secure_ep" --cacert "$pki/ca.crt")
  workloads "mTLS, CN root (r$round)" --endpoints "$secure_ep" --cacert "$pki/ca.crt" \
    --cert "$pki/root.crt" --key "$pki/root.key"
  stop_cluster
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); data and logs in $WORK"
