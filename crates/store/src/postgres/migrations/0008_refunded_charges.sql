-- Refunded charges: for each charge (debit or commit, named by the
-- idempotency key it was made with) that a refund has drawn on, what the
-- next refund needs of it, so that refunds never return more than was
-- charged while the account's state stays the same size however long it
-- lives. Written only by refunds, in the same transaction as their events;
-- looked up by primary key only when a refund names the charge. Keyed by
-- stream_id (the account), like every other table.
--
-- Not append-only: each refund of a charge overwrites its row. The events
-- remain the record of what happened.
CREATE TABLE refunded_charges (
    stream_id  text  NOT NULL,
    charge_key text  NOT NULL,
    payload    bytea NOT NULL,
    CONSTRAINT refunded_charges_pkey PRIMARY KEY (stream_id, charge_key)
);

GRANT SELECT, INSERT, UPDATE ON refunded_charges TO tally_app;
