//! The schema, as numbered migrations compiled into the binary.
//!
//! `PRAGMA user_version` records how many migrations a file has had, so
//! opening a file migrates it forward exactly once, and a file written by a
//! newer build is refused instead of being misread. Migrations are append-only
//! like the data: never edit one that has shipped, add the next.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::error::store_error;
use crate::StoreError;

/// The projections' tables: migration 3 of the event file until 5 moved
/// them to the projections file, where they are migration 1.
const PROJECTION_TABLES: &str = r#"
    -- Projections: read models materialised from the global log by
    -- tally-projections. Unlike events they are disposable: `tallyd rebuild`
    -- empties and refills them from the log, so they may be updated and
    -- deleted. The same tables as PostgreSQL's migration 4 (text there is
    -- collated "C": bytewise, as SQLite's default).

    -- One row per projection: the last log position it applied, committed in
    -- the same transaction as the rows it wrote.
    CREATE TABLE projection_checkpoints (
        name           text NOT NULL,
        -- NULL before the first event.
        tx             bigint,
        seq            bigint,
        -- Bumped by every commit; a commit names the one it read.
        generation     bigint NOT NULL,
        schema_version bigint NOT NULL,
        updated_at_ms  bigint NOT NULL,
        CONSTRAINT projection_checkpoints_pkey PRIMARY KEY (name)
    );

    -- The account aggregate as each projection last folded it (JSON), so a
    -- runner resumes without replaying streams.
    CREATE TABLE projection_account_states (
        account_id text NOT NULL,
        projection text NOT NULL,
        version    bigint NOT NULL,
        state      text   NOT NULL,
        CONSTRAINT projection_account_states_pkey PRIMARY KEY (account_id, projection)
    );

    -- balances: one row per account, as of its last event.
    CREATE TABLE account_balances (
        account_id        text NOT NULL,
        version           bigint NOT NULL,
        tx                bigint NOT NULL,
        seq               bigint NOT NULL,
        opened_at_ms      bigint,
        plan              text,
        pending_plan      text,
        time_zone         text   NOT NULL,
        available         bigint NOT NULL,
        upcoming          bigint NOT NULL,
        held              bigint NOT NULL,
        overage           bigint NOT NULL,
        granted           bigint NOT NULL,
        consumed          bigint NOT NULL,
        expired           bigint NOT NULL,
        voided            bigint NOT NULL,
        open_reservations bigint NOT NULL,
        used_in_cycle     bigint NOT NULL,
        cycle_start_ms    bigint,
        cycle_end_ms      bigint,
        spending_cap      bigint,
        last_activity_ms  bigint,
        CONSTRAINT account_balances_pkey PRIMARY KEY (account_id)
    );

    -- balances: every bucket with credits remaining or held.
    CREATE TABLE account_buckets (
        account_id      text NOT NULL,
        grant_id        text NOT NULL,
        kind            text   NOT NULL,
        source          text   NOT NULL,
        priority        bigint NOT NULL,
        amount          bigint NOT NULL,
        remaining       bigint NOT NULL,
        held            bigint NOT NULL,
        effective_at_ms bigint NOT NULL,
        expires_at_ms   bigint,
        reference       text   NOT NULL,
        CONSTRAINT account_buckets_pkey PRIMARY KEY (account_id, grant_id)
    );

    -- ledger: one entry per event of an account, with the balance around it.
    CREATE TABLE ledger_entries (
        account_id       text NOT NULL,
        seq              bigint NOT NULL,
        tx               bigint NOT NULL,
        log_seq          bigint NOT NULL,
        occurred_at_ms   bigint NOT NULL,
        kind             text NOT NULL,
        member_id        text,
        action           text,
        model            text,
        amount           bigint NOT NULL,
        available_before bigint NOT NULL,
        available_after  bigint NOT NULL,
        idempotency_key  text,
        event            text   NOT NULL,
        CONSTRAINT ledger_entries_pkey PRIMARY KEY (account_id, seq)
    );

    -- ListLedger's filters, each walked in sequence order from a page token.
    CREATE INDEX ledger_entries_by_member ON ledger_entries (account_id, member_id, seq);
    CREATE INDEX ledger_entries_by_action ON ledger_entries (account_id, action, seq);
    CREATE INDEX ledger_entries_by_kind ON ledger_entries (account_id, kind, seq);
    CREATE INDEX ledger_entries_by_time ON ledger_entries (account_id, occurred_at_ms);

    -- usage: what actions cost per local day and cycle, by every grouping
    -- GetUsage offers. A day that spans a billing anchor has a row per cycle.
    CREATE TABLE usage_daily (
        account_id     text NOT NULL,
        day            text NOT NULL,
        cycle_start_ms bigint NOT NULL,
        action         text NOT NULL,
        capability     text NOT NULL,
        member_id      text NOT NULL,
        model          text NOT NULL,
        charged        bigint NOT NULL,
        overage        bigint NOT NULL,
        actions        bigint NOT NULL,
        input_tokens   bigint NOT NULL,
        output_tokens  bigint NOT NULL,
        context_tokens bigint NOT NULL,
        images         bigint NOT NULL,
        tool_calls     bigint NOT NULL,
        CONSTRAINT usage_daily_pkey
            PRIMARY KEY (account_id, day, cycle_start_ms, action, capability, member_id, model)
    );

    CREATE INDEX usage_daily_by_cycle ON usage_daily (account_id, cycle_start_ms);
    "#;

