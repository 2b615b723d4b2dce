//! Rebuilding a projection from the log: empty it, then fold the whole log
//! again. What `tallyd rebuild` runs.

use std::time::{Duration, Instant};

use tally_store::{EventStore, LogPosition, ProjectionStore};

use crate::runner::{Projector, RunnerConfig, Step, reset, reset_fold};
use crate::tables::table_names;
use crate::{ACCOUNT_FOLD, Projection, ProjectionError, RUNNER_LOCK};

/// How far a rebuild has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Events folded so far (account events and others).
    pub events: u64,
    /// Where the rebuild stands in the log.
    pub position: Option<LogPosition>,
    /// The log's last position when the rebuild started.
    pub head: Option<LogPosition>,
    /// Every event is folded; the indexes dropped for the load are being
    /// built (the embedded store), which takes a while at millions of rows.
    pub building_indexes: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    pub events: u64,
    pub elapsed: Duration,
}

/// Empties `projections` and folds the whole log into them again, in one
/// pass, calling `progress` after every batch. Refused with `Busy` while
/// another process runs the projections: stop it, or use
/// [`request_rebuild`] and let that runner do the work.
pub async fn rebuild<S: EventStore + ProjectionStore>(
    store: &S,
    projections: &[Projection],
    batch: usize,
    now_ms: impl Fn() -> i64,
    mut progress: impl FnMut(Progress),
) -> Result<RebuildReport, ProjectionError> {
    let Some(_lock) = store.try_lock_projection(RUNNER_LOCK).await? else {
        return Err(ProjectionError::Busy(RUNNER_LOCK));
    };
    let started = Instant::now();
    for &projection in projections {
        request_rebuild(store, projection, now_ms()).await?;
    }
    if Projection::ALL.iter().all(|p| projections.contains(p)) {
        // Nothing is left for the saved states to serve: one shared pass
        // folds every projection, instead of one catching up after another.
        loop {
            let fold = store.projection_checkpoint(ACCOUNT_FOLD).await?;
            if reset_fold(store, fold, now_ms()).await? {
                break;
            }
        }
    }
    let head = store.log_head().await?;
    let mut report = Progress {
        events: 0,
        position: None,
        head,
        building_indexes: false,
    };
    progress(report);
    // The emptied tables are loaded without the indexes only reads walk,
    // which are built once at the end: where the store can (the embedded
    // store), most of a rebuild's writes.
    let suspended = store.suspend_indexes(&table_names(projections)).await?;
    let folded = fold_log(store, batch, head, &now_ms, &mut report, &mut progress).await;
    if suspended {
        report.building_indexes = true;
        progress(report);
        // Also after a failed fold: the next attempt, or the runner that
        // takes over, reads with them.
        store.restore_indexes().await?;
    }
    folded?;
    Ok(RebuildReport {
        events: report.events,
        elapsed: started.elapsed(),
    })
}

/// Folds the log up to `head` into every projection, from their
/// checkpoints.
async fn fold_log<S: EventStore + ProjectionStore>(
    store: &S,
    batch: usize,
    head: Option<LogPosition>,
    now_ms: &impl Fn() -> i64,
    report: &mut Progress,
    progress: &mut impl FnMut(Progress),
) -> Result<(), ProjectionError> {
    // Every projection is fed: the one rebuilt catches up on its own fold,
    // the others go on (if they were behind the log).
    let mut projector = Projector::new(&Projection::ALL, &RunnerConfig::default()).reading_ahead();
    loop {
        match projector.step(store, store, batch, head, now_ms()).await? {
            Step::Applied { events, position } => {
                report.events += events as u64;
                report.position = Some(position);
                progress(*report);
            }
            Step::Idle => return Ok(()),
            Step::Moved | Step::Reset => {
                return Err(ProjectionError::Corrupt(
                    "a projection moved during a rebuild that held the runner's lock".into(),
                ));
            }
        }
    }
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
