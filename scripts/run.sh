#!/usr/bin/env bash
# Entry point of `npm start`, `npm test` and `npm run stack`: makes sure Node >= 24.6 and the npm
# dependencies are there, then hands over to scripts/stack/cli.ts (engines, services, tests).
# Idempotent; slow downloads are cached outside the repo in $DPS_CACHE_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DPS_CACHE_DIR="${DPS_CACHE_DIR:-$HOME/.cache/distributed-payment-service}"
CACHE="$DPS_CACHE_DIR"
cd "$ROOT"

# True if the given node binary is at least 24.6 (the project runs .ts files by type stripping).
node_ok() {
  "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 24 || (a === 24 && b >= 6) ? 0 : 1)' 2>/dev/null
}

if ! command -v node >/dev/null 2>&1 || ! node_ok node; then
  NODE24="$CACHE/node-24/node_modules/node/bin/node"
  if [ ! -x "$NODE24" ] || ! node_ok "$NODE24"; then
    echo "[run] installing Node 24 into $CACHE/node-24 (the machine has $(node --version 2>/dev/null || echo 'no node'))"
    start=$SECONDS
    # The npm package `node` carries the official binary; its postinstall puts it in bin/.
    npm install --prefix "$CACHE/node-24" --no-save --no-audit --no-fund --loglevel=error node@24 >/dev/null
    node_ok "$NODE24" || { echo "[run] Node 24 install failed: $NODE24 missing or too old" >&2; exit 1; }
    echo "[run] Node $("$NODE24" --version) installed in $((SECONDS - start)) s"
  fi
  export PATH="$(dirname "$NODE24"):$PATH"
fi

# npm ci when node_modules is missing or older than the lockfile.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "[run] npm ci"
  start=$SECONDS
  # npm ci insists that every optional platform package in the lock resolves; a registry mirror
  # that carries only this platform's binaries (biome's, here) makes it refuse. npm install
  # still follows the lockfile's versions and skips what this platform cannot use.
  if ! npm ci --no-audit --no-fund --loglevel=error 2>/dev/null; then
    echo "[run] npm ci refused the lockfile on this registry; npm install with the lockfile instead"
    npm install --no-audit --no-fund --loglevel=error
  fi
  echo "[run] dependencies installed in $((SECONDS - start)) s"
fi

exec node scripts/stack/cli.ts "$@"
