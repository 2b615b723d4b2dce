//! What projections need from the store: their tables, a checkpoint
//! committed with their writes, a lock, and reads in one snapshot.
//!
//! Projections (the `tally-projections` crate) own *what* their rows say;
//! the store owns the tables (its migrations) and *how* a batch of writes
//! lands atomically with the checkpoint. The writes travel as SQL in the
//! dialect both backends share (`$1` placeholders, `BIGINT` and `TEXT`
//! values, `INSERT … ON CONFLICT … DO UPDATE`), so one projection's code
//! serves both backends and a rebuild into a scratch SQLite file can be
//! diffed row by row against a live PostgreSQL projection.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use crate::{LogPosition, StoreError};

/// A value bound to, or read from, a projection statement. Projections use
/// only 64-bit integers and text, the types both backends store alike.
/// A NULL is typed when bound (PostgreSQL needs to know) and reads back as
/// `Int(None)` on every backend, whatever its column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SqlValue {
    Int(Option<i64>),
    Text(Option<String>),
}

impl SqlValue {
    pub fn int(value: i64) -> Self {
        SqlValue::Int(Some(value))
    }

    pub fn text(value: impl Into<String>) -> Self {
        SqlValue::Text(Some(value.into()))
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            SqlValue::Int(value) => *value,
            SqlValue::Text(_) => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            SqlValue::Text(value) => value.as_deref(),
            SqlValue::Int(_) => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, SqlValue::Int(None) | SqlValue::Text(None))
    }
}

/// One row of a projection query, in the statement's column order.
pub type SqlRow = Vec<SqlValue>;

/// A statement in the shared dialect, with its parameters in `$n` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlStatement {
    pub sql: Cow<'static, str>,
    pub params: Vec<SqlValue>,
}

impl SqlStatement {
    pub fn new(sql: impl Into<Cow<'static, str>>, params: Vec<SqlValue>) -> Self {
        SqlStatement {
            sql: sql.into(),
            params,
        }
    }
}

/// How far a projection has applied the global log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProjectionCheckpoint {
    /// The last position applied; `None` before the first event.
    pub position: Option<LogPosition>,
    /// Bumped by every commit. A commit names the generation it read, so
    /// two runners (or a runner and a reset) can never both apply a batch:
    /// the second finds the generation moved and writes nothing.
    pub generation: u64,
    /// The version of the projection's code that wrote the rows; a runner
    /// whose code differs rebuilds. 0 for a projection never committed.
    pub schema_version: u32,
    /// When the checkpoint last moved (milliseconds since the epoch, on the
    /// committer's clock); 0 for a projection never committed.
    pub updated_at_ms: i64,
}

/// One checkpoint a commit moves, and the generation it must still be at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointMove {
    pub name: String,
    /// The generation the batch was computed from.
    pub expected_generation: u64,
    /// The new checkpoint; `None` resets it to the start.
    pub position: Option<LogPosition>,
    pub schema_version: u32,
}

/// A batch of projection writes and where it leaves one or more
/// checkpoints. Projections that are folded together (one read of the log
/// feeding several read models) commit their rows and all their
/// checkpoints in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionCommit {
    /// Every checkpoint the batch moves; the commit lands only if each is
    /// still at its expected generation, and moves each to that generation
    /// plus one.
    pub checkpoints: Vec<CheckpointMove>,
    pub updated_at_ms: i64,
    /// Tables emptied before the statements run, in the same transaction:
    /// what a projection's reset does to its own tables. PostgreSQL
    /// truncates them (instant, and the refill meets fresh indexes rather
    /// than a deleted table's dead entries); a table must belong to the
    /// committing projection alone, since a truncation waits for and then
    /// blocks every reader of it until the commit. It waits for readers a
    /// moment only: behind a long reader the commit is `Unavailable` and
    /// writes nothing, and the caller tries again later.
    pub emptied: Vec<&'static str>,
    /// Run in order, in the same transaction as the checkpoints. A backend
    /// may run consecutive statements with the same text as one set-based
    /// statement (PostgreSQL does), so such a run must never touch one row
    /// twice: an upsert would meet its own row.
    pub statements: Vec<SqlStatement>,
}

impl ProjectionCommit {
    /// A commit that moves one checkpoint.
    pub fn single(
        name: impl Into<String>,
        expected_generation: u64,
        position: Option<LogPosition>,
        schema_version: u32,
        updated_at_ms: i64,
        statements: Vec<SqlStatement>,
    ) -> Self {
        ProjectionCommit {
            checkpoints: vec![CheckpointMove {
                name: name.into(),
                expected_generation,
                position,
                schema_version,
            }],
            updated_at_ms,
            emptied: Vec::new(),
            statements,
        }
    }

