#!/usr/bin/env bash
# `npm run check:deploy`: the Dockerfile, compose files and Helm chart checked by real tools
# (installed once, pinned, into $DPS_CACHE_DIR/deploy-tools) and against the code. No engines.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${DPS_CACHE_DIR:-$HOME/.cache/distributed-payment-service}"
cd "$ROOT"

# The Node 24 that `npm start` / `npm test` installs, unless the one on PATH is recent enough.
node_ok() {
  "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 24 || (a === 24 && b >= 6) ? 0 : 1)' 2>/dev/null
}
NODE=node
if ! node_ok "$NODE"; then
  NODE="$CACHE/node-24/node_modules/node/bin/node"
  node_ok "$NODE" || { echo "[check:deploy] needs Node >= 24.6: run npm test (or npm start) once first" >&2; exit 1; }
fi

bash scripts/deploy/install-tools.sh >/dev/null
exec "$NODE" --test --test-reporter=spec test/deploy/*.test.ts
