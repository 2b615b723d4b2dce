//! Running projections: one runner per projection across every process
//! sharing the store (a lock), tailing the global log from its checkpoint.
//!
//! A runner reads a batch of events after its checkpoint, folds them with
//! the account states it last committed, and commits the rows and the new
//! checkpoint in one transaction that also checks the checkpoint has not
//! moved. A crash between batches loses nothing and repeats nothing; a
//! runner that lost its lock unnoticed has its commit refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_core::Clock;
use tally_store::{
    CommitOutcome, EventStore, LogPosition, ProjectionCheckpoint, ProjectionCommit, ProjectionStore,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::apply::{Fold, accounts_in, load_states};
use crate::tables::reset_statements;
use crate::{Projection, ProjectionError};

/// Tuning knobs; the defaults suit a 2-core machine.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Most events folded and committed in one transaction.
    pub batch: usize,
    /// After finding nothing new, the first wait before looking again; it
    /// doubles up to `idle_max` while the log stays quiet.
    pub idle_min: Duration,
    pub idle_max: Duration,
    /// How often a process that does not hold a projection's lock tries to
    /// take it, so a standby takes over when the runner's process dies.
    pub standby_poll: Duration,
    /// How often each process measures every projection's lag.
    pub lag_every: Duration,
    /// After a batch that caught up with the log, how long a runner lets
    /// new events gather before its next commit, unless a read waiting on
    /// it asks sooner. Under load every commit then carries many events:
    /// fewer transactions (on SQLite, fewer turns of the one write lock
    /// that appends also need) and one state row per account per batch
    /// instead of one per handful of events. It is also how stale a read
    /// that asks for no freshness can be, beyond the commit itself.
    pub commit_interval: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            batch: 500,
            idle_min: Duration::from_millis(5),
            idle_max: Duration::from_millis(200),
            standby_poll: Duration::from_secs(2),
            lag_every: Duration::from_secs(1),
            commit_interval: Duration::from_millis(20),
        }
    }
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Freshness {
    /// Whatever the projection holds now: fastest, possibly behind by the
    /// last few milliseconds of writes.
    #[default]
    Any,
    /// At least as fresh as this position (a mutation's consistency token).
    AtLeast(LogPosition),
    /// Everything committed to the log when the read began.
    Full,
}

/// How far behind the log a projection is, as last measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    pub checkpoint: Option<LogPosition>,
    /// Events committed after the checkpoint. Exact on SQLite; on
    /// PostgreSQL an upper bound (positions rolled back leave gaps).
    pub events: u64,
    /// How long ago the oldest event not yet applied was recorded; zero
    /// when caught up.
    pub age: Duration,
    pub measured_at_ms: i64,
}

/// What one step of a runner did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Applied {
        events: usize,
        position: LogPosition,
    },
    /// Nothing new in the log (up to the limit asked).
    Idle,
    /// The checkpoint moved under us (a reset, another runner): read it again.
    Moved,
    /// The rows were written by another version of the code and were
    /// emptied, to be rebuilt.
    Reset,
}