    /// Empties `tables` first (see [`emptied`](Self::emptied)).
    pub fn emptying(mut self, tables: Vec<&'static str>) -> Self {
        self.emptied = tables;
        self
    }

    /// The checkpoints' names, in the order a backend locks them (sorted,
    /// so two commits naming the same checkpoints cannot deadlock).
    pub(crate) fn locking_order(&self) -> Vec<&CheckpointMove> {
        let mut moves: Vec<&CheckpointMove> = self.checkpoints.iter().collect();
        moves.sort_by(|a, b| a.name.cmp(&b.name));
        moves
    }
}

/// Whether the checkpoint and the writes landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Every checkpoint moved to its expected generation plus one;
    /// `generation` is the first checkpoint's.
    Committed { generation: u64 },
    /// A checkpoint is no longer at its expected generation: another
    /// runner or a reset moved it. Nothing was written. `actual` is that
    /// checkpoint's generation (the first found moved, in locking order).
    GenerationMoved { actual: u64 },
}

/// Leadership of one projection across processes: while a runner holds it,
/// runners elsewhere stand by. It is an efficiency, not the safety net (the
/// checkpoint generation is): a runner that lost its lock without noticing
/// can at worst have its next commit refused.
pub struct ProjectionLock {
    pub(crate) holder: LockHolder,
}

pub(crate) enum LockHolder {
    /// The SQLite backend: an exclusive lock on a file beside the store,
    /// released when the file is closed (dropped) or the process dies.
    File(#[expect(dead_code, reason = "held for its Drop, which releases it")] std::fs::File),
    /// The PostgreSQL backend: a session advisory lock on a connection taken
    /// out of the pool, released by the server when the connection closes,
    /// including when this process dies.
    Session(deadpool_postgres::ClientWrapper),
}

impl ProjectionLock {
    /// False once the lock is known lost (its connection closed).
    pub fn is_held(&self) -> bool {
        match &self.holder {
            LockHolder::File(_) => true,
            LockHolder::Session(client) => !client.is_closed(),
        }
    }
}

impl std::fmt::Debug for ProjectionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionLock")
            .field("held", &self.is_held())
            .finish()
    }
}

