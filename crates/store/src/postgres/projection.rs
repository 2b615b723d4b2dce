//! The projection side of the PostgreSQL backend: checkpointed batches in
//! one transaction, snapshot reads, and session advisory locks.

use deadpool_postgres::{Client, GenericClient};
use futures::future::try_join_all;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::{ToSql, Type};

use super::PostgresStore;
use super::coalesce::{Param, coalesce};
use super::error::{Failure, store_error};
use crate::projection::{LockHolder, checkpoint_of, checkpoint_sql, checkpoint_upserts};
use crate::{
    CommitOutcome, LogPosition, ProjectionCheckpoint, ProjectionCommit, ProjectionLock,
    ProjectionStore, SqlRow, SqlStatement, SqlValue, StoreError,
};

/// Creates the checkpoint rows if missing, so that `FOR UPDATE` below always
/// has rows to lock and two first commits of a projection serialise.
const ENSURE_CHECKPOINTS: &str = "
    INSERT INTO projection_checkpoints (name, tx, seq, generation, schema_version, updated_at_ms)
    SELECT name, NULL, NULL, 0, 0, 0 FROM unnest($1::text[]) AS name
    ON CONFLICT (name) DO NOTHING";

/// Locks the rows in name order, the order every commit takes them in.
const LOCK_CHECKPOINTS: &str = "SELECT name, generation FROM projection_checkpoints \
     WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE";

/// `events.tx`, not `tx`: a bare `tx` in `ORDER BY` names the output column
/// (the `::bigint` cast), which no index serves, and the whole log is sorted.
pub(super) const LOG_HEAD: &str = "SELECT tx::text::bigint, position FROM events ORDER BY events.tx DESC, events.position DESC LIMIT 1";

/// How long a reset's `TRUNCATE` waits for the tables' current readers.
/// While it waits, every new reader of those tables queues behind it, on
/// every replica; a long reader (a `tallyd verify`, a dump, an analyst's
/// transaction) would stall them all until it ended. Past this the commit
/// fails as `Unavailable`, writes nothing, and the runner tries again, so
/// reads stall for at most this long per attempt. Short reads never make it
/// wait this long.
const TRUNCATE_LOCK_TIMEOUT: &str = "1s";

/// High bits of every projection's advisory lock key ("tp"), so they stay
/// clear of the migration lock and of other applications' keys.
const LOCK_KEY_PREFIX: i64 = 0x7470 << 48;

/// A stable 32-bit hash of the projection's name (FNV-1a): the same key in
/// every process and every build.
fn lock_key(name: &str) -> i64 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    LOCK_KEY_PREFIX | i64::from(hash)
}

fn params(values: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|value| match value {
            SqlValue::Int(v) => v as &(dyn ToSql + Sync),
            SqlValue::Text(v) => v as &(dyn ToSql + Sync),
        })
        .collect()
}

fn decode(row: &tokio_postgres::Row) -> Result<SqlRow, StoreError> {
    (0..row.len())
        .map(|i| {
            let column = &row.columns()[i];
            let value = match *column.type_() {
                Type::INT8 => SqlValue::Int(row.try_get(i).map_err(store_error)?),
                Type::INT4 => SqlValue::Int(
                    row.try_get::<_, Option<i32>>(i)
                        .map_err(store_error)?
                        .map(i64::from),
                ),
                Type::TEXT | Type::VARCHAR | Type::NAME => {
                    SqlValue::Text(row.try_get(i).map_err(store_error)?)
                }
                ref other => {
                    return Err(store_error(Failure::Decode(format!(
                        "projection column {} has type {other}; cast it to bigint or text",
                        column.name()
                    ))));
                }
            };
            // NULL reads back alike on every backend, whatever its column.
            Ok(if value.is_null() {
                SqlValue::Int(None)
            } else {
                value
            })
        })
        .collect()
}

async fn read_checkpoint(
    client: &impl GenericClient,
    name: &str,
) -> Result<ProjectionCheckpoint, StoreError> {
    let statement = client
        .prepare_cached(checkpoint_sql::READ)
        .await
        .map_err(store_error)?;
    let row = client
        .query_opt(&statement, &[&name])
        .await
        .map_err(store_error)?;
    match row {
        Some(row) => checkpoint_of(
            row.try_get(0).map_err(store_error)?,
            row.try_get(1).map_err(store_error)?,
            row.try_get(2).map_err(store_error)?,
            row.try_get(3).map_err(store_error)?,
            row.try_get(4).map_err(store_error)?,
        ),
        None => Ok(ProjectionCheckpoint::default()),
    }
}

