-- The global log's order, kept through a logical dump and restore.
--
-- The log is ordered by (tx, position), tx being the writing transaction's
-- id. A pg_dump restored into a new cluster keeps the events' tx, but the new
-- cluster hands out ids from where it stands, often far below: new events
-- would sort before the restored ones, behind the projections' checkpoints.
--
-- So tx is the transaction id plus an offset, 0 until a restore needs one.
-- `tallyd migrate` raises it when it finds events at or after every id the
-- cluster has handed out (src/postgres/order.rs): it writes the offset here,
-- for the readers' fence, and into events.tx's default as a constant, so an
-- append reads no table for it. Both change in one transaction, so they
-- always agree; the offset only ever grows.
CREATE TABLE log_order (
    -- One row: the primary key admits only true.
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    tx_offset bigint  NOT NULL CHECK (tx_offset >= 0)
);

INSERT INTO log_order (tx_offset) VALUES (0);

-- The service reads the offset (the fence, the status check); only the
-- owner's `tallyd migrate` changes it.
GRANT SELECT ON log_order TO tally_app;
