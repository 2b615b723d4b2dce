//! The embedded backend: one SQLite file, so `tallyd` runs with no database
//! server.
//!
//! It must pass the whole [`conformance`](crate::conformance) suite; any
//! behaviour that differs from the PostgreSQL backend is a bug in one of the
//! two.
//!
//! SQLite allows one writer at a time per file, and rusqlite blocks, so:
//! - appends, snapshot and wakeup writes go through one writer connection,
//!   taken in turn through an async mutex (waiting writers park as tasks,
//!   not as blocking threads) and run on `spawn_blocking`;
//! - the projections live in a second file beside the first
//!   (`<file>-projections`), with a writer connection of its own, so their
//!   commits and the appends write at the same time instead of taking
//!   turns with one lock; the file is disposable, rebuilt from the log;
//! - reads use a small pool of separate connections, with the projections
//!   file attached, which in WAL mode read a committed snapshot without
//!   waiting for either writer;
//! - every append is a `BEGIN IMMEDIATE` transaction, which also serialises
//!   writers in other processes that open the same file;
//! - neither writer checkpoints the write-ahead log: a thread of the
//!   store's own does, beside them (see `checkpointer.rs`).
//!
//! Because writers are serialised, rowids are handed out in commit order, so
//! the position `(0, rowid)` needs no fence for `read_log` to never skip.

mod checkpointer;
mod error;
#[cfg(feature = "test-util")]
mod harness;
mod projection;
mod schema;
mod sql;
mod suspended_indexes;
mod txn;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinError;
use tracing::Span;

use self::error::store_error;
#[cfg(feature = "test-util")]
pub use self::harness::{SqliteHarness, SqliteLocation};
pub use self::schema::SCHEMA_VERSION;
use crate::changes::ChangeHub;
use crate::{
    AppendRequest, AppendResult, ChargeRecord, EventStore, HoldRecord, IdempotencyRecord,
    LogPosition, RecordedEvent, Snapshot, StoreChange, StoreError, Wakeup,
};

/// Tuning for [`SqliteStore::open_with`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Most reads running at once (at least 1). More cannot help much on a
    /// small machine, and each one holds a connection's page cache.
    pub readers: usize,
    /// How long a statement waits for another process's lock before failing
    /// with [`StoreError::Unavailable`].
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// An [`EventStore`] in one SQLite file. Cheap to clone: clones share the
/// connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    writer: Arc<Mutex<Connection>>,
    /// The projections file's writer.
    projection_writer: Arc<Mutex<Connection>>,
    /// Bounds the reads in flight; waiting happens here, asynchronously,
    /// rather than on a blocking thread.
    reader_permits: Arc<Semaphore>,
    /// Connections not in use. Grows lazily up to `options.readers`.
    idle_readers: std::sync::Mutex<Vec<Connection>>,
    /// One process writes the file at a time, so in-process signals are
    /// all there is to relay.
    changes: ChangeHub,
    /// Stops with the store.
    _checkpointer: checkpointer::Checkpointer,
}

