#!/usr/bin/env bash
# Builds the whole workspace (kvnode, kvctl, the operator, all test targets)
# the way the tests build it, with progress on stderr. Used by the README's
# two commands. Prints nothing on stdout.
#
#   scripts/build.sh            dev profile (what the tests use)
#   scripts/build.sh --release  release profile
#
# Always the whole workspace with all targets: cargo unifies dependency
# features per selection, and a narrower one compiles RocksDB a second time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RAFTKV_CACHE:-$HOME/.cache/raftkv}/target}"

profile=debug
args=(build --workspace --all-targets)
if [ "${1:-}" = --release ]; then profile=release; args+=(--release); fi

if ! compgen -G "$CARGO_TARGET_DIR/$profile/build/librocksdb-sys-*/out" >/dev/null; then
  echo "build: first build into $CARGO_TARGET_DIR ($profile): RocksDB's C++ sources compile" \
       "in about 20 minutes on 2 cores, then the Rust crates in about 8; later builds take seconds" >&2
fi

start=$(date +%s)
# cargo is silent for the 20 minutes librocksdb-sys takes: a heartbeat says it is alive.
( while sleep 60; do
    echo "build: still compiling ($(( ($(date +%s) - start) / 60 )) min so far)" >&2
  done ) &
beat=$!
trap 'kill $beat 2>/dev/null || true' EXIT
status=0
cargo "${args[@]}" >&2 || status=$?
kill $beat 2>/dev/null || true
if [ "$status" -ne 0 ]; then echo "build: cargo ${args[*]} failed" >&2; exit "$status"; fi
echo "build: done in $(( $(date +%s) - start )) s" >&2