/// Applies the next batch of `log` to `projection` in `target`, stopping at
/// `until` when given. `log` and `target` are the same store except when
/// verifying, which folds the live log into a scratch copy.
pub(crate) async fn step<L: EventStore, P: ProjectionStore>(
    log: &L,
    target: &P,
    projection: Projection,
    batch: usize,
    until: Option<LogPosition>,
    now_ms: i64,
) -> Result<Step, ProjectionError> {
    let checkpoint = target.projection_checkpoint(projection.name()).await?;
    if checkpoint.generation > 0 && checkpoint.schema_version != projection.schema_version() {
        tracing::warn!(
            %projection,
            found = checkpoint.schema_version,
            expected = projection.schema_version(),
            "projection written by another version; rebuilding it from the log"
        );
        return Ok(match reset(target, projection, checkpoint, now_ms).await? {
            true => Step::Reset,
            false => Step::Moved,
        });
    }
    let mut events = log.read_log(checkpoint.position, batch).await?;
    if let Some(until) = until {
        events.retain(|event| event.position <= until);
    }
    let Some(last) = events.last().map(|event| event.position) else {
        return Ok(Step::Idle);
    };
    let states = load_states(target, projection, &accounts_in(&events)).await?;
    let mut fold = Fold::new(projection, states);
    for event in &events {
        fold.event(event)?;
    }
    let outcome = target
        .commit_projection(ProjectionCommit {
            name: projection.name().to_owned(),
            expected_generation: checkpoint.generation,
            position: Some(last),
            schema_version: projection.schema_version(),
            updated_at_ms: now_ms,
            statements: fold.finish()?,
        })
        .await?;
    Ok(match outcome {
        CommitOutcome::Committed { .. } => Step::Applied {
            events: events.len(),
            position: last,
        },
        CommitOutcome::GenerationMoved { .. } => Step::Moved,
    })
}

/// Empties `projection` and moves its checkpoint to the start, if the
/// checkpoint is still at `seen`; returns whether it did.
pub(crate) async fn reset<P: ProjectionStore>(
    target: &P,
    projection: Projection,
    seen: ProjectionCheckpoint,
    now_ms: i64,
) -> Result<bool, ProjectionError> {
    let outcome = target
        .commit_projection(ProjectionCommit {
            name: projection.name().to_owned(),
            expected_generation: seen.generation,
            position: None,
            schema_version: projection.schema_version(),
            updated_at_ms: now_ms,
            statements: reset_statements(projection),
        })
        .await?;
    Ok(matches!(outcome, CommitOutcome::Committed { .. }))
}