/// `MIGRATIONS[i]` takes a file from `user_version` `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: events, idempotency records and snapshots, all keyed by stream id so
    // a distributed backend can shard them by account.
    r#"
    CREATE TABLE events (
        -- AUTOINCREMENT: a rowid is never reused, even after the last row
        -- is gone, so a position handed out once is never handed out again.
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        stream_id      TEXT    NOT NULL,
        version        INTEGER NOT NULL CHECK (version >= 1),
        event_type     TEXT    NOT NULL,
        payload        BLOB    NOT NULL,
        recorded_at_ms INTEGER NOT NULL,
        UNIQUE (stream_id, version)
    );

    CREATE TABLE idempotency (
        stream_id   TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        response    BLOB NOT NULL,
        PRIMARY KEY (stream_id, key)
    ) WITHOUT ROWID;

    -- Not append-only: a snapshot is a cache and is overwritten.
    CREATE TABLE snapshots (
        stream_id TEXT    NOT NULL PRIMARY KEY,
        version   INTEGER NOT NULL CHECK (version >= 0),
        payload   BLOB    NOT NULL
    ) WITHOUT ROWID;

    -- The log is the source of truth for balances: make editing it
    -- impossible through SQL, not merely absent from the code.
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TRIGGER idempotency_no_update BEFORE UPDATE ON idempotency
    BEGIN SELECT RAISE(ABORT, 'idempotency records are append-only'); END;
    CREATE TRIGGER idempotency_no_delete BEFORE DELETE ON idempotency
    BEGIN SELECT RAISE(ABORT, 'idempotency records are append-only'); END;
    "#,
    // 2: wakeups, so a scheduler finds streams with time-due work without
    // loading them.
    r#"
    -- One row per stream that has had an append since this migration or a
    -- wakeup set; not append-only. A row whose at_ms is NULL is a cleared
    -- wakeup that still records its version, which is what lets set_wakeup
    -- tell that an append overtook it.
    CREATE TABLE wakeups (
        stream_id TEXT    NOT NULL PRIMARY KEY,
        version   INTEGER NOT NULL CHECK (version >= 1),
        at_ms     INTEGER
    ) WITHOUT ROWID;

    -- The scheduler's query, in its order; cleared rows are not due.
    CREATE INDEX wakeups_due ON wakeups (at_ms, stream_id) WHERE at_ms IS NOT NULL;
    "#,
    // 3: projections (tally-projections' read models); moved to their own
    // file by 5.
    PROJECTION_TABLES,
    // 4: resolved holds, kept out of the account's state so it does not grow
    // with traffic. The same table as PostgreSQL's migration 5.
    r#"
    -- Not append-only: an expired hold that a late commit settles is
    -- overwritten as committed.
    CREATE TABLE resolved_holds (
        stream_id TEXT NOT NULL,
        hold_id   TEXT NOT NULL,
        payload   BLOB NOT NULL,
        PRIMARY KEY (stream_id, hold_id)
    ) WITHOUT ROWID;
    "#,
    // 5: the projections move to a file of their own (see
    // `PROJECTION_MIGRATIONS`), so that their commits stop taking turns with
    // appends for this file's one write lock. They are disposable: the new
    // file starts empty and the runners rebuild it from the log.
    r#"
    DROP TABLE projection_checkpoints;
    DROP TABLE projection_account_states;
    DROP TABLE account_balances;
    DROP TABLE account_buckets;
    DROP TABLE ledger_entries;
    DROP TABLE usage_daily;
    "#,
    // 6: refunded charges, kept out of the account's state like resolved
    // holds. The same table as PostgreSQL's migration 8.
    r#"
    -- Not append-only: each refund of a charge overwrites its row.
    CREATE TABLE refunded_charges (
        stream_id  TEXT NOT NULL,
        charge_key TEXT NOT NULL,
        payload    BLOB NOT NULL,
        PRIMARY KEY (stream_id, charge_key)
    ) WITHOUT ROWID;
    "#,
];

