#!/usr/bin/env bash
# Lints for the code that is not Rust: shellcheck on every tracked shell
# script (.shellcheckrc says which checks are off and why), ruff on every
# tracked Python file (ruff.toml). Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${RAFTKV_CACHE:-$HOME/.cache/raftkv}"
RUFF_VERSION=0.17.6

command -v shellcheck >/dev/null || { echo "lint: shellcheck is missing (scripts/prereqs.sh test installs it)" >&2; exit 1; }
VENV="$CACHE/lint-venv-ruff-$RUFF_VERSION"
if [ ! -x "$VENV/bin/ruff" ]; then
  echo "lint: installing ruff $RUFF_VERSION from PyPI into $VENV" >&2
  rm -rf "$VENV.tmp"
  python3 -m venv "$VENV.tmp"
  "$VENV.tmp/bin/pip" install --quiet --disable-pip-version-check "ruff==$RUFF_VERSION"
  rm -rf "$VENV" && mv "$VENV.tmp" "$VENV"
fi

mapfile -t shell < <(git ls-files '*.sh' .ci/run)
mapfile -t python < <(git ls-files '*.py')
status=0
shellcheck "${shell[@]}" || status=1
"$VENV/bin/ruff" check --quiet "${python[@]}" || status=1
if [ "$status" -eq 0 ]; then
  echo "lint: ${#shell[@]} shell scripts (shellcheck), ${#python[@]} Python files (ruff): clean"
fi
exit "$status"