/// The projections of one process: their runners, lag and freshness waits.
/// Cheap to clone.
pub struct Projections<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Projections<S> {
    fn clone(&self) -> Self {
        Projections {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<S> {
    store: S,
    clock: Arc<dyn Clock>,
    config: RunnerConfig,
    /// Wakes an idle runner at once, e.g. for a read waiting on it.
    pokes: HashMap<Projection, Notify>,
    /// Signalled after every commit of a runner in this process.
    committed: Notify,
    lag: Mutex<HashMap<Projection, Lag>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<S: EventStore + ProjectionStore + Clone> Projections<S> {
    pub fn new(store: S, clock: Arc<dyn Clock>, config: RunnerConfig) -> Self {
        Projections {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                pokes: Projection::ALL
                    .into_iter()
                    .map(|p| (p, Notify::new()))
                    .collect(),
                committed: Notify::new(),
                lag: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Starts a runner (or standby) for every projection, and the lag
    /// measurement.
    pub fn start(&self) {
        let mut tasks = self.inner.tasks.lock().expect("tasks lock");
        for projection in Projection::ALL {
            tasks.push(tokio::spawn(run(Arc::clone(&self.inner), projection)));
        }
        tasks.push(tokio::spawn(measure_lag(Arc::clone(&self.inner))));
    }

    /// Stops the runners. A batch in flight is abandoned before or after
    /// its commit, never half-way: the commit is one transaction.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = self
            .inner
            .tasks
            .lock()
            .expect("tasks lock")
            .drain(..)
            .collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// Every projection's lag as last measured.
    pub fn lag(&self) -> Vec<(Projection, Lag)> {
        let lag = self.inner.lag.lock().expect("lag lock");
        Projection::ALL
            .into_iter()
            .map(|p| (p, lag.get(&p).copied().unwrap_or_default()))
            .collect()
    }

    /// Returns once `projection` is at least as fresh as asked, or
    /// `NotFresh` at `deadline`.
    pub async fn wait_for(
        &self,
        projection: Projection,
        freshness: Freshness,
        deadline: Instant,
    ) -> Result<(), ProjectionError> {
        let target = match freshness {
            Freshness::Any => return Ok(()),
            Freshness::AtLeast(position) => position,
            Freshness::Full => match self.inner.store.log_head().await? {
                Some(head) => head,
                None => return Ok(()),
            },
        };
        let mut backoff = Duration::from_millis(1);
        loop {
            // Registered before reading, so a commit in between still wakes us.
            let committed = self.inner.committed.notified();
            let checkpoint = self
                .inner
                .store
                .projection_checkpoint(projection.name())
                .await?;
            if checkpoint.position.is_some_and(|p| p >= target) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ProjectionError::NotFresh {
                    projection: projection.name(),
                });
            }
            self.inner.pokes[&projection].notify_one();
            // The runner may be in another process: poll too.
            let _ =
                tokio::time::timeout_at(deadline.min(Instant::now() + backoff), committed).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }
}

async fn run<S: EventStore + ProjectionStore>(inner: Arc<Inner<S>>, projection: Projection) {
    let config = &inner.config;
    loop {
        let lock = match inner.store.try_lock_projection(projection.name()).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tokio::time::sleep(config.standby_poll).await;
                continue;
            }
            Err(err) => {
                tracing::warn!(%projection, error = %err, "cannot take the projection lock");
                tokio::time::sleep(config.standby_poll).await;
                continue;
            }
        };
        tracing::info!(%projection, "running projection");
        let mut idle = config.idle_min;
        while lock.is_held() {
            let now_ms = inner.clock.now().as_millis();
            match step(
                &inner.store,
                &inner.store,
                projection,
                config.batch,
                None,
                now_ms,
            )
            .await
            {
                Ok(Step::Applied { events, position }) => {
                    tracing::debug!(%projection, events, %position, "projection advanced");
                    idle = config.idle_min;
                    inner.committed.notify_waiters();
                    if events < config.batch {
                        let _ = tokio::time::timeout(
                            config.commit_interval,
                            inner.pokes[&projection].notified(),
                        )
                        .await;
                    }
                }
                Ok(Step::Moved | Step::Reset) => inner.committed.notify_waiters(),
                Ok(Step::Idle) => {
                    let _ = tokio::time::timeout(idle, inner.pokes[&projection].notified()).await;
                    idle = (idle * 2).min(config.idle_max);
                }
                Err(err) => {
                    tracing::error!(%projection, error = %err, "projection batch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        tracing::warn!(%projection, "lost the projection lock; standing by");
    }
}

async fn measure_lag<S: EventStore + ProjectionStore>(inner: Arc<Inner<S>>) {
    loop {
        for projection in Projection::ALL {
            match lag_of(&inner.store, projection, inner.clock.now().as_millis()).await {
                Ok(lag) => {
                    inner.lag.lock().expect("lag lock").insert(projection, lag);
                }
                Err(err) => {
                    tracing::warn!(%projection, error = %err, "cannot measure projection lag")
                }
            }
        }
        tokio::time::sleep(inner.config.lag_every).await;
    }
}

/// Measures how far `projection` is behind the log, from the store alone,
/// so every process can tell, runner or standby.
pub async fn lag_of<S: EventStore + ProjectionStore>(
    store: &S,
    projection: Projection,
    now_ms: i64,
) -> Result<Lag, ProjectionError> {
    let checkpoint = store.projection_checkpoint(projection.name()).await?;
    let head = store.log_head().await?;
    let events = match (head, checkpoint.position) {
        (None, _) => 0,
        (Some(head), None) => head.seq,
        (Some(head), Some(at)) if head > at => head.seq.saturating_sub(at.seq).max(1),
        (Some(_), Some(_)) => 0,
    };
    let age = if events == 0 {
        Duration::ZERO
    } else {
        let next = store.read_log(checkpoint.position, 1).await?;
        next.first().map_or(Duration::ZERO, |event| {
            Duration::from_millis(u64::try_from(now_ms - event.recorded_at_ms).unwrap_or(0))
        })
    };
    Ok(Lag {
        checkpoint: checkpoint.position,
        events,
        age,
        measured_at_ms: now_ms,
    })
}
