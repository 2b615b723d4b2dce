//! The conformance suite: what every [`EventStore`] backend must do.
//!
//! Each case is a plain `async fn` over a [`Harness`], so it reads as a test
//! and can be called directly; [`conformance_tests!`](crate::conformance_tests)
//! turns all of them into `#[tokio::test]`s for one backend in one line:
//!
//! ```no_run
//! tally_store::conformance_tests!(tally_store::sqlite::SqliteHarness::new());
//! ```
//!
//! A backend passes only if it passes every case. A case states a behaviour
//! of the contract documented on [`EventStore`]; if a case and the contract
//! disagree, fix one of them, never the backend alone.

mod batch;
mod changes;
mod concurrency;
mod idempotency;
mod log;
mod model;
mod projection;
mod restart;
mod stream;
mod wakeup;

use std::future::Future;
use std::time::Duration;

pub use self::batch::{
    append_batch_judges_each_stream_alone, racing_batches_win_each_version_once,
    refunded_charges_are_kept_per_stream, resolved_holds_are_kept_per_stream,
};
pub use self::changes::{changes_signal_appends_and_projection_commits, next_signal};
pub use self::concurrency::{concurrent_appenders_win_each_version_once, tail_log_while_appending};
pub use self::idempotency::idempotency_records_are_atomic_with_events;
pub use self::log::{global_log_is_ordered_and_pages_without_gaps, read_log_after_checkpoint};
pub use self::model::random_operations_match_model;
pub use self::projection::{
    commits_move_several_checkpoints_together, emptied_tables_are_emptied_first,
    failed_statement_writes_nothing, log_head_is_the_last_append,
    projection_commit_writes_rows_with_checkpoint, projection_lock_has_one_holder,
    projections_survive_restart, queries_read_one_snapshot, racing_commits_land_once,
    reset_returns_to_the_start, stale_generation_writes_nothing,
    suspended_indexes_change_no_answers, usage_unit_row,
};
pub use self::restart::{restart_keeps_everything, snapshots_overwrite_and_miss};
pub use self::stream::{
    append_then_read_stream, invalid_append_writes_nothing, large_batch_is_atomic,
    read_versions_picks_scattered_versions, stream_version_tracks_appends,
    version_conflicts_write_nothing,
};
pub use self::wakeup::{
    append_writes_the_wakeup, due_wakeups_order_limit_and_boundary,
    failed_appends_leave_the_wakeup_alone, set_wakeup_only_at_the_current_version,
    stale_set_wakeup_loses_to_a_racing_append,
    stale_set_wakeup_loses_to_an_append_that_keeps_the_wakeup, wakeups_survive_restart,
};
use crate::{
    AppendRequest, EventStore, IdempotencyRecord, LogPosition, NewEvent, ProjectionStore,
    RecordedEvent,
};

/// How the suite gets stores from a backend.
pub trait Harness: Send + Sync + 'static {
    type Store: EventStore + ProjectionStore;
    /// Names one store's durable storage (a file, a database) so the restart
    /// case can open it again. Dropping it may delete that storage.
    type Location: Send + Sync + 'static;

    /// A new, empty store that no other case shares. Panics if it cannot
    /// make one: that is a broken test setup, not a case failing.
    fn create(&self) -> impl Future<Output = (Self::Store, Self::Location)> + Send;

    /// Opens the store at `location` again, as a restarted process would.
    /// The caller has dropped every earlier handle to it.
    fn reopen(&self, location: &Self::Location) -> impl Future<Output = Self::Store> + Send;
}

