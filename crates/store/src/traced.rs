//! [`Traced`]: any store, with a client span around each call made on
//! behalf of a traced request, so a caller's trace shows where its time
//! went in the database. Calls from background loops (projection runners
//! polling the log, the sweeper) have no span to belong to and stay
//! untraced: they would be a stream of root spans nobody asked for.

use tracing::{Instrument, Span};

use crate::{
    AppendRequest, AppendResult, ChargeRecord, CommitOutcome, EventStore, HoldRecord,
    IdempotencyRecord, LogPosition, PoolStatus, ProjectionCheckpoint, ProjectionCommit,
    ProjectionLock, ProjectionStore, RecordedEvent, Snapshot, SqlRow, SqlStatement, StoreError,
    Wakeup,
};

#[derive(Clone, Debug)]
pub struct Traced<S>(S);

impl<S> Traced<S> {
    pub fn new(store: S) -> Self {
        Traced(store)
    }
}

impl<S: EventStore> Traced<S> {
    /// A span for `operation` under the current one, or none when there is
    /// no current span.
    fn span(&self, operation: &'static str, stream: Option<&str>) -> Span {
        if Span::current().is_none() {
            return Span::none();
        }
        tracing::info_span!(
            target: "tally::store",
            "store",
            otel.name = %format_args!("{} {operation}", self.0.system_name()),
            otel.kind = "client",
            db.system.name = self.0.system_name(),
            db.operation.name = operation,
            tally.account_id = stream,
        )
    }
}

impl<S: EventStore> EventStore for Traced<S> {
    fn system_name(&self) -> &'static str {
        self.0.system_name()
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        self.0.pool_status()
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<crate::StoreChange> {
        self.0.changes()
    }

    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send {
        let span = self.span("append", Some(&request.stream_id));
        self.0.append(request).instrument(span)
    }

    fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> impl Future<Output = Vec<Result<AppendResult, StoreError>>> + Send {
        // The same operation as a single append (it is one, of several
        // streams); it names the account only when there is one.
        let stream = match requests.as_slice() {
            [only] => Some(only.stream_id.as_str()),
            _ => None,
        };
        let span = self.span("append", stream);
        self.0.append_batch(requests).instrument(span)
    }

    fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        let span = self.span("read_stream", Some(stream_id));
        self.0
            .read_stream(stream_id, from_version, limit)
            .instrument(span)
    }

    fn read_versions(
        &self,
        stream_id: &str,
        versions: &[u64],
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        let span = self.span("read_versions", Some(stream_id));
        self.0.read_versions(stream_id, versions).instrument(span)
    }

    fn read_log(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        let span = self.span("read_log", None);
        self.0.read_log(after, limit).instrument(span)
    }

    fn stream_version(
        &self,
        stream_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let span = self.span("stream_version", Some(stream_id));
        self.0.stream_version(stream_id).instrument(span)
    }

    fn find_idempotency(
        &self,
        stream_id: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<IdempotencyRecord>, StoreError>> + Send {
        let span = self.span("find_idempotency", Some(stream_id));
        self.0.find_idempotency(stream_id, keys).instrument(span)
    }

    fn find_holds(
        &self,
        stream_id: &str,
        hold_ids: &[String],
    ) -> impl Future<Output = Result<Vec<HoldRecord>, StoreError>> + Send {
        let span = self.span("find_holds", Some(stream_id));
        self.0.find_holds(stream_id, hold_ids).instrument(span)
    }

    fn find_charges(
        &self,
        stream_id: &str,
        charge_keys: &[String],
    ) -> impl Future<Output = Result<Vec<ChargeRecord>, StoreError>> + Send {
        let span = self.span("find_charges", Some(stream_id));
        self.0.find_charges(stream_id, charge_keys).instrument(span)
    }

    fn save_snapshot(
        &self,
        stream_id: &str,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let span = self.span("save_snapshot", Some(stream_id));
        self.0.save_snapshot(stream_id, snapshot).instrument(span)
    }

    fn load_snapshot(
        &self,
        stream_id: &str,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        let span = self.span("load_snapshot", Some(stream_id));
        self.0.load_snapshot(stream_id).instrument(span)
    }

    fn set_wakeup(
        &self,
        stream_id: &str,
        version: u64,
        at_ms: Option<i64>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let span = self.span("set_wakeup", Some(stream_id));
        self.0
            .set_wakeup(stream_id, version, at_ms)
            .instrument(span)
    }

    fn due_wakeups(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Wakeup>, StoreError>> + Send {
        let span = self.span("due_wakeups", None);
        self.0.due_wakeups(now_ms, limit).instrument(span)
    }
}

impl<S: EventStore + ProjectionStore> ProjectionStore for Traced<S> {
    fn projection_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ProjectionCheckpoint, StoreError>> + Send {
        let span = self.span("projection_checkpoint", None);
        self.0.projection_checkpoint(name).instrument(span)
    }

    fn commit_projection(
        &self,
        commit: ProjectionCommit,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send {
        let span = self.span("commit_projection", None);
        self.0.commit_projection(commit).instrument(span)
    }

    fn query_projection(
        &self,
        queries: Vec<SqlStatement>,
    ) -> impl Future<Output = Result<Vec<Vec<SqlRow>>, StoreError>> + Send {
        let span = self.span("query_projection", None);
        self.0.query_projection(queries).instrument(span)
    }

    fn try_lock_projection(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ProjectionLock>, StoreError>> + Send {
        let span = self.span("try_lock_projection", None);
        self.0.try_lock_projection(name).instrument(span)
    }

    fn log_head(&self) -> impl Future<Output = Result<Option<LogPosition>, StoreError>> + Send {
        let span = self.span("log_head", None);
        self.0.log_head().instrument(span)
    }

    fn suspend_indexes(
        &self,
        tables: &[&'static str],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let span = self.span("suspend_indexes", None);
        self.0.suspend_indexes(tables).instrument(span)
    }

    fn restore_indexes(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let span = self.span("restore_indexes", None);
        self.0.restore_indexes().instrument(span)
    }
}
