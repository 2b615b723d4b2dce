-- Resolved holds: a reservation that was committed, released or expired,
-- remembered here instead of in the account's state (and its snapshot), so
-- that state stays the same size however long the account lives, while a
-- second commit of the same hold still gets a precise answer. Looked up by
-- primary key, only when a command names a hold the account no longer has
-- open. Keyed by stream_id (the account), like every other table.
--
-- Not append-only: an expired hold that a late commit settles is
-- overwritten as committed. The events remain the record of what happened.
CREATE TABLE resolved_holds (
    stream_id text  NOT NULL,
    hold_id   text  NOT NULL,
    payload   bytea NOT NULL,
    CONSTRAINT resolved_holds_pkey PRIMARY KEY (stream_id, hold_id)
);

GRANT SELECT, INSERT, UPDATE ON resolved_holds TO tally_app;