/// The store side of projections. Every backend passes the projection part
/// of the [`conformance`](crate::conformance) suite.
pub trait ProjectionStore: Send + Sync + 'static {
    /// The checkpoint of projection `name`; the default (nothing applied,
    /// generation 0) for one never committed.
    fn projection_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ProjectionCheckpoint, StoreError>> + Send;

    /// Runs the statements and moves the checkpoints, in one transaction, if
    /// and only if every checkpoint is still at its `expected_generation`.
    ///
    /// - MUST be atomic: every statement and the checkpoint, or nothing.
    /// - Two commits at the same generation: exactly one wins.
    /// - A statement that fails fails the call, writing nothing.
    fn commit_projection(
        &self,
        commit: ProjectionCommit,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send;

    /// Runs the queries in one read-only snapshot, so the rows of several
    /// tables and a checkpoint read together are consistent with each
    /// other. Returns one result set per query, in order.
    fn query_projection(
        &self,
        queries: Vec<SqlStatement>,
    ) -> impl Future<Output = Result<Vec<Vec<SqlRow>>, StoreError>> + Send;

    /// Takes the lock of projection `name` if no one holds it; `None` when
    /// someone does. Dropping the lock releases it.
    fn try_lock_projection(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ProjectionLock>, StoreError>> + Send;

    /// The position of the last event in the global log that is committed,
    /// `None` for an empty log. On PostgreSQL this may lie beyond what
    /// `read_log` returns yet (its fence holds back younger transactions).
    fn log_head(&self) -> impl Future<Output = Result<Option<LogPosition>, StoreError>> + Send;

    /// Drops the secondary indexes of `tables` (those only reads walk; a
    /// primary key stays) for a bulk load, which then inserts each row into
    /// the table and its key alone; [`restore_indexes`](Self::restore_indexes)
    /// builds them again at the end, in one sorted pass each, instead of one
    /// B-tree insert per row and index. Returns whether any were dropped.
    ///
    /// - Rows, and what queries answer, do not change; only how fast
    ///   queries that would walk a dropped index run.
    /// - A backend that cannot, or should not, returns `false` and changes
    ///   nothing: PostgreSQL does (the service's role may not drop indexes,
    ///   and other replicas serve reads while a rebuild runs).
    /// - Indexes dropped and not yet restored are restored when the store is
    ///   next opened, so a bulk load cut short leaves none missing for good.
    fn suspend_indexes(
        &self,
        tables: &[&'static str],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Builds every index [`suspend_indexes`](Self::suspend_indexes) dropped,
    /// as it was. Nothing to do when none is suspended.
    fn restore_indexes(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl<S: ProjectionStore> ProjectionStore for Arc<S> {
    fn projection_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ProjectionCheckpoint, StoreError>> + Send {
        (**self).projection_checkpoint(name)
    }

    fn commit_projection(
        &self,
        commit: ProjectionCommit,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send {
        (**self).commit_projection(commit)
    }

    fn query_projection(
        &self,
        queries: Vec<SqlStatement>,
    ) -> impl Future<Output = Result<Vec<Vec<SqlRow>>, StoreError>> + Send {
        (**self).query_projection(queries)
    }

    fn try_lock_projection(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ProjectionLock>, StoreError>> + Send {
        (**self).try_lock_projection(name)
    }

    fn log_head(&self) -> impl Future<Output = Result<Option<LogPosition>, StoreError>> + Send {
        (**self).log_head()
    }

    fn suspend_indexes(
        &self,
        tables: &[&'static str],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).suspend_indexes(tables)
    }

    fn restore_indexes(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).restore_indexes()
    }
}

/// The shared dialect's `$n` placeholders as SQLite's `?n`, which bind by
/// number, so a parameter may be used twice or out of order. Projection SQL
/// has no `$` inside literals.
///
/// Each is written `+?n`: the unary plus changes no value and no affinity,
/// and stops SQLite from planning the statement again every time it is
/// bound when the parameter is a `LIMIT` or is compared with an index the
/// statement also orders by (`ListLedger`'s pages, `GetUsage`'s groups);
/// see `crates/store/src/sqlite/sql.rs`.
pub(crate) fn numbered_placeholders(sql: &str) -> String {
    sql.replace('$', "+?")
}

/// The checkpoint table's statements, shared by both backends.
pub(crate) mod checkpoint_sql {
    pub const READ: &str = "SELECT tx, seq, generation, schema_version, updated_at_ms \
         FROM projection_checkpoints WHERE name = $1";
    pub const UPSERT: &str = "INSERT INTO projection_checkpoints \
         (name, tx, seq, generation, schema_version, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, seq = excluded.seq, \
         generation = excluded.generation, schema_version = excluded.schema_version, \
         updated_at_ms = excluded.updated_at_ms";
}

/// Decodes a checkpoint row read with [`checkpoint_sql::READ`].
pub(crate) fn checkpoint_of(
    tx: Option<i64>,
    seq: Option<i64>,
    generation: i64,
    schema_version: i64,
    updated_at_ms: i64,
) -> Result<ProjectionCheckpoint, StoreError> {
    let unsigned = |value: i64, what: &str| {
        u64::try_from(value)
            .map_err(|_| StoreError::Corrupt(format!("projection checkpoint {what} is {value}")))
    };
    let position = match (tx, seq) {
        (Some(tx), Some(seq)) => Some(LogPosition::new(unsigned(tx, "tx")?, unsigned(seq, "seq")?)),
        (None, None) => None,
        _ => {
            return Err(StoreError::Corrupt(
                "projection checkpoint has half a position".into(),
            ));
        }
    };
    Ok(ProjectionCheckpoint {
        position,
        generation: unsigned(generation, "generation")?,
        schema_version: u32::try_from(schema_version).map_err(|_| {
            StoreError::Corrupt(format!(
                "projection checkpoint schema version is {schema_version}"
            ))
        })?,
        updated_at_ms,
    })
}

/// The checkpoint upsert's parameters.
/// The checkpoint upserts of a commit whose checkpoints all were at their
/// expected generations.
pub(crate) fn checkpoint_upserts(commit: &ProjectionCommit) -> Vec<SqlStatement> {
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    commit
        .checkpoints
        .iter()
        .map(|moved| {
            SqlStatement::new(
                checkpoint_sql::UPSERT,
                vec![
                    SqlValue::text(moved.name.clone()),
                    SqlValue::Int(moved.position.map(|p| as_i64(p.tx))),
                    SqlValue::Int(moved.position.map(|p| as_i64(p.seq))),
                    SqlValue::int(as_i64(moved.expected_generation + 1)),
                    SqlValue::int(i64::from(moved.schema_version)),
                    SqlValue::int(commit.updated_at_ms),
                ],
            )
        })
        .collect()
}