/// The projections file's migrations, counted by its own `user_version`.
const PROJECTION_MIGRATIONS: &[&str] = &[
    PROJECTION_TABLES,
    // 2: usage of the units a rate card declares itself, one row per usage
    // group and unit.
    r#"
    CREATE TABLE usage_daily_units (
        account_id     text NOT NULL,
        day            text NOT NULL,
        cycle_start_ms bigint NOT NULL,
        action         text NOT NULL,
        capability     text NOT NULL,
        member_id      text NOT NULL,
        model          text NOT NULL,
        unit           text NOT NULL,
        amount         bigint NOT NULL,
        CONSTRAINT usage_daily_units_pkey
            PRIMARY KEY (account_id, day, cycle_start_ms, action, capability, member_id, model, unit)
    );

    CREATE INDEX usage_daily_units_by_cycle ON usage_daily_units (account_id, cycle_start_ms);
    "#,
    // 3: a ledger entry no longer carries a JSON copy of its event nor its
    // idempotency key; ListLedger reads both from the log (PostgreSQL's
    // migration 9).
    r#"
    ALTER TABLE ledger_entries DROP COLUMN event;
    ALTER TABLE ledger_entries DROP COLUMN idempotency_key;
    "#,
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Settings every connection needs; pragmas other than `journal_mode` are per
/// connection, not stored in the file.
pub(super) fn configure(conn: &Connection, busy_timeout: Duration) -> Result<(), StoreError> {
    conn.busy_timeout(busy_timeout).map_err(store_error)?;
    // FULL: the WAL is fsynced at every commit, so an acknowledged append
    // survives power loss, not only kill -9 (NORMAL would risk the last
    // commits).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(store_error)?;
    // Room for the projections' statements beside the event store's own.
    conn.set_prepared_statement_cache_capacity(96);
    // Statement journals (every savepoint of an append, every upsert of a
    // projection batch) and sorts in memory: as files they cost an open, a
    // write and a close each, a few thousand times a second under load.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(store_error)?;
    Ok(())
}

/// Puts the event file in WAL mode, so readers never wait for the writer,
/// and applies pending migrations.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_file(conn, MIGRATIONS, "database")
}

/// The same for the projections file.
pub(super) fn migrate_projections(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_file(conn, PROJECTION_MIGRATIONS, "projections file")
}

/// Empties the projections if any of them claims events the log does not
/// have: the event file was restored from a backup older than the
/// projections file beside it. Positions are rowids, which the log would
/// hand out again, so such a projection would skip the new events as
/// applied. Emptied, they are rebuilt from the log.
pub(super) fn forget_projections_ahead_of_log(
    events: &Connection,
    projections: &mut Connection,
) -> Result<(), StoreError> {
    let head: i64 = events
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| {
            row.get(0)
        })
        .map_err(store_error)?;
    let ahead: i64 = projections
        .query_row(
            "SELECT COUNT(*) FROM projection_checkpoints WHERE seq > ?1",
            [head],
            |row| row.get(0),
        )
        .map_err(store_error)?;
    if ahead == 0 {
        return Ok(());
    }
    tracing::warn!(
        log_head = head,
        "the projections file is ahead of the log (was the event file restored?); \
         emptying it to rebuild from the log"
    );
    let tx = projections
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)?;
    tx.execute_batch(
        "DELETE FROM projection_checkpoints;
         DELETE FROM projection_account_states;
         DELETE FROM account_balances;
         DELETE FROM account_buckets;
         DELETE FROM ledger_entries;
         DELETE FROM usage_daily;
         DELETE FROM usage_daily_units;",
    )
    .map_err(store_error)?;
    tx.commit().map_err(store_error)
}

