//! The projection side of the SQLite backend: checkpointed batches through
//! the projections file's writer, snapshot reads through a reader.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params_from_iter};

use super::SqliteStore;
use super::error::store_error;
use crate::projection::{
    LockHolder, checkpoint_of, checkpoint_sql, checkpoint_upserts, numbered_placeholders,
};
use crate::{
    CommitOutcome, LogPosition, ProjectionCheckpoint, ProjectionCommit, ProjectionLock,
    ProjectionStore, SqlRow, SqlStatement, SqlValue, StoreError,
};

/// Projection locks held in this process, by database file and projection.
/// A SQLite file has one writing process (the service); inside it, this
/// keeps two runners of one projection from racing for nothing.
static LOCAL_LOCKS: Mutex<Option<HashSet<(PathBuf, String)>>> = Mutex::new(None);

/// Releases its entry in [`LOCAL_LOCKS`] when dropped.
pub(crate) struct LocalLock {
    key: (PathBuf, String),
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        let mut held = LOCAL_LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = held.as_mut() {
            held.remove(&self.key);
        }
    }
}

fn bind(values: &[SqlValue]) -> Vec<Value> {
    values
        .iter()
        .map(|value| match value {
            SqlValue::Int(Some(v)) => Value::Integer(*v),
            SqlValue::Text(Some(v)) => Value::Text(v.clone()),
            SqlValue::Int(None) | SqlValue::Text(None) => Value::Null,
        })
        .collect()
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

fn execute(conn: &Connection, statement: &SqlStatement) -> Result<(), StoreError> {
    let sql = numbered_placeholders(&statement.sql);
    let params = bind(&statement.params);
    conn.prepare_cached(&sql)
        .and_then(|mut prepared| prepared.execute(params_from_iter(params.iter())))
        .map_err(store_error)?;
    Ok(())
}

fn commit(conn: &mut Connection, commit: ProjectionCommit) -> Result<CommitOutcome, StoreError> {
    // IMMEDIATE: the generation read below cannot change before we write.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)?;
    for moved in commit.locking_order() {
        let actual = read_checkpoint(&tx, &moved.name)?.generation;
        if actual != moved.expected_generation {
            return Ok(CommitOutcome::GenerationMoved { actual });
        }
    }
    for table in &commit.emptied {
        // Without a WHERE, SQLite empties the table in one step.
        tx.execute(&format!("DELETE FROM {table}"), [])
            .map_err(store_error)?;
    }
    for statement in &commit.statements {
        execute(&tx, statement)?;
    }
    for upsert in checkpoint_upserts(&commit) {
        execute(&tx, &upsert)?;
    }
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
    let tx = conn.transaction().map_err(store_error)?;
    let mut results = Vec::with_capacity(queries.len());
    for query in &queries {
        let sql = numbered_placeholders(&query.sql);
        let params = bind(&query.params);
        let mut prepared = tx.prepare_cached(&sql).map_err(store_error)?;
        let columns = prepared.column_count();
        let rows = prepared
            .query_map(params_from_iter(params.iter()), |row| {
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
    tx.finish().map_err(store_error)?;
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
        let key = (self.path().to_path_buf(), name.to_owned());
        let mut held = LOCAL_LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.get_or_insert_with(HashSet::new).insert(key.clone()) {
            return Ok(None);
        }
        Ok(Some(ProjectionLock {
            holder: LockHolder::Local(LocalLock { key }),
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
}
