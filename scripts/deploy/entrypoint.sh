#!/bin/sh
# The image's entry point: runs one of the four services, named by the first argument, exactly as
# the stack's supervisor does (`node services/<name>/src/main.ts` from the repository root).
set -eu
case "${1:-}" in
user-service | transaction-command-service | transaction-query-service | transaction-service)
  exec node "services/$1/src/main.ts"
  ;;
*)
  echo "usage: <image> user-service|transaction-command-service|transaction-query-service|transaction-service" >&2
  exit 64
  ;;
esac
