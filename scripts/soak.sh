#!/usr/bin/env bash
# Soak: the fault-injection runs of kvnode/tests/it/faults.rs (partitions,
# one-way cuts, pauses, kills, slow disks, membership changes in partitions, 5-node
# 2|3 splits: kind "five"), each for
# SECS seconds instead of the suite's 20, one after the other. Every run
# prints its seed, operations, indeterminate operations, serializable reads
# and fault events; a violation fails with the history file and the fault
# timeline (see docs/reliability.md).
#
#   scripts/soak.sh              # 300 s per fault kind
#   scripts/soak.sh 3600 kills   # one hour of kills only
#   RAFTKV_JEPSEN_SEED=123 scripts/soak.sh 60 partitions   # repeat a run's choices
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-300}
ONLY=${2:-}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RAFTKV_CACHE:-$HOME/.cache/raftkv}/target}"
filter='test(/^faults::/)'
[ -n "$ONLY" ] && filter="test(/^faults::${ONLY}/)"
export RAFTKV_SOAK_SECS="$SECS"
# --no-capture: one run at a time (each is a 3- or 5-node cluster and 5 clients),
# its lines as they come, and no slow-test timeout.
cargo nextest run --workspace --all-targets -E "$filter" --no-capture --no-fail-fast 2>&1 \
  | grep --line-buffered -E '^\[|PASS|FAIL|panicked|not linearizable|went backwards|Summary'
