//! Rebuilding a projection from the log: empty it, then fold the whole log
//! again. What `tallyd rebuild` runs.

use std::time::{Duration, Instant};

use tally_store::{EventStore, LogPosition, ProjectionStore};

use crate::runner::{Projector, RunnerConfig, Step, reset};
use crate::{Projection, ProjectionError, RUNNER_LOCK};

/// How far a rebuild has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub projection: Projection,
    /// Events folded so far (account events and others).
    pub events: u64,
    /// Where the rebuild stands in the log.
    pub position: Option<LogPosition>,
    /// The log's last position when the rebuild started.
    pub head: Option<LogPosition>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    pub projection: Projection,
    pub events: u64,
    pub elapsed: Duration,
}

/// Empties `projection` and folds the whole log into it again, calling
/// `progress` after every batch. Refused with `Busy` while another process
/// runs the projection: stop it, or use [`request_rebuild`] and let that
/// runner do the work.
pub async fn rebuild<S: EventStore + ProjectionStore>(
    store: &S,
    projection: Projection,
    batch: usize,
    now_ms: impl Fn() -> i64,
    mut progress: impl FnMut(Progress),
) -> Result<RebuildReport, ProjectionError> {
    let Some(_lock) = store.try_lock_projection(RUNNER_LOCK).await? else {
        return Err(ProjectionError::Busy(projection.name()));
    };
    let started = Instant::now();
    request_rebuild(store, projection, now_ms()).await?;
    let head = store.log_head().await?;
    let mut report = Progress {
        projection,
        events: 0,
        position: None,
        head,
    };
    progress(report);
    // Every projection is fed: the one rebuilt catches up on its own fold,
    // the others go on (if they were behind the log).
    let mut projector = Projector::new(&Projection::ALL, &RunnerConfig::default());
    loop {
        match projector.step(store, store, batch, head, now_ms()).await? {
            Step::Applied { events, position } => {
                report.events += events as u64;
                report.position = Some(position);
                progress(report);
            }
            Step::Idle => break,
            Step::Moved | Step::Reset => {
                return Err(ProjectionError::Corrupt(format!(
                    "projection {projection} moved during a rebuild that held its lock"
                )));
            }
        }
    }
    Ok(RebuildReport {
        projection,
        events: report.events,
        elapsed: started.elapsed(),
    })
}

/// Empties `projection` and moves its checkpoint to the start; whichever
/// process runs the projections then folds the log again from the
/// beginning.
pub async fn request_rebuild<S: ProjectionStore>(
    store: &S,
    projection: Projection,
    now_ms: i64,
) -> Result<(), ProjectionError> {
    loop {
        let seen = store.projection_checkpoint(projection.name()).await?;
        if reset(store, projection, seen, now_ms).await? {
            return Ok(());
        }
    }
}
