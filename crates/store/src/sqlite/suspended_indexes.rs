//! Secondary indexes dropped for a bulk load and built again after it.
//!
//! A rebuild inserts a ledger entry per event, each into the table, its key
//! and four indexes that only `ListLedger`'s filters walk, at ~1,100 places
//! per batch: at 1M events that was more than half of a rebuild's time and
//! most of the pages it wrote (docs/benchmarks.md, session 24). Dropped
//! first and created after the load, each index is one sorted pass.
//!
//! What was dropped is written down, with its `CREATE INDEX` statement as
//! SQLite keeps it, in the same transaction as the drop: a load cut short
//! (a crash, a kill) leaves the statements behind, and opening the file
//! builds the indexes again before anything reads it.

use rusqlite::{Connection, params};

use super::error::store_error;
use super::txn::Tx;
use crate::StoreError;

/// Where suspended indexes are written down. Created when first needed
/// rather than by a migration, so that the projections file stays at its
/// schema version and the build before this one still opens it (a
/// rollback); that build would not restore indexes a cut-short rebuild
/// left suspended, and reads would be slower until this one opens the file.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS suspended_indexes (
    name TEXT NOT NULL PRIMARY KEY,
    sql  TEXT NOT NULL
)";

/// Drops every index of `tables` that was created by `CREATE INDEX` (a
/// primary key's or a unique constraint's stays: writes need it) and
/// records it. Returns whether any was dropped.
pub(super) fn suspend(conn: &mut Connection, tables: &[&str]) -> Result<bool, StoreError> {
    let tx = Tx::immediate(conn).map_err(store_error)?;
    tx.conn().execute(CREATE_TABLE, []).map_err(store_error)?;
    let mut dropped = 0;
    for table in tables {
        let indexes = names_and_sql(
            tx.conn(),
            "SELECT name, sql FROM sqlite_schema \
             WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY name",
            [table],
        )?;
        for (name, sql) in indexes {
            tx.conn()
                .execute(
                    "INSERT INTO suspended_indexes (name, sql) VALUES (?1, ?2)",
                    params![name, sql],
                )
                .map_err(store_error)?;
            tx.conn()
                .execute_batch(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))
                .map_err(store_error)?;
            dropped += 1;
        }
    }
    tx.commit().map_err(store_error)?;
    Ok(dropped > 0)
}

/// Creates every suspended index again, as recorded, and forgets the
/// records, in one transaction. Returns how many it built.
pub(super) fn restore(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = Tx::immediate(conn).map_err(store_error)?;
    tx.conn().execute(CREATE_TABLE, []).map_err(store_error)?;
    let suspended = names_and_sql(
        tx.conn(),
        "SELECT name, sql FROM suspended_indexes ORDER BY name",
        [],
    )?;
    for (name, sql) in &suspended {
        tracing::debug!(index = %name, "building a suspended index");
        tx.conn().execute_batch(sql).map_err(store_error)?;
    }
    tx.conn()
        .execute("DELETE FROM suspended_indexes", [])
        .map_err(store_error)?;
    tx.commit().map_err(store_error)?;
    Ok(suspended.len())
}

/// The (index name, `CREATE INDEX` statement) pairs `query` selects.
fn names_and_sql(
    conn: &Connection,
    query: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(String, String)>, StoreError> {
    conn.prepare(query)
        .and_then(|mut statement| {
            statement
                .query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::{ProjectionStore, SqlStatement, SqlValue};

    /// Every index of the projections file, as SQLite keeps it.
    fn indexes(path: &std::path::Path) -> Vec<(String, String, Option<String>)> {
        let conn = Connection::open(super::super::projections_path(path)).unwrap();
        conn.prepare(
            "SELECT name, tbl_name, sql FROM sqlite_schema WHERE type = 'index' ORDER BY name",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    fn ledger_rows(n: i64) -> Vec<SqlStatement> {
        (1..=n)
            .map(|seq| {
                SqlStatement::new(
                    "INSERT INTO ledger_entries (account_id, seq, tx, log_seq, occurred_at_ms, \
                     kind, member_id, action, model, amount, available_before, available_after) \
                     VALUES ($1, $2, 0, $2, $2, 'credits_debited', $3, 'chat', NULL, 1, 0, 0)",
                    vec![
                        SqlValue::text("acct"),
                        SqlValue::int(seq),
                        SqlValue::text(if seq % 2 == 0 { "even" } else { "odd" }),
                    ],
                )
            })
            .collect()
    }

    async fn members(store: &SqliteStore, member: &str) -> Vec<i64> {
        let rows = store
            .query_projection(vec![SqlStatement::new(
                "SELECT seq FROM ledger_entries WHERE account_id = $1 AND member_id = $2 ORDER BY seq",
                vec![SqlValue::text("acct"), SqlValue::text(member)],
            )])
            .await
            .unwrap();
        rows[0].iter().map(|row| row[0].as_int().unwrap()).collect()
    }

    /// Suspending drops the named tables' own indexes and nothing else
    /// (keys stay, other tables keep theirs); rows written meanwhile are
    /// found by the same queries; restoring builds the same indexes again.
    #[tokio::test]
    async fn suspended_indexes_are_dropped_then_built_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.sqlite");
        let store = SqliteStore::open(&path).await.unwrap();
        let before = indexes(&path);
        let ledger_own: Vec<_> = before
            .iter()
            .filter(|(_, table, sql)| table == "ledger_entries" && sql.is_some())
            .map(|(name, _, _)| name.clone())
            .collect();
        assert_eq!(
            ledger_own.len(),
            4,
            "ListLedger's filter indexes: {before:?}"
        );

        assert!(store.suspend_indexes(&["ledger_entries"]).await.unwrap());
        let during = indexes(&path);
        for name in &ledger_own {
            assert!(
                during.iter().all(|(n, _, _)| n != name),
                "{name} still there"
            );
        }
        assert!(
            during
                .iter()
                .any(|(_, table, sql)| table == "ledger_entries" && sql.is_none()),
            "the ledger's primary key went too: {during:?}"
        );
        assert_eq!(during.len(), before.len() - ledger_own.len());

        store
            .commit_projection(crate::ProjectionCommit::single(
                "ledger",
                0,
                Some(crate::LogPosition::new(0, 6)),
                1,
                0,
                ledger_rows(6),
            ))
            .await
            .unwrap();
        assert_eq!(members(&store, "even").await, vec![2, 4, 6]);

        store.restore_indexes().await.unwrap();
        assert_eq!(indexes(&path), before);
        assert_eq!(members(&store, "odd").await, vec![1, 3, 5]);
        // Nothing left to restore: a second call changes nothing.
        store.restore_indexes().await.unwrap();
        assert_eq!(indexes(&path), before);
        // A table without indexes of its own: nothing to suspend.
        assert!(!store.suspend_indexes(&["account_balances"]).await.unwrap());
    }

    /// A bulk load that never restored them (the process was killed): the
    /// next open builds them.
    #[tokio::test]
    async fn opening_the_file_restores_indexes_a_load_left_suspended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.sqlite");
        let before = {
            let store = SqliteStore::open(&path).await.unwrap();
            let before = indexes(&path);
            assert!(
                store
                    .suspend_indexes(&["ledger_entries", "usage_daily", "usage_daily_units"])
                    .await
                    .unwrap()
            );
            assert_eq!(indexes(&path).len(), before.len() - 6);
            before
        };
        let _store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(indexes(&path), before);
    }
}