impl SqliteStore {
    /// Opens (creating it and its parent directory if needed) and migrates
    /// the database at `path`, with default options.
    ///
    /// Async because migrating may wait for another process's lock; it runs
    /// on `spawn_blocking`, so it needs a tokio runtime, like every other call.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`open`](Self::open) with explicit options.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options))
            .await
            .map_err(join_error)?
    }

    fn open_blocking(path: PathBuf, mut options: SqliteOptions) -> Result<Self, StoreError> {
        options.readers = options.readers.max(1);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| {
                StoreError::Unavailable(format!("cannot create {}: {err}", parent.display()))
            })?;
        }
        let mut writer = Connection::open(&path).map_err(store_error)?;
        schema::configure(&writer, options.busy_timeout)?;
        schema::migrate(&mut writer)?;
        let mut projection_writer =
            Connection::open(projections_path(&path)).map_err(store_error)?;
        schema::configure(&projection_writer, options.busy_timeout)?;
        // NORMAL: no fsync per projection commit. In WAL mode a crash can
        // only lose the last commits whole (rows and checkpoint together),
        // and the events they came from were fsynced before they could be
        // read, so a projection is never ahead of the durable log; it
        // re-applies what was lost.
        projection_writer
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(store_error)?;
        schema::migrate_projections(&mut projection_writer)?;
        let restored = suspended_indexes::restore(&mut projection_writer)?;
        if restored > 0 {
            tracing::warn!(
                indexes = restored,
                "built again the projection indexes a rebuild that did not finish had dropped"
            );
        }
        schema::forget_projections_ahead_of_log(&writer, &mut projection_writer)?;
        for conn in [&writer, &projection_writer] {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(store_error)?;
        }
        let writer = Arc::new(Mutex::new(writer));
        let projection_writer = Arc::new(Mutex::new(projection_writer));
        let checkpointer = checkpointer::Checkpointer::start(vec![
            checkpointer::Checkpointed {
                path: path.clone(),
                writer: writer.clone(),
            },
            checkpointer::Checkpointed {
                path: projections_path(&path),
                writer: projection_writer.clone(),
            },
        ])?;
        // Opening one reader now surfaces a problem at startup rather than
        // at the first read.
        let reader = open_reader(&path, options.busy_timeout)?;
        tracing::info!(path = %path.display(), schema_version = SCHEMA_VERSION, "opened sqlite event store");
        Ok(Self {
            inner: Arc::new(Inner {
                reader_permits: Arc::new(Semaphore::new(options.readers)),
                idle_readers: std::sync::Mutex::new(vec![reader]),
                writer,
                projection_writer,
                options,
                path,
                changes: ChangeHub::default(),
                _checkpointer: checkpointer,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `op` on the writer connection, once every earlier writer is done.
    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::write_with(&self.inner.writer, op).await
    }

    /// Runs `op` on the projections file's writer.
    async fn write_projections<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::write_with(&self.inner.projection_writer, op).await
    }

    async fn write_with<T: Send + 'static>(
        writer: &Arc<Mutex<Connection>>,
        op: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let mut conn = Arc::clone(writer).lock_owned().await;
        let span = Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| op(&mut conn)))
            .await
            .map_err(join_error)?
    }

    /// Runs `op` on a reader connection.
    async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = Arc::clone(&self.inner.reader_permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Internal("sqlite reader pool closed".into()))?;
        let inner = Arc::clone(&self.inner);
        let span = Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(|| {
                let mut conn = inner.checkout_reader()?;
                let result = op(&mut conn);
                inner.checkin_reader(conn);
                result
            })
        })
        .await
        .map_err(join_error)?
    }
}

impl Inner {
    fn checkout_reader(&self) -> Result<Connection, StoreError> {
        let idle = self
            .idle_readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => open_reader(&self.path, self.options.busy_timeout),
        }
    }

    fn checkin_reader(&self, conn: Connection) {
        // A Vec push cannot leave the list half-updated, so a poisoned lock
        // is still safe to use.
        self.idle_readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }
}

/// The projections file of the event file at `path`.
fn projections_path(path: &Path) -> PathBuf {
    beside(path, "-projections")
}

/// A file next to the store's, named after it: `tally.sqlite` + `suffix`.
pub(super) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    // Read-write at the file level because WAL readers update the shared
    // memory index; `query_only` is what keeps this connection from writing.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(store_error)?;
    schema::configure(&conn, busy_timeout)?;
    // Unqualified names find the projections' tables here: the event file
    // has none since migration 5.
    conn.execute(
        "ATTACH DATABASE ?1 AS projections",
        [projections_path(path).to_string_lossy()],
    )
    .map_err(store_error)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(store_error)?;
    Ok(conn)
}

