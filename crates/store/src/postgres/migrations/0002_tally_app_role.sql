-- tally_app: the privileges the service needs and no more. It cannot log
-- in; grant it to the login role tallyd connects as:
--   CREATE ROLE tallyd LOGIN PASSWORD '…' IN ROLE tally_app;
-- Roles belong to the cluster, not the database: another database may have
-- created it already, or be creating it right now (the migration lock is
-- per database).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tally_app') THEN
        BEGIN
            CREATE ROLE tally_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO tally_app', current_schema());
END
$$;

-- Append-only: no UPDATE, no DELETE, no TRUNCATE on events and idempotency.
GRANT SELECT, INSERT ON events, idempotency TO tally_app;
-- Snapshots are a cache, overwritten by an upsert.
GRANT SELECT, INSERT, UPDATE ON snapshots TO tally_app;
-- So the service can tell whether the schema is current.
GRANT SELECT ON tally_schema_migrations TO tally_app;
