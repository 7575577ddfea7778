#!/usr/bin/env bash
# raftkv against etcd, side by side on this machine, in one command: builds
# release binaries, installs wrk and etcd (Debian's) if missing, starts both
# clusters on loopback (ports 12379-12400 and 17379-17400), runs the matrix
# of scripts/bench.py and prints a table with the ratios raftkv / etcd.
#
#   scripts/bench.sh                           everything (about 15 minutes)
#   scripts/bench.sh --duration 5 --rounds 1 --skip-failover --value-sizes ''
#   scripts/bench.sh --help                    every option
#
# Figures go to stdout (a markdown table) and to bench-results.json (--json).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RAFTKV_CACHE:-$HOME/.cache/raftkv}/target}"
scripts/prereqs.sh bench
if [ "${1:-}" != --help ] && [ "${1:-}" != -h ]; then
  # Only the two binaries: the first release build compiles RocksDB (about
  # 20 minutes on 2 cores); test targets are not needed here.
  echo "bench: building kvnode and kvctl (release)" >&2
  cargo build --release --locked -p kvnode -p kvctl >&2
fi
exec python3 scripts/bench.py --kvnode "$CARGO_TARGET_DIR/release/kvnode" \
  --kvctl "$CARGO_TARGET_DIR/release/kvctl" "$@"