fn join_error(err: JoinError) -> StoreError {
    if err.is_panic() {
        StoreError::Internal(format!("sqlite task panicked: {err}"))
    } else {
        StoreError::Unavailable(format!(
            "sqlite task cancelled (runtime shutting down): {err}"
        ))
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl EventStore for SqliteStore {
    fn system_name(&self) -> &'static str {
        "sqlite"
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<StoreChange> {
        self.inner.changes.subscribe()
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(stream_id = %request.stream_id, expected_version = request.expected_version, events = request.events.len())
    )]
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        self.append_batch(vec![request])
            .await
            .pop()
            .expect("one result per request")
    }

    #[tracing::instrument(level = "debug", skip_all, fields(streams = requests.len()))]
    async fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<AppendResult, StoreError>> {
        let streams: Vec<String> = requests.iter().map(|r| r.stream_id.clone()).collect();
        let results = match self
            .write(move |conn| Ok(sql::append_batch(conn, requests)))
            .await
        {
            Ok(results) => results,
            Err(err) => streams.iter().map(|_| Err(err.clone())).collect(),
        };
        if let Some(landed) = crate::changes::appended(streams, &results) {
            self.inner.changes.publish(landed);
        }
        results
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream_id = stream_id.to_owned();
        self.read(move |conn| sql::read_stream(conn, &stream_id, from_version, limit))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, versions), fields(versions = versions.len()))]
    async fn read_versions(
        &self,
        stream_id: &str,
        versions: &[u64],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream_id = stream_id.to_owned();
        let versions = versions.to_vec();
        self.read(move |conn| sql::read_versions(conn, &stream_id, &versions))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(after = after.map(tracing::field::display)))]
    async fn read_log(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read(move |conn| sql::read_log(conn, after, limit))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        let stream_id = stream_id.to_owned();
        self.read(move |conn| sql::stream_version(conn, &stream_id))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, keys), fields(keys = keys.len()))]
    async fn find_idempotency(
        &self,
        stream_id: &str,
        keys: &[String],
    ) -> Result<Vec<IdempotencyRecord>, StoreError> {
        let stream_id = stream_id.to_owned();
        let keys = keys.to_vec();
        self.read(move |conn| sql::find_idempotency(conn, &stream_id, &keys))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, hold_ids), fields(holds = hold_ids.len()))]
    async fn find_holds(
        &self,
        stream_id: &str,
        hold_ids: &[String],
    ) -> Result<Vec<HoldRecord>, StoreError> {
        let stream_id = stream_id.to_owned();
        let hold_ids = hold_ids.to_vec();
        self.read(move |conn| sql::find_holds(conn, &stream_id, &hold_ids))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, charge_keys), fields(charges = charge_keys.len()))]
    async fn find_charges(
        &self,
        stream_id: &str,
        charge_keys: &[String],
    ) -> Result<Vec<ChargeRecord>, StoreError> {
        let stream_id = stream_id.to_owned();
        let charge_keys = charge_keys.to_vec();
        self.read(move |conn| sql::find_charges(conn, &stream_id, &charge_keys))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, snapshot), fields(version = snapshot.version))]
    async fn save_snapshot(&self, stream_id: &str, snapshot: Snapshot) -> Result<(), StoreError> {
        let stream_id = stream_id.to_owned();
        self.write(move |conn| sql::save_snapshot(conn, &stream_id, &snapshot))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let stream_id = stream_id.to_owned();
        self.read(move |conn| sql::load_snapshot(conn, &stream_id))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn set_wakeup(
        &self,
        stream_id: &str,
        version: u64,
        at_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let stream_id = stream_id.to_owned();
        self.write(move |conn| sql::set_wakeup(conn, &stream_id, version, at_ms))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn due_wakeups(&self, now_ms: i64, limit: usize) -> Result<Vec<Wakeup>, StoreError> {
        self.read(move |conn| sql::due_wakeups(conn, now_ms, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durability rests on these per-connection settings, which nothing
    /// outside the process can observe.
    #[tokio::test]
    async fn every_log_connection_is_durable_and_readers_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("tally.sqlite"))
            .await
            .unwrap();
        let writer_sync: i64 = store
            .write(|conn| {
                conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .map_err(store_error)
            })
            .await
            .unwrap();
        assert_eq!(writer_sync, 2, "writer synchronous=FULL");
        let projection_writer_sync: i64 = store
            .write_projections(|conn| {
                conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .map_err(store_error)
            })
            .await
            .unwrap();
        assert_eq!(
            projection_writer_sync, 1,
            "projections writer synchronous=NORMAL: disposable, rebuilt from the log"
        );

        let (reader_sync, write_attempt, projection_write_attempt) = store
            .read(|conn| {
                let sync: i64 = conn
                    .query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .map_err(store_error)?;
                Ok((
                    sync,
                    conn.execute("DELETE FROM snapshots", []),
                    conn.execute("DELETE FROM account_balances", []),
                ))
            })
            .await
            .unwrap();
        assert_eq!(reader_sync, 2, "reader synchronous=FULL");
        assert!(write_attempt.is_err(), "a reader connection wrote");
        assert!(
            projection_write_attempt.is_err(),
            "a reader connection wrote to the projections file"
        );
    }

    /// A commit never stops to checkpoint, and the log still reaches the
    /// database file while the store is open: the checkpointer copies it.
    #[tokio::test]
    async fn commits_leave_the_checkpoints_to_the_checkpointer() {
        use crate::{AppendRequest, EventStore, NewEvent};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.sqlite");
        let store = SqliteStore::open(&path).await.unwrap();
        let autocheckpoint = |conn: &mut Connection| {
            conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get::<_, i64>(0))
                .map_err(store_error)
        };
        assert_eq!(store.write(autocheckpoint).await.unwrap(), 0);
        assert_eq!(store.write_projections(autocheckpoint).await.unwrap(), 0);

        let before = std::fs::metadata(&path).unwrap().len();
        // About 2 MB of events: far more pages than the file holds now.
        for version in 0..64u64 {
            let events = (0..8)
                .map(|_| NewEvent {
                    event_type: "filler".into(),
                    payload: vec![7; 4_000],
                    recorded_at_ms: 1_700_000_000_000,
                })
                .collect();
            store
                .append(AppendRequest::new("acme", version * 8, events))
                .await
                .unwrap();
        }
        // Rounds run every 100 ms; a loaded machine gets 30 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&path).unwrap().len() < before + 2_000_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {} bytes: nothing checkpointed the log",
                std::fs::metadata(&path).unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
