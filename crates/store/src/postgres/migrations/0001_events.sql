-- Events, idempotency records and snapshots. Every table leads with
-- stream_id (the account), so each can be distributed by account.

CREATE TABLE events (
    stream_id      text   NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    -- Unique in the store and handed out at insert time, which is NOT commit
    -- order: a transaction that took a lower value can commit later.
    position       bigint GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction. Readers of the global log only return rows
    -- whose tx is older than every transaction still running (the snapshot
    -- fence), so nothing can later commit in front of what they returned.
    tx             xid8   NOT NULL DEFAULT pg_current_xact_id(),
    event_type     text   NOT NULL,
    payload        bytea  NOT NULL,
    recorded_at_ms bigint NOT NULL,
    -- Also the concurrency backstop: two appends at the same expected
    -- version cannot both insert the next version.
    CONSTRAINT events_pkey PRIMARY KEY (stream_id, version)
);

-- The global log's order.
CREATE INDEX events_log_order ON events (tx, position);

CREATE TABLE idempotency (
    stream_id   text  NOT NULL,
    key         text  NOT NULL,
    fingerprint bytea NOT NULL,
    response    bytea NOT NULL,
    CONSTRAINT idempotency_pkey PRIMARY KEY (stream_id, key)
);

-- Not append-only: a snapshot is a cache and is overwritten.
CREATE TABLE snapshots (
    stream_id text   NOT NULL,
    version   bigint NOT NULL CHECK (version >= 0),
    payload   bytea  NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id)
);

-- The log is the source of truth for balances. Privileges (migration 2)
-- keep the service's role from changing it; this trigger also stops the
-- owner, short of dropping the trigger on purpose.
CREATE FUNCTION tally_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tally: % on % refused: the table is append-only', TG_OP, TG_TABLE_NAME;
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION tally_refuse_change();

CREATE TRIGGER idempotency_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON idempotency
    FOR EACH STATEMENT EXECUTE FUNCTION tally_refuse_change();
