//! Tally's append-only event store.
//!
//! Every change to an account is an event in that account's stream and, at the
//! same time, in one global log. Streams give the engine optimistic
//! concurrency (append at an expected version); the global log gives
//! projections a single order they can tail from a checkpoint without ever
//! skipping an event.
//!
//! The contract lives on [`EventStore`]; backends are interchangeable only
//! because they all pass the same [`conformance`] suite (feature
//! `test-util`). There are two: [`sqlite::SqliteStore`], one file, so the
//! service runs with nothing installed, and [`postgres::PostgresStore`], for
//! production and for several replicas sharing one database.

mod changes;
mod error;
mod event;
mod position;
mod projection;
mod store;
mod traced;

pub mod postgres;
pub mod sqlite;

#[cfg(feature = "test-util")]
pub mod conformance;

pub use changes::{ProjectedTo, StoreChange};
pub use error::StoreError;
pub use event::{
    AppendRequest, AppendResult, ChargeRecord, HoldRecord, IdempotencyRecord, NewEvent,
    RecordedEvent, Snapshot, Wakeup,
};
pub use position::{LogPosition, ParseLogPositionError};
pub use projection::{
    CheckpointMove, CommitOutcome, ProjectionCheckpoint, ProjectionCommit, ProjectionLock,
    ProjectionStore, SqlRow, SqlStatement, SqlValue,
};
pub use store::{EventStore, PoolStatus};
pub use traced::Traced;
