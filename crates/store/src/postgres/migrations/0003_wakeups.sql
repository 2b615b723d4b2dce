-- Wakeups: when each stream next has time-due work (a cycle reset, an
-- expiry), so a scheduler on any replica finds idle accounts without loading
-- them. Keyed by stream_id (the account), like every other table.
--
-- Not append-only: every append to a stream overwrites its row, and so does
-- set_wakeup. A row whose at_ms is NULL is a cleared wakeup that still
-- records its version: it is what a stale set_wakeup collides with, and
-- loses to, when an append that cleared the wakeup overtook it.
--
-- Streams from before this migration have no row until their next append
-- or set_wakeup, which is the same as having no wakeup: nothing to backfill.
CREATE TABLE wakeups (
    -- "C": due_wakeups breaks ties bytewise, as the SQLite backend does,
    -- whatever collation the database was created with.
    stream_id text COLLATE "C" NOT NULL,
    -- The stream version at_ms was computed from.
    version   bigint NOT NULL CHECK (version >= 1),
    at_ms     bigint,
    CONSTRAINT wakeups_pkey PRIMARY KEY (stream_id)
);

-- The scheduler's query, in its order; cleared rows are not due, so they
-- stay out of the index.
CREATE INDEX wakeups_due ON wakeups (at_ms, stream_id) WHERE at_ms IS NOT NULL;

-- Overwritten in place like snapshots; DELETE so that rows of streams gone
-- for good can be pruned without the owner's role.
GRANT SELECT, INSERT, UPDATE, DELETE ON wakeups TO tally_app;
