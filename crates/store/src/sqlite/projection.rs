//! The projection side of the SQLite backend: checkpointed batches through
//! the projections file's writer, snapshot reads through a reader.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, params_from_iter};

use super::SqliteStore;
use super::error::store_error;
use super::txn::Tx;
use crate::projection::{
    LockHolder, checkpoint_of, checkpoint_sql, checkpoint_upserts, numbered_placeholders,
};
use crate::{
    CommitOutcome, LogPosition, ProjectionCheckpoint, ProjectionCommit, ProjectionLock,
    ProjectionStore, SqlRow, SqlStatement, SqlValue, StoreError,
};

/// The file whose exclusive lock is the projection lock `name` of the
/// database at `path`, beside it: `tally.sqlite-projections.lock` for the
/// runner lock (named `projections`).
fn lock_path(path: &std::path::Path, name: &str) -> PathBuf {
    // A name is the caller's: nothing in it may reach out of the folder.
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    super::beside(path, &format!("-{name}.lock"))
}

/// Takes the projection lock: an exclusive lock (`flock`) on its file, so
/// it excludes other processes too (a `tallyd rebuild` beside the serving
/// `tallyd`) and another open of the store in this process, and the
/// operating system releases it when the holder dies. The file stays.
fn try_lock_file(path: PathBuf) -> Result<Option<File>, StoreError> {
    let unavailable = |err: std::io::Error| {
        StoreError::Unavailable(format!("projection lock {}: {err}", path.display()))
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(unavailable)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(err)) => Err(unavailable(err)),
    }
}

/// A parameter bound straight from the statement's value: text is lent to
/// SQLite (which copies it), not cloned into an owned value per row first.
struct Bound<'a>(&'a SqlValue);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            SqlValue::Int(Some(v)) => ValueRef::Integer(*v),
            SqlValue::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
            SqlValue::Int(None) | SqlValue::Text(None) => ValueRef::Null,
        }))
    }
}

fn bind(values: &[SqlValue]) -> impl Iterator<Item = Bound<'_>> {
    values.iter().map(Bound)
}

fn read_checkpoint(conn: &Connection, name: &str) -> Result<ProjectionCheckpoint, StoreError> {
    let row = conn
        .prepare_cached(&numbered_placeholders(checkpoint_sql::READ))
        .and_then(|mut statement| {
            statement
                .query_row([name], |row| {
                    Ok((
                        row.get::<_, Option<i64>>(0)?,
                        row.get::<_, Option<i64>>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                })
                .optional()
        })
        .map_err(store_error)?;
    match row {
        Some((tx, seq, generation, schema, updated)) => {
            checkpoint_of(tx, seq, generation, schema, updated)
        }
        None => Ok(ProjectionCheckpoint::default()),
    }
}

/// Runs `statements` in order. A batch's rows come in runs of the same
/// statement (a ledger entry per event, a balance per account): each run is
/// looked up in the statement cache once, not once per row.
fn execute_all(conn: &Connection, statements: &[SqlStatement]) -> Result<(), StoreError> {
    let mut rest = statements;
    while let Some(first) = rest.first() {
        let run = rest
            .iter()
            .position(|statement| statement.sql != first.sql)
            .unwrap_or(rest.len());
        let mut prepared = conn
            .prepare_cached(&numbered_placeholders(&first.sql))
            .map_err(store_error)?;
        for statement in &rest[..run] {
            prepared
                .execute(params_from_iter(bind(&statement.params)))
                .map_err(store_error)?;
        }
        rest = &rest[run..];
    }
    Ok(())
}

fn commit(conn: &mut Connection, commit: ProjectionCommit) -> Result<CommitOutcome, StoreError> {
    // IMMEDIATE: the generation read below cannot change before we write.
    let tx = Tx::immediate(conn).map_err(store_error)?;
    for moved in commit.locking_order() {
        let actual = read_checkpoint(tx.conn(), &moved.name)?.generation;
        if actual != moved.expected_generation {
            return Ok(CommitOutcome::GenerationMoved { actual });
        }
    }
    for table in &commit.emptied {
        // Without a WHERE, SQLite empties the table in one step.
        tx.conn()
            .execute(&format!("DELETE FROM {table}"), [])
            .map_err(store_error)?;
    }
    execute_all(tx.conn(), &commit.statements)?;
    execute_all(tx.conn(), &checkpoint_upserts(&commit))?;
    let generation = commit
        .checkpoints
        .first()
        .map_or(0, |moved| moved.expected_generation + 1);
    tx.commit().map_err(store_error)?;
    Ok(CommitOutcome::Committed { generation })
}

fn query(
    conn: &mut Connection,
    queries: Vec<SqlStatement>,
) -> Result<Vec<Vec<SqlRow>>, StoreError> {
    // One read transaction: WAL gives it one snapshot from its first read.
    let tx = Tx::deferred(conn).map_err(store_error)?;
    let mut results = Vec::with_capacity(queries.len());
    for query in &queries {
        let sql = numbered_placeholders(&query.sql);
        let mut prepared = tx.conn().prepare_cached(&sql).map_err(store_error)?;
        let columns = prepared.column_count();
        let rows = prepared
            .query_map(params_from_iter(bind(&query.params)), |row| {
                (0..columns)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => SqlValue::Int(None),
                            ValueRef::Integer(v) => SqlValue::Int(Some(v)),
                            ValueRef::Text(bytes) => {
                                SqlValue::Text(Some(String::from_utf8_lossy(bytes).into_owned()))
                            }
                            ValueRef::Real(_) | ValueRef::Blob(_) => {
                                return Err(rusqlite::Error::InvalidColumnType(
                                    i,
                                    "projection column".into(),
                                    row.get_ref(i)?.data_type(),
                                ));
                            }
                        })
                    })
                    .collect::<Result<SqlRow, rusqlite::Error>>()
            })
            .and_then(|rows| rows.collect::<Result<Vec<SqlRow>, _>>())
            .map_err(store_error)?;
        results.push(rows);
    }
    tx.commit().map_err(store_error)?;
    Ok(results)
}

