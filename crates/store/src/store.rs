use std::future::Future;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::{
    AppendRequest, AppendResult, ChargeRecord, HoldRecord, IdempotencyRecord, LogPosition,
    RecordedEvent, Snapshot, StoreChange, StoreError, Wakeup,
};

/// An append-only store of event streams and the global log they form.
///
/// This documentation is the contract. Every backend MUST pass the whole
/// [`conformance`](crate::conformance) suite; behaviour that differs between
/// backends is a bug in one of them, not a choice.
///
/// - Events are never updated or deleted once an append has returned `Ok`.
/// - An append that returned `Ok` is durable: it survives the process being
///   killed and the machine losing power.
/// - Each stream's versions are 1-based and contiguous: `1, 2, …, n`.
/// - Every event has a [`LogPosition`] unique in the store. Within a stream,
///   a higher version has a higher position.
/// - A read that starts after an append returned sees that append
///   (read-your-writes), on any handle to the same store.
/// - Correctness across several processes sharing one store comes from the
///   backend's own concurrency control, never from in-process locks alone.
///
/// Methods return `Send` futures so the engine can hold an `S: EventStore`
/// and call it from spawned tasks. Dropping a returned future does not undo
/// an append already handed to the backend: like a lost connection, the
/// outcome is then unknown, which is what idempotency records are for.
pub trait EventStore: Send + Sync + 'static {
    /// The backend, as OpenTelemetry's `db.system.name` spells it
    /// (`postgresql`, `sqlite`).
    fn system_name(&self) -> &'static str;

    /// The connection pool's state, for backends that have a pool.
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }

    /// Signals of what is committed to this store from now on: appends,
    /// by stream, and projection commits. A hint to look again, never the
    /// data (see [`StoreChange`]).
    ///
    /// - MUST deliver, to every receiver subscribed before the call
    ///   returned, an [`StoreChange::Appended`] naming the stream of each
    ///   append (or request of a batch) that returned `Ok` through this
    ///   handle or a clone of it (or [`StoreChange::Unknown`]), and a
    ///   [`StoreChange::Projected`] for each landed
    ///   [`commit_projection`](crate::ProjectionStore::commit_projection).
    /// - SHOULD deliver, soon after, the same for commits made by other
    ///   processes sharing the store, where the backend can relay them
    ///   (PostgreSQL does, through `LISTEN`/`NOTIFY`); a consumer polls
    ///   slowly as well, since such a signal can be lost.
    /// - MAY deliver signals for nothing new, and `Unknown` at any time.
    ///
    /// Call it from within a tokio runtime: a backend may start a task to
    /// listen.
    fn changes(&self) -> broadcast::Receiver<StoreChange>;

    /// Appends `request.events` to `request.stream_id` at versions
    /// `expected_version + 1 ..= expected_version + events.len()`.
    ///
    /// - MUST be atomic: all events, all idempotency records and the wakeup
    ///   are written, or nothing is.
    /// - MUST make `request.next_wakeup_ms` the stream's wakeup (`None`
    ///   clears it). Every append does, so an append that means to keep a
    ///   wakeup passes it again. A wakeup that changes (or is the stream's
    ///   first) is recorded at the new last version; one that does not keeps
    ///   the version it was set at, and [`set_wakeup`](Self::set_wakeup)
    ///   calls stale against the new version still lose.
    /// - MUST refuse with [`StoreError::InvalidAppend`], writing nothing, what
    ///   [`AppendRequest::validate`] refuses.
    /// - MUST fail with [`StoreError::VersionConflict`], writing nothing, when
    ///   the stream is not at `expected_version`; `actual` is the version it
    ///   was at (0 for a stream that does not exist). Two appends racing at
    ///   the same expected version: exactly one wins.
    /// - MUST fail with [`StoreError::DuplicateIdempotencyKey`], writing
    ///   nothing, when a record's key already exists in this stream or
    ///   appears twice in the request; `key` is the first such key in request
    ///   order. Keys are scoped to the stream: another stream may use it.
    /// - A version conflict is reported in preference to a duplicate key.
    /// - Positions in the result are in event order and strictly increasing,
    ///   and greater than every position already visible in the log.
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send;

    /// Appends to several streams at once: group commit across accounts,
    /// one transaction (one fsync) for all of them where the backend can.
    ///
    /// - Each request is judged exactly as [`append`](Self::append) judges
    ///   it and gets its own result, in request order: one stream's version
    ///   conflict or duplicate key fails that request only, never the
    ///   others, and writes nothing of it.
    /// - Every request that succeeds is durable when this returns, with
    ///   everything `append` promises (atomic per request, wakeup, holds).
    /// - A request naming a stream that an earlier request in the batch
    ///   names is refused with [`StoreError::InvalidAppend`]: a stream's
    ///   batches are decided one after another, so they never share one
    ///   call.
    /// - A failure of the whole transaction (the database unreachable) is
    ///   every request's result; the outcome of each is then unknown, as
    ///   with `append`.
    fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> impl Future<Output = Vec<Result<AppendResult, StoreError>>> + Send;

    /// Events of one stream with `version >= from_version`, ascending by
    /// version, at most `limit` (0 returns nothing). `from_version` 0 reads
    /// from the start, like 1. An unknown stream is empty, not an error,
    /// because "no events yet" is a normal state of an account.
    fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The events of one stream at `versions`, ascending by version, each
    /// at most once; a version the stream does not have is simply missing.
    /// One index lookup per version, whatever the stream's length: what
    /// serves a filtered page of the ledger, whose versions are scattered.
    fn read_versions(
        &self,
        stream_id: &str,
        versions: &[u64],
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Events of the global log strictly after `after` (`None` = from the
    /// start), ascending by position, at most `limit` (0 returns nothing).
    ///
    /// MUST never skip an event: once an event at position `p` has been
    /// returned, no event with a position `< p` may appear later. A backend
    /// whose writers commit out of position order (PostgreSQL) must hold back
    /// events until no earlier position can still commit. This is what lets a
    /// consumer checkpoint the last position it processed and resume from it.
    fn read_log(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Current version of a stream: the version of its last event, 0 if it
    /// has none.
    fn stream_version(
        &self,
        stream_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The idempotency records of this stream whose key is among `keys`, in
    /// any order and each at most once; absent keys are simply missing.
    /// Records were committed with their events, so a record found here means
    /// its effects are in the stream.
    fn find_idempotency(
        &self,
        stream_id: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<IdempotencyRecord>, StoreError>> + Send;

    /// The [`HoldRecord`]s of this stream whose id is among `hold_ids`, in
    /// any order and each at most once, as last written by an append; absent
    /// ids are simply missing. One index lookup per id, whatever the
    /// stream's history.
    fn find_holds(
        &self,
        stream_id: &str,
        hold_ids: &[String],
    ) -> impl Future<Output = Result<Vec<HoldRecord>, StoreError>> + Send;

    /// The [`ChargeRecord`]s of this stream whose key is among
    /// `charge_keys`, like [`find_holds`](Self::find_holds).
    fn find_charges(
        &self,
        stream_id: &str,
        charge_keys: &[String],
    ) -> impl Future<Output = Result<Vec<ChargeRecord>, StoreError>> + Send;

    /// Stores `snapshot` as the stream's snapshot, replacing any previous one.
    ///
    /// Snapshots are a cache of a fold over the stream, not part of the log:
    /// overwriting is allowed, they have no position, and they never change
    /// the stream's version. A reader folds the stream's events after
    /// `snapshot.version` on top, so an older snapshot winning a race is
    /// merely slower, never wrong.
    fn save_snapshot(
        &self,
        stream_id: &str,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The last snapshot saved for the stream, `None` if there is none.
    fn load_snapshot(
        &self,
        stream_id: &str,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Makes `at_ms` the stream's [`Wakeup`] (`None` clears it), recorded at
    /// `version`, if and only if the stream is at `version` now; returns
    /// whether it did.
    ///
    /// For a wakeup computed without appending, e.g. for a stream written
    /// before wakeups existed, or when a due wakeup turned out to need no
    /// event. The caller computed `at_ms` from the state at `version`, so it
    /// is right only as long as no later event exists.
    ///
    /// - MUST be atomic against appends, also from other processes: if an
    ///   append moves the stream past `version`, the wakeup that append wrote
    ///   stays, whichever of the two reaches the store first. A stale call
    ///   returns `false` and never overwrites a newer wakeup, including one
    ///   an append cleared.
    /// - MUST return `false`, writing nothing, when the stream is not at
    ///   `version`, including `version` 0 and streams without events.
    /// - Two calls at the same current version: the later one wins (both
    ///   computed from the same state, so they should agree).
    fn set_wakeup(
        &self,
        stream_id: &str,
        version: u64,
        at_ms: Option<i64>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The wakeups with `at_ms <= now_ms`, ascending by `(at_ms, stream_id)`
    /// (stream ids compared bytewise), at most `limit` (0 returns nothing).
    ///
    /// Reading does not claim or remove anything: a wakeup stays due until
    /// an append or [`set_wakeup`](Self::set_wakeup) moves or clears it, so
    /// a scheduler that crashes half-way finds the same work again, and
    /// replicas sharing the store may see the same wakeup (they must settle
    /// it through the stream's version, like any other write).
    fn due_wakeups(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Wakeup>, StoreError>> + Send;
}

/// A connection pool's state, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// The most connections the pool opens.
    pub max_size: usize,
    /// Connections open now.
    pub size: usize,
    /// Open connections no one is using.
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// Lets the engine, the projections and the server share one store.
impl<S: EventStore> EventStore for Arc<S> {
    fn system_name(&self) -> &'static str {
        (**self).system_name()
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        (**self).pool_status()
    }

    fn changes(&self) -> broadcast::Receiver<StoreChange> {
        (**self).changes()
    }

    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send {
        (**self).append(request)
    }

    fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> impl Future<Output = Vec<Result<AppendResult, StoreError>>> + Send {
        (**self).append_batch(requests)
    }

    fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        (**self).read_stream(stream_id, from_version, limit)
    }

    fn read_versions(
        &self,
        stream_id: &str,
        versions: &[u64],
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        (**self).read_versions(stream_id, versions)
    }

    fn read_log(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        (**self).read_log(after, limit)
    }

    fn stream_version(
        &self,
        stream_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).stream_version(stream_id)
    }

    fn find_idempotency(
        &self,
        stream_id: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<IdempotencyRecord>, StoreError>> + Send {
        (**self).find_idempotency(stream_id, keys)
    }

    fn find_holds(
        &self,
        stream_id: &str,
        hold_ids: &[String],
    ) -> impl Future<Output = Result<Vec<HoldRecord>, StoreError>> + Send {
        (**self).find_holds(stream_id, hold_ids)
    }

    fn find_charges(
        &self,
        stream_id: &str,
        charge_keys: &[String],
    ) -> impl Future<Output = Result<Vec<ChargeRecord>, StoreError>> + Send {
        (**self).find_charges(stream_id, charge_keys)
    }

    fn save_snapshot(
        &self,
        stream_id: &str,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).save_snapshot(stream_id, snapshot)
    }

    fn load_snapshot(
        &self,
        stream_id: &str,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        (**self).load_snapshot(stream_id)
    }

    fn set_wakeup(
        &self,
        stream_id: &str,
        version: u64,
        at_ms: Option<i64>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).set_wakeup(stream_id, version, at_ms)
    }

    fn due_wakeups(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Wakeup>, StoreError>> + Send {
        (**self).due_wakeups(now_ms, limit)
    }
}
