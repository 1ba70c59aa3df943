#!/bin/bash
# Runs once, when the PostgreSQL volume is new: a non-superuser role per owning service, and each
# service's database owned by its role (the services apply their own migrations at start).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v ledger_password="$LEDGER_DB_PASSWORD" -v saga_password="$SAGA_DB_PASSWORD" <<'SQL'
CREATE ROLE ledger_service LOGIN PASSWORD :'ledger_password';
CREATE ROLE saga_service LOGIN PASSWORD :'saga_password';
CREATE DATABASE dps_ledger OWNER ledger_service;
CREATE DATABASE dps_saga OWNER saga_service;
REVOKE ALL ON DATABASE dps_ledger FROM PUBLIC;
REVOKE ALL ON DATABASE dps_saga FROM PUBLIC;
SQL
