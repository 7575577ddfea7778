#!/usr/bin/env bash
# The project's test command: format, lints, unit and integration tests
# (real kvnode processes on loopback), chart checks, and the end-to-end
# suite on a local Kubernetes control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RAFTKV_CACHE:-$HOME/.cache/raftkv}/target}"
step() { echo; echo "=== $* ($(date +%H:%M:%S))"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings

step "Helm chart: lint, render, schema and RBAC checks"
scripts/check-chart.sh

step "unit and integration tests"
cargo nextest run --workspace --profile "${NEXTEST_PROFILE:-default}"
