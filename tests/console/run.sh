#!/usr/bin/env bash
# The web console in a real browser (tests/console/console.test.mjs, docs/console.md):
# Playwright (playwright-core from npm, pinned by package-lock.json) drives Debian's Chromium
# against a real 3-node kvnode cluster on loopback. Needs kvnode built (scripts/build.sh);
# Chromium comes from `scripts/prereqs.sh test`. Screenshots go to $RAFTKV_CONSOLE_SHOTS
# (default docs/console/).
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RAFTKV_CACHE:-$HOME/.cache/raftkv}/target}"
bin=${RAFTKV_BIN_DIR:-$CARGO_TARGET_DIR/debug}
[ -x "$bin/kvnode" ] || { echo "console tests: $bin/kvnode is missing: run scripts/build.sh" >&2; exit 1; }
chromium=${RAFTKV_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || { echo "console tests: $chromium is missing: scripts/prereqs.sh test installs it (Debian package chromium)" >&2; exit 1; }

# playwright-core at the locked version (no browser download: it drives the Chromium above).
want=$(node -p "require('./package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "try { require('./node_modules/playwright-core/package.json').version } catch (_) { '' }")
if [ "$want" != "$have" ]; then
  echo "console tests: installing playwright-core $want from the npm registry (package-lock.json)" >&2
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
exec node --test --test-concurrency=1 --test-reporter=spec console.test.mjs