/// Expands to one `#[tokio::test]` per conformance case, in a module named
/// `conformance`, each with a harness built from the given expression.
///
/// The test crate needs no tokio dependency of its own, but must see this
/// crate as `tally_store` (not renamed): tokio's test macro is pointed at
/// this crate's tokio by a path written as a string, where `$crate` cannot
/// go.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_tests!(
            $harness;
            append_then_read_stream,
            read_versions_picks_scattered_versions,
            version_conflicts_write_nothing,
            concurrent_appenders_win_each_version_once,
            idempotency_records_are_atomic_with_events,
            global_log_is_ordered_and_pages_without_gaps,
            large_batch_is_atomic,
            read_log_after_checkpoint,
            tail_log_while_appending,
            restart_keeps_everything,
            snapshots_overwrite_and_miss,
            invalid_append_writes_nothing,
            stream_version_tracks_appends,
            random_operations_match_model,
            append_writes_the_wakeup,
            due_wakeups_order_limit_and_boundary,
            set_wakeup_only_at_the_current_version,
            stale_set_wakeup_loses_to_a_racing_append,
            stale_set_wakeup_loses_to_an_append_that_keeps_the_wakeup,
            wakeups_survive_restart,
            failed_appends_leave_the_wakeup_alone,
            projection_commit_writes_rows_with_checkpoint,
            stale_generation_writes_nothing,
            commits_move_several_checkpoints_together,
            failed_statement_writes_nothing,
            racing_commits_land_once,
            reset_returns_to_the_start,
            emptied_tables_are_emptied_first,
            queries_read_one_snapshot,
            projection_lock_has_one_holder,
            log_head_is_the_last_append,
            projections_survive_restart,
            append_batch_judges_each_stream_alone,
            racing_batches_win_each_version_once,
            resolved_holds_are_kept_per_stream,
            refunded_charges_are_kept_per_stream,
            changes_signal_appends_and_projection_commits,
            suspended_indexes_change_no_answers,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($harness:expr; $($case:ident),+ $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[$crate::conformance::__private::tokio::test(
                    crate = "::tally_store::conformance::__private::tokio",
                    flavor = "multi_thread",
                    worker_threads = 2
                )]
                async fn $case() {
                    let harness = $harness;
                    $crate::conformance::__private::within_time_limit(
                        stringify!($case),
                        $crate::conformance::$case(&harness),
                    )
                    .await;
                }
            )+
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use tokio;

    /// A backend that deadlocks should fail its case, not hang CI.
    pub async fn within_time_limit(case: &str, future: impl std::future::Future<Output = ()>) {
        if tokio::time::timeout(super::CASE_TIME_LIMIT, future)
            .await
            .is_err()
        {
            panic!(
                "conformance case {case} did not finish within {:?}",
                super::CASE_TIME_LIMIT
            );
        }
    }
}

const CASE_TIME_LIMIT: Duration = Duration::from_secs(300);

/// Large enough to read any log a case writes in one call.
const ALL: usize = 1_000_000;

fn event(event_type: &str, payload: impl Into<Vec<u8>>, recorded_at_ms: i64) -> NewEvent {
    NewEvent {
        event_type: event_type.to_owned(),
        payload: payload.into(),
        recorded_at_ms,
    }
}

/// `count` distinct events whose payloads say who wrote them.
fn events(tag: &str, count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|i| event("test.event", format!("{tag}#{i}"), i as i64))
        .collect()
}

fn request(stream_id: &str, expected_version: u64, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest::new(stream_id, expected_version, events)
}

fn record(key: &str, fingerprint: &str, response: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        key: key.to_owned(),
        fingerprint: fingerprint.as_bytes().to_vec(),
        response: response.as_bytes().to_vec(),
    }
}

fn keys(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

async fn read_whole_log<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    store.read_log(None, ALL).await.expect("read_log")
}

async fn read_whole_stream<S: EventStore>(store: &S, stream_id: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(stream_id, 1, ALL)
        .await
        .expect("read_stream")
}

fn assert_strictly_increasing(positions: impl IntoIterator<Item = LogPosition>, what: &str) {
    let mut previous: Option<LogPosition> = None;
    for position in positions {
        if let Some(previous) = previous {
            assert!(
                position > previous,
                "{what}: position {position} does not follow {previous}"
            );
        }
        assert!(
            position > LogPosition::default(),
            "{what}: position {position} is not after LogPosition::default()"
        );
        previous = Some(position);
    }
}

fn sorted_by_key(mut records: Vec<IdempotencyRecord>) -> Vec<IdempotencyRecord> {
    records.sort_by(|a, b| a.key.cmp(&b.key));
    records
}