async fn commit(
    client: &mut Client,
    commit: ProjectionCommit,
) -> Result<CommitOutcome, StoreError> {
    let tx = client.transaction().await.map_err(store_error)?;
    let order = commit.locking_order();
    let names: Vec<&str> = order.iter().map(|moved| moved.name.as_str()).collect();
    let ensure = tx
        .prepare_cached(ENSURE_CHECKPOINTS)
        .await
        .map_err(store_error)?;
    tx.execute(&ensure, &[&names]).await.map_err(store_error)?;
    let lock = tx
        .prepare_cached(LOCK_CHECKPOINTS)
        .await
        .map_err(store_error)?;
    let rows = tx.query(&lock, &[&names]).await.map_err(store_error)?;
    let mut current = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let name: String = row.try_get(0).map_err(store_error)?;
        let generation: i64 = row.try_get(1).map_err(store_error)?;
        current.insert(name, generation as u64);
    }
    for moved in &order {
        let actual = current.get(&moved.name).copied().unwrap_or(0);
        if actual != moved.expected_generation {
            return Ok(CommitOutcome::GenerationMoved { actual });
        }
    }
    let generation = commit
        .checkpoints
        .first()
        .map_or(0, |moved| moved.expected_generation + 1);
    if !commit.emptied.is_empty() {
        let tables = commit.emptied.join(", ");
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{TRUNCATE_LOCK_TIMEOUT}'; TRUNCATE {tables}; \
             SET LOCAL lock_timeout TO DEFAULT"
        ))
        .await
        .map_err(|err| match store_error(err) {
            StoreError::Unavailable(message) => StoreError::Unavailable(format!(
                "emptying {tables} for a reset: {message} (a long transaction is reading \
                 them)"
            )),
            other => other,
        })?;
    }
    let mut statements = coalesce(&commit.statements);
    statements.extend(coalesce(&checkpoint_upserts(&commit)));
    let mut prepared = Vec::with_capacity(statements.len());
    for statement in &statements {
        prepared.push(
            tx.prepare_cached(&statement.sql)
                .await
                .map_err(store_error)?,
        );
    }
    // Pipelined: sent in order on the one connection, so they run in order,
    // without a round trip each.
    let bound: Vec<Vec<&(dyn ToSql + Sync)>> = statements
        .iter()
        .map(|s| s.params.iter().map(Param::as_sql).collect())
        .collect();
    try_join_all(
        prepared
            .iter()
            .zip(&bound)
            .map(|(statement, params)| tx.execute(statement, params)),
    )
    .await
    .map_err(store_error)?;
    tx.commit().await.map_err(store_error)?;
    Ok(CommitOutcome::Committed { generation })
}

async fn query(
    client: &mut Client,
    queries: Vec<SqlStatement>,
) -> Result<Vec<Vec<SqlRow>>, StoreError> {
    // One statement reads one snapshot by itself: no transaction, so one
    // round trip instead of three (BEGIN, the query, COMMIT). Most reads
    // (a balance, a ledger page) are one statement.
    if let [query] = &queries[..] {
        let statement = client
            .prepare_cached(&query.sql)
            .await
            .map_err(store_error)?;
        let rows = client
            .query(&statement, &params(&query.params))
            .await
            .map_err(store_error)?;
        return Ok(vec![
            rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?,
        ]);
    }
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(store_error)?;
    let mut results = Vec::with_capacity(queries.len());
    for query in &queries {
        let statement = tx.prepare_cached(&query.sql).await.map_err(store_error)?;
        let rows = tx
            .query(&statement, &params(&query.params))
            .await
            .map_err(store_error)?;
        results.push(rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?);
    }
    tx.commit().await.map_err(store_error)?;
    Ok(results)
}

impl ProjectionStore for PostgresStore {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn projection_checkpoint(&self, name: &str) -> Result<ProjectionCheckpoint, StoreError> {
        let client = self.client().await?;
        read_checkpoint(&client, name).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(checkpoints = request.checkpoints.len(), statements = request.statements.len()))]
    async fn commit_projection(
        &self,
        request: ProjectionCommit,
    ) -> Result<CommitOutcome, StoreError> {
        let landed = crate::changes::projected(&request);
        let mut client = self.client().await?;
        let outcome = commit(&mut client, request).await?;
        if matches!(outcome, CommitOutcome::Committed { .. }) {
            self.relay.publish(landed);
        }
        Ok(outcome)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(queries = queries.len()))]
    async fn query_projection(
        &self,
        queries: Vec<SqlStatement>,
    ) -> Result<Vec<Vec<SqlRow>>, StoreError> {
        let mut client = self.client().await?;
        query(&mut client, queries).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn try_lock_projection(&self, name: &str) -> Result<Option<ProjectionLock>, StoreError> {
        // Out of the pool for good: the lock lives as long as this session,
        // and a pooled connection would carry it to its next user.
        let client = Client::take(self.client().await?);
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(name)])
            .await
            .map_err(store_error)?
            .try_get(0)
            .map_err(store_error)?;
        Ok(locked.then_some(ProjectionLock {
            holder: LockHolder::Session(client),
        }))
    }

    async fn log_head(&self) -> Result<Option<LogPosition>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(LOG_HEAD).await.map_err(store_error)?;
        let row = client
            .query_opt(&statement, &[])
            .await
            .map_err(store_error)?;
        row.map(|row| {
            let tx: i64 = row.try_get(0).map_err(store_error)?;
            let seq: i64 = row.try_get(1).map_err(store_error)?;
            Ok(LogPosition::new(tx as u64, seq as u64))
        })
        .transpose()
    }

    /// Never: dropping an index needs the table's owner, not the service's
    /// role, and other replicas go on reading while a rebuild runs (their
    /// `ListLedger` pages would each walk an account's whole ledger).
    async fn suspend_indexes(&self, _tables: &[&'static str]) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn restore_indexes(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("balances"), lock_key("balances"));
        assert_ne!(lock_key("balances"), lock_key("ledger"));
        assert_eq!(lock_key("balances") >> 48, 0x7470);
    }
}