impl ProjectionStore for SqliteStore {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn projection_checkpoint(&self, name: &str) -> Result<ProjectionCheckpoint, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| read_checkpoint(conn, &name)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(checkpoints = request.checkpoints.len(), statements = request.statements.len()))]
    async fn commit_projection(
        &self,
        request: ProjectionCommit,
    ) -> Result<CommitOutcome, StoreError> {
        let landed = crate::changes::projected(&request);
        let outcome = self
            .write_projections(move |conn| commit(conn, request))
            .await?;
        if matches!(outcome, CommitOutcome::Committed { .. }) {
            self.inner.changes.publish(landed);
        }
        Ok(outcome)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(queries = queries.len()))]
    async fn query_projection(
        &self,
        queries: Vec<SqlStatement>,
    ) -> Result<Vec<Vec<SqlRow>>, StoreError> {
        self.read(move |conn| query(conn, queries)).await
    }

    async fn try_lock_projection(&self, name: &str) -> Result<Option<ProjectionLock>, StoreError> {
        let path = lock_path(self.path(), name);
        let locked = tokio::task::spawn_blocking(move || try_lock_file(path))
            .await
            .map_err(|err| StoreError::Internal(format!("projection lock task: {err}")))??;
        Ok(locked.map(|file| ProjectionLock {
            holder: LockHolder::File(file),
        }))
    }

    async fn log_head(&self) -> Result<Option<LogPosition>, StoreError> {
        self.read(|conn| {
            let seq: Option<i64> = conn
                .query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))
                .map_err(store_error)?;
            Ok(seq.map(|seq| LogPosition::new(0, seq as u64)))
        })
        .await
    }

    async fn suspend_indexes(&self, tables: &[&'static str]) -> Result<bool, StoreError> {
        let tables = tables.to_vec();
        self.write_projections(move |conn| super::suspended_indexes::suspend(conn, &tables))
            .await
    }

    async fn restore_indexes(&self) -> Result<(), StoreError> {
        self.write_projections(|conn| super::suspended_indexes::restore(conn).map(drop))
            .await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    /// Statements run in the order given, across runs of the same
    /// statement: a row deleted between two runs of inserts is deleted
    /// after the first and before the second; NULL and text bind as given.
    #[test]
    fn statements_run_in_order_across_runs() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
            .unwrap();
        let insert = |k: &str, v: Option<i64>| {
            SqlStatement::new(
                "INSERT INTO t (k, v) VALUES ($1, $2)",
                vec![SqlValue::text(k), SqlValue::Int(v)],
            )
        };
        let delete =
            |k: &str| SqlStatement::new("DELETE FROM t WHERE k = $1", vec![SqlValue::text(k)]);
        execute_all(
            &conn,
            &[
                insert("a", Some(1)),
                insert("b", Some(2)),
                delete("a"),
                insert("a", None),
                insert("c", Some(3)),
                delete("b"),
            ],
        )
        .unwrap();
        let rows: Vec<(String, Option<i64>)> = conn
            .prepare("SELECT k, v FROM t ORDER BY k")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, vec![("a".into(), None), ("c".into(), Some(3))]);
    }

    /// `ListLedger`'s page query, in the shared dialect, run as the reads
    /// run it: a parameter compared with the key it orders by, and a
    /// `LIMIT` parameter. Each used to have SQLite plan the statement anew
    /// at every call.
    #[test]
    fn paged_reads_are_planned_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE entries (account_id TEXT NOT NULL, seq INTEGER NOT NULL,
                 PRIMARY KEY (account_id, seq)) WITHOUT ROWID;
             INSERT INTO entries VALUES ('a', 1), ('a', 2), ('a', 3), ('b', 1);",
        )
        .unwrap();
        let sql =
            "SELECT seq FROM entries WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        let page = |conn: &mut Connection, account: &str, after: i64, limit: i64| {
            let rows = query(
                conn,
                vec![SqlStatement::new(
                    sql,
                    vec![
                        SqlValue::text(account),
                        SqlValue::int(after),
                        SqlValue::int(limit),
                    ],
                )],
            )
            .unwrap();
            rows[0]
                .iter()
                .map(|row| row[0].as_int().unwrap())
                .collect::<Vec<_>>()
        };
        // The placeholders still bind by number, to the same values.
        assert_eq!(page(&mut conn, "a", 0, 2), vec![1, 2]);
        assert_eq!(page(&mut conn, "a", 2, 5), vec![3]);
        assert_eq!(page(&mut conn, "b", 0, 5), vec![1]);
        assert!(page(&mut conn, "c", 0, 5).is_empty());
        let statement = conn.prepare_cached(&numbered_placeholders(sql)).unwrap();
        assert_eq!(statement.get_status(StatementStatus::RePrepare), 0);
        assert!(conn.is_autocommit(), "the read transaction was left open");
    }
}
