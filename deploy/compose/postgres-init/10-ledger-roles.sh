#!/bin/sh
# Run once by the postgres image, when its volume is first initialized: the ledger database,
# owned by the role the gateways log in with (no superuser), and a read-only role for Grafana's
# ledger datasource (docs/observability.md#the-ledger-datasource), which may read every table
# the migrations create.
set -eu
psql --set ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    --set ledger_password="$ASRGW_DB_PASSWORD" --set reader_password="$GRAFANA_LEDGER_PASSWORD" <<'SQL'
CREATE ROLE asrgw LOGIN PASSWORD :'ledger_password';
CREATE DATABASE asrgw OWNER asrgw;
CREATE ROLE asrgw_grafana LOGIN PASSWORD :'reader_password';
\connect asrgw
GRANT CONNECT ON DATABASE asrgw TO asrgw_grafana;
GRANT USAGE ON SCHEMA public TO asrgw_grafana;
ALTER DEFAULT PRIVILEGES FOR ROLE asrgw IN SCHEMA public GRANT SELECT ON TABLES TO asrgw_grafana;
SQL
