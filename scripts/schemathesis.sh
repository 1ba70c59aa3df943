#!/usr/bin/env bash
# Schemathesis (from PyPI) against the OpenAPI document of each of the four services: generated
# valid and invalid requests must get no 5xx and only answers that match the documented schemas
# (statuses, bodies, headers, content types), unauthenticated ones 401, unsupported methods 405.
#
# It changes data as any client could (sign-ups, deposits, renamed, locked and closed users): run
# it after the other tests of a stack, never at the same time, and never against data that matters.
#
# Nothing it sends can move money outside a saga: valid requests go to the public listeners only.
# The internal listeners (ledger steps, hold reads, audit, /ops/*) get only invalid requests
# (negative mode), which are refused before any handler runs, and unauthenticated ones.
#
# Needs the services running and their credentials in the environment:
#   ADMIN_TOKEN, LEDGER_TOKEN, QUERY_TOKEN   as the stack generated them
#   TEST_USER_SERVICE_URL ... TEST_TRANSACTION_SERVICE_URL
#                                            (default: the test stack's ports 18000-18003)
#   TEST_USER_SERVICE_INTERNAL_URL ... TEST_TRANSACTION_SERVICE_INTERNAL_URL
#                                            (default: the internal listeners, 19000-19003)
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

: "${ADMIN_TOKEN:?ADMIN_TOKEN must be set (the operator credential)}"
: "${LEDGER_TOKEN:?LEDGER_TOKEN must be set (the ledger credential of transaction-service)}"
: "${QUERY_TOKEN:?QUERY_TOKEN must be set (the read-side credential of transaction-service)}"
USER_URL="${TEST_USER_SERVICE_URL:-http://127.0.0.1:18000}"
COMMAND_URL="${TEST_COMMAND_SERVICE_URL:-http://127.0.0.1:18001}"
QUERY_URL="${TEST_QUERY_SERVICE_URL:-http://127.0.0.1:18002}"
TRANSACTION_URL="${TEST_TRANSACTION_SERVICE_URL:-http://127.0.0.1:18003}"
USER_INTERNAL_URL="${TEST_USER_SERVICE_INTERNAL_URL:-http://127.0.0.1:19000}"
COMMAND_INTERNAL_URL="${TEST_COMMAND_SERVICE_INTERNAL_URL:-http://127.0.0.1:19001}"
QUERY_INTERNAL_URL="${TEST_QUERY_SERVICE_INTERNAL_URL:-http://127.0.0.1:19002}"
TRANSACTION_INTERNAL_URL="${TEST_TRANSACTION_SERVICE_INTERNAL_URL:-http://127.0.0.1:19003}"
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

# Public listeners: every mode, as each kind of caller that uses them. The user's runs go first:
# the operator's may lock the user (POST /users/{id}/lock), which revokes the user's token.
run "user-service as a user" "$USER_URL" "$USER_TOKEN"
run "transaction-service as a user" "$TRANSACTION_URL" "$USER_TOKEN"
run "user-service as the operator" "$USER_URL" "$ADMIN_TOKEN"
run "transaction-command-service (public: health only)" "$COMMAND_URL" "$ADMIN_TOKEN"
run "transaction-query-service as transaction-service" "$QUERY_URL" "$QUERY_TOKEN"
run "transaction-service as the operator" "$TRANSACTION_URL" "$ADMIN_TOKEN"
# Internal listeners: invalid requests only (refused before any handler: no hold, no fault set),
# with the credential each route takes, so the validation itself is what is exercised.
run "user-service internal (invalid requests) as the saga" "$USER_INTERNAL_URL" "$LEDGER_TOKEN" --mode negative
run "transaction-command-service internal (invalid requests)" "$COMMAND_INTERNAL_URL" "$ADMIN_TOKEN" \
  --mode negative
run "transaction-query-service internal (invalid requests)" "$QUERY_INTERNAL_URL" "$ADMIN_TOKEN" --mode negative
run "transaction-service internal (invalid requests)" "$TRANSACTION_INTERNAL_URL" "$ADMIN_TOKEN" --mode negative

if [ ${#failed[@]} -gt 0 ]; then
  echo "[schemathesis] FAILED: ${failed[*]}"
  exit 1
fi
echo "[schemathesis] all runs passed"
