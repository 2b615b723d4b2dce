-- A ledger entry no longer carries a JSON copy of its event nor the event's
-- idempotency key: ListLedger reads both from the log, by version, one
-- primary-key lookup per entry of the page. The copy was most of the
-- ledger's bytes (about 1.5 kB of ~1.6 kB a row) and of the WAL each event
-- cost the projections; the entry keeps what the log does not say (the
-- balance around the event) and the columns ListLedger's filters walk.
--
-- PostgreSQL drops the columns without rewriting the table: the space comes
-- back as rows are rewritten, after `VACUUM FULL ledger_entries`, or with the
-- next `tallyd rebuild`.
ALTER TABLE ledger_entries DROP COLUMN event, DROP COLUMN idempotency_key;

-- A projection's reset empties its own tables with TRUNCATE: instant, and
-- the refill meets fresh indexes instead of a million deleted rows' dead
-- entries (a rebuild ran a fifth faster). The service's role may truncate
-- the disposable projection tables, never the log's.
GRANT TRUNCATE ON
    account_balances, account_buckets, ledger_entries, usage_daily, usage_daily_units
TO tally_app;
