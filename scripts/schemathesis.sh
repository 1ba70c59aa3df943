#!/usr/bin/env bash
# Schemathesis (from PyPI) against the OpenAPI document of each of the four services: generated
# valid and invalid requests must get no 5xx and only answers that match the documented schemas
# (statuses, bodies, headers, content types), unauthenticated ones 401, unsupported methods 405.
#
# It changes data as any client could (sign-ups, deposits, renamed and closed users, test faults
# that it clears again; no holds, so the audit stays clean): run it after the other tests of a
# stack, never at the same time, and never against data that matters.
#
# Needs the services running and their credentials in the environment:
#   ADMIN_TOKEN, SERVICE_TOKEN               as given to the services
#   TEST_USER_SERVICE_URL ... TEST_TRANSACTION_SERVICE_URL
#                                            (default: the test stack's ports 18000-18003)
#   SCHEMATHESIS_MAX_EXAMPLES                examples per operation and phase (default 50)
#   SCHEMATHESIS_SEED                        the random seed (default 1: the same cases every run)
# Installs Schemathesis once into a virtual environment under $DPS_CACHE_DIR (idempotent).
# Exits non-zero if any run finds a failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${DPS_CACHE_DIR:-$HOME/.cache/distributed-payment-service}"
VENV="$CACHE/venv-schemathesis"
VERSION="4.32.5"
ST="$VENV/bin/schemathesis"

if [ ! -x "$ST" ] || [ "$("$ST" --version 2>/dev/null)" != "schemathesis, version $VERSION" ]; then
  echo "[schemathesis] installing schemathesis==$VERSION into $VENV"
  start=$SECONDS
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
  echo "[schemathesis] installed in $((SECONDS - start)) s"
fi

: "${ADMIN_TOKEN:?ADMIN_TOKEN must be set (the services' operator credential)}"
: "${SERVICE_TOKEN:?SERVICE_TOKEN must be set (the services' service credential)}"
USER_URL="${TEST_USER_SERVICE_URL:-http://127.0.0.1:18000}"
COMMAND_URL="${TEST_COMMAND_SERVICE_URL:-http://127.0.0.1:18001}"
QUERY_URL="${TEST_QUERY_SERVICE_URL:-http://127.0.0.1:18002}"
TRANSACTION_URL="${TEST_TRANSACTION_SERVICE_URL:-http://127.0.0.1:18003}"
EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"

# A user of its own (public sign-up, an operator deposit, a login) for the user's view of the API.
name="st_$$_$(date +%s)"
password="schemathesis-password"
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
user_id=$(curl -sf -X POST "$USER_URL/users" -H 'content-type: application/json' \
  -d "{\"username\":\"$name\",\"password\":\"$password\"}" | json "['data']['user']['id']")
curl -sf -o /dev/null -X POST "$USER_URL/users/$user_id/balance/add" -H 'content-type: application/json' \
  -H "authorization: Bearer $ADMIN_TOKEN" -d '{"amount":1000000}'
USER_TOKEN=$(curl -sf -X POST "$USER_URL/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"$name\",\"password\":\"$password\"}" | json "['data']['access_token']")

# Hypothesis and Schemathesis keep their databases in the working directory: not in the repo.
work="$CACHE/schemathesis-work"
mkdir -p "$work"
cd "$work"

failed=()
# run LABEL URL TOKEN [schemathesis run options...]
run() {
  local label="$1" url="$2" token="$3"
  shift 3
  echo "[schemathesis] $label"
  if ! "$ST" --config-file "$ROOT/scripts/schemathesis.toml" run "$url/openapi.json" \
    -H "Authorization: Bearer $token" \
    --max-examples "$EXAMPLES" --seed "${SCHEMATHESIS_SEED:-1}" --request-timeout 15 --wait-for-schema 30 \
    --warnings off --no-color "$@"; then
    failed+=("$label")
  fi
}

run "user-service as the operator" "$USER_URL" "$ADMIN_TOKEN" --exclude-path-regex '^/internal/'
run "user-service as a user" "$USER_URL" "$USER_TOKEN" --exclude-path-regex '^/internal/'
run "user-service internal routes as a service" "$USER_URL" "$SERVICE_TOKEN" \
  --include-path-regex '^/internal/' --exclude-path-regex '/hold$'
# A valid hold would move real money into clearing for a transfer no saga knows (the audit's I5
# rightly flags such a hold): only invalid holds are sent.
run "user-service internal hold (invalid requests) as a service" "$USER_URL" "$SERVICE_TOKEN" \
  --include-path-regex '^/internal/transfers/.*/hold$' --mode negative
run "transaction-command-service as the operator" "$COMMAND_URL" "$ADMIN_TOKEN"
# It has just set random test faults (PUT /ops/faults): clear them for whatever runs next.
curl -s -o /dev/null -X PUT "$COMMAND_URL/ops/faults" -H 'content-type: application/json' \
  -H "authorization: Bearer $ADMIN_TOKEN" -d '{"reject_pending_for_source_user_ids":[]}' || true
run "transaction-query-service as a service" "$QUERY_URL" "$SERVICE_TOKEN"
run "transaction-service as a user" "$TRANSACTION_URL" "$USER_TOKEN"
run "transaction-service as the operator" "$TRANSACTION_URL" "$ADMIN_TOKEN"

if [ ${#failed[@]} -gt 0 ]; then
  echo "[schemathesis] FAILED: ${failed[*]}"
  exit 1
fi
echo "[schemathesis] all runs passed"