fn migrate_file(conn: &mut Connection, migrations: &[&str], what: &str) -> Result<(), StoreError> {
    let latest = migrations.len() as u32;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(store_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "cannot put the database in WAL mode (journal_mode is {mode:?}); \
             it needs a local file system that supports shared memory"
        )));
    }

    // IMMEDIATE: two processes opening a fresh file at once must not both
    // run migration 1.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)?;
    let current: u32 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(store_error)?;
    if current > latest {
        return Err(StoreError::Unavailable(format!(
            "{what} schema version {current} is newer than this build supports \
             ({latest}); upgrade tallyd"
        )));
    }
    for (index, migration) in migrations.iter().enumerate().skip(current as usize) {
        tx.execute_batch(migration).map_err(store_error)?;
        tx.pragma_update(None, "user_version", index as u32 + 1)
            .map_err(store_error)?;
    }
    tx.commit().map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventStore, ProjectionStore, Wakeup};

    /// An event file restored from a backup older than the projections file
    /// beside it: the projections are emptied rather than skip the events
    /// the log will number as they did.
    #[tokio::test]
    async fn projections_ahead_of_a_restored_log_are_emptied() {
        use crate::{AppendRequest, LogPosition, NewEvent, ProjectionCommit};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.sqlite");
        let append = |version: u64| AppendRequest {
            stream_id: "acct".into(),
            expected_version: version,
            events: vec![NewEvent {
                event_type: "e".into(),
                payload: vec![1],
                recorded_at_ms: 1,
            }],
            idempotency: Vec::new(),
            holds: Vec::new(),
            charges: Vec::new(),
            next_wakeup_ms: None,
        };
        {
            let store = crate::sqlite::SqliteStore::open(&path).await.unwrap();
            store.append(append(0)).await.unwrap();
        }
        let backup = dir.path().join("backup.sqlite");
        std::fs::copy(&path, &backup).unwrap();
        {
            let store = crate::sqlite::SqliteStore::open(&path).await.unwrap();
            store.append(append(1)).await.unwrap();
            let last = store.append(append(2)).await.unwrap().positions[0];
            assert_eq!(last, LogPosition::new(0, 3));
            store
                .commit_projection(ProjectionCommit::single(
                    "balances",
                    0,
                    Some(last),
                    1,
                    1,
                    Vec::new(),
                ))
                .await
                .unwrap();
        }
        std::fs::copy(&backup, &path).unwrap();

        let store = crate::sqlite::SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.stream_version("acct").await.unwrap(), 1);
        assert_eq!(
            store
                .projection_checkpoint("balances")
                .await
                .unwrap()
                .position,
            None,
            "a checkpoint past the restored log's head was kept"
        );
    }

    /// A file a build of schema 1 wrote to opens with its data, migrated,
    /// and its streams then take wakeups.
    #[tokio::test]
    async fn a_file_at_schema_1_migrates_with_its_data() {
        assert_eq!(SCHEMA_VERSION, 6, "extend this test for the new migration");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
                 VALUES ('old', 1, 'v1', x'01', 1), ('old', 2, 'v1', x'02', 2);",
            )
            .unwrap();
        }

        let store = crate::sqlite::SqliteStore::open(&path).await.unwrap();
        let version: u32 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let tables_in = |file: &std::path::Path| -> Vec<String> {
            let conn = Connection::open(file).unwrap();
            let mut statement = conn
                .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
                .unwrap();
            statement
                .query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let projections_file = dir.path().join("tally.sqlite-projections");
        assert!(
            !tables_in(&path).contains(&"account_balances".to_owned()),
            "migration 5 moves the projections out of the event file"
        );
        assert!(tables_in(&projections_file).contains(&"account_balances".to_owned()));
        assert_eq!(
            store
                .projection_checkpoint("balances")
                .await
                .unwrap()
                .position,
            None
        );
        assert_eq!(store.stream_version("old").await.unwrap(), 2);
        assert_eq!(store.read_log(None, 10).await.unwrap().len(), 2);
        assert_eq!(
            store.find_holds("old", &["h".into()]).await.unwrap(),
            Vec::new()
        );
        assert_eq!(
            store.find_charges("old", &["k".into()]).await.unwrap(),
            Vec::new(),
            "migration 6 adds refunded charges"
        );
        assert_eq!(store.due_wakeups(i64::MAX, 10).await.unwrap(), Vec::new());
        assert!(!store.set_wakeup("old", 1, Some(5)).await.unwrap());
        assert!(store.set_wakeup("old", 2, Some(5)).await.unwrap());
        assert_eq!(
            store.due_wakeups(5, 10).await.unwrap(),
            vec![Wakeup {
                stream_id: "old".into(),
                at_ms: 5,
                version: 2
            }]
        );
    }
}
