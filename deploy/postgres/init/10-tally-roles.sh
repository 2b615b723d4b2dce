#!/usr/bin/env bash
# The local stack's database and roles. The postgres image runs this once,
# as the superuser, when its data volume is empty (so after changing it:
# `docker compose -f deploy/compose.yaml down -v`).
#
#   tally_owner    owns the database and its schema; `tallyd migrate` runs as it
#   tally_app      NOLOGIN; migration 2 grants it what the service needs (it
#                  creates the role itself when missing; here it must exist
#                  first so that tallyd can join it)
#   tallyd         the service's login, a member of tally_app
#   tally_grafana  the dashboard's login: read-only
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_password="$TALLY_OWNER_PASSWORD" \
  -v app_password="$TALLY_APP_PASSWORD" \
  -v grafana_password="$TALLY_GRAFANA_PASSWORD" <<'SQL'
CREATE ROLE tally_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE tally_app NOLOGIN;
CREATE ROLE tallyd LOGIN PASSWORD :'app_password' IN ROLE tally_app;
CREATE ROLE tally_grafana LOGIN PASSWORD :'grafana_password';
-- Belt and braces: even a grant given by mistake cannot make it write.
ALTER ROLE tally_grafana SET default_transaction_read_only = on;
ALTER ROLE tally_grafana SET statement_timeout = '30s';
CREATE DATABASE tally OWNER tally_owner;
SQL

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname tally <<'SQL'
-- PostgreSQL 15+ lets only the database owner create in schema public.
ALTER SCHEMA public OWNER TO tally_owner;
GRANT USAGE ON SCHEMA public TO tally_grafana;
-- The migrations have not run yet, so there are no tables to grant on:
-- every table tally_owner creates from now on is readable by Grafana. That
-- includes the log (events); in production, grant SELECT on the projection
-- tables only, after migrating (docs/operations.md).
ALTER DEFAULT PRIVILEGES FOR ROLE tally_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO tally_grafana;
SQL
