//! Running projections: one runner across every process sharing the store
//! (a lock), tailing the global log and feeding every projection.
//!
//! A runner reads a batch of events after the account fold's checkpoint,
//! folds each into its account's state once (states stay cached in memory
//! between batches), and commits every projection's rows, the states the
//! batch changed and every checkpoint in one transaction that also checks
//! none has moved. A crash between batches loses nothing and repeats
//! nothing; a runner that lost its lock unnoticed has its commit refused.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockWriteGuard};
use std::time::Duration;

use tally_core::{Account, Clock};
use tally_store::{
    CheckpointMove, CommitOutcome, EventStore, LogPosition, ProjectionCheckpoint, ProjectionCommit,
    ProjectionStore, RecordedEvent, StoreChange,
};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::apply::{Fold, States, accounts_in, load_states, state_rows};
use crate::pacing::{Backlog, BacklogWatch};
use crate::tables::{reset_fold_statements, table_names};
use crate::{ACCOUNT_FOLD, ACCOUNT_FOLD_SCHEMA_VERSION, Projection, ProjectionError, RUNNER_LOCK};

/// Tuning knobs; the defaults suit a 2-core machine.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Events folded and committed in one transaction while the runner
    /// keeps up with the log.
    pub batch: usize,
    /// The most a batch grows to while the runner is behind: each full
    /// batch doubles the next, up to this, and a batch that catches up
    /// drops back to `batch`. A transaction's fixed costs (its checkpoints,
    /// and a saved state, balance and bucket rows per account however
    /// many of its events the batch holds) are then spread over many more
    /// events, so a runner that falls behind under a burst gains on the
    /// log instead of staying as far behind. Reads that asked for
    /// freshness wait for the longer commit; they were waiting anyway.
    pub max_batch: usize,
    /// Events behind the log past which appends outrun the projections
    /// ([`Projections::outrun`]); 0: never.
    pub max_backlog: u64,
    /// After finding nothing new, the first wait before looking again; it
    /// doubles up to `idle_max` while the log stays quiet.
    pub idle_min: Duration,
    pub idle_max: Duration,
    /// How often a process that does not hold the runner lock tries to
    /// take it, so a standby takes over when the runner's process dies.
    pub standby_poll: Duration,
    /// How often each process measures every projection's lag. Appends
    /// held back for the projections are let go by these measurements, so
    /// it is also how finely writes follow the projections' pace.
    pub lag_every: Duration,
    /// After a batch that caught up with the log, how long a runner lets
    /// new events gather before its next commit, unless a read waiting on
    /// it asks sooner. Under load every commit then carries many events:
    /// fewer transactions (on SQLite, fewer turns of the one write lock
    /// that appends also need) and one balance row per account per batch
    /// instead of one per handful of events. It is also how stale a read
    /// that asks for no freshness can be, beyond the commit itself.
    pub commit_interval: Duration,
    /// Most folded account states kept in memory between batches; past it
    /// the cache is trimmed (every state is saved with each batch, so any
    /// may go). Each costs about as much as a cached account of the engine.
    pub cached_states: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            batch: 500,
            max_batch: 8_000,
            max_backlog: 0,
            idle_min: Duration::from_millis(5),
            idle_max: Duration::from_millis(200),
            standby_poll: Duration::from_secs(2),
            lag_every: Duration::from_millis(250),
            commit_interval: Duration::from_millis(20),
            cached_states: 100_000,
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
    /// The checkpoint's generation as measured: the runner compares it with
    /// the one it committed to notice a reset made by another process.
    pub generation: u64,
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
    /// A checkpoint moved under us (a reset, another runner): read them again.
    Moved,
    /// Rows written by another version of the code were emptied, to be
    /// rebuilt.
    Reset,
}

/// Feeds a set of projections from one fold of the log, and holds the
/// folded account states between batches. Its caller holds the runner lock
/// (or owns the target alone, as verify's scratch copy).
///
/// The projections at or past the account fold's checkpoint are fed by the
/// shared fold (those past an event fold it without writing it). One behind
/// it (just reset to be rebuilt) catches up alone, on a fold of its own
/// saved under its own name, until it reaches the shared fold and joins.
pub(crate) struct Projector {
    projections: Vec<Projection>,
    /// The checkpoints (the projections' and the fold's) as last committed;
    /// read again after anything unexpected.
    checkpoints: Option<HashMap<String, ProjectionCheckpoint>>,
    /// The shared fold's states, as of its checkpoint.
    states: States,
    /// The folds of projections catching up, as of their checkpoints.
    catching_up: HashMap<Projection, States>,
    cached_states: usize,
    /// The accounts folded since the cache last grew past three quarters
    /// of `cached_states` or was last trimmed: a trim keeps them first.
    recently_folded: HashSet<Arc<str>>,
    /// Where the shared fold's states are published for reads, after each
    /// commit; `None` when nobody reads them (verify, rebuild).
    published: Option<Arc<PublishedStates>>,
    /// Whether the shared fold reads and folds its next batch while it
    /// commits a full one.
    reads_ahead: bool,
    ahead: Option<Ahead>,
    /// Projections that began catching up from the start of the log (they
    /// were reset) since the caller last took them.
    refolds_started: Vec<Projection>,
}

/// The shared fold's states as last committed, published by this
/// process's runner so a read can be served from memory instead of the
/// store. Only meaningful while that runner holds the lock (nobody else
/// moves the fold then); emptied whenever the runner forgets its cache.
#[derive(Debug, Default)]
pub(crate) struct PublishedStates(RwLock<HashMap<Arc<str>, Arc<Account>>>);

impl PublishedStates {
    fn get(&self, account: &str) -> Option<Arc<Account>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(account)
            .cloned()
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Account>>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Projector {
    pub(crate) fn new(projections: &[Projection], config: &RunnerConfig) -> Self {
        Projector {
            projections: projections.to_vec(),
            checkpoints: None,
            states: HashMap::new(),
            catching_up: HashMap::new(),
            cached_states: config.cached_states.max(1),
            recently_folded: HashSet::new(),
            published: None,
            reads_ahead: false,
            ahead: None,
            refolds_started: Vec::new(),
        }
    }

    /// The projections that began folding the whole log again since the
    /// last call.
    fn take_refolds_started(&mut self) -> Vec<Projection> {
        std::mem::take(&mut self.refolds_started)
    }

    /// Reads and folds each next batch of the log while the previous one
    /// commits, whenever that one was full (more is waiting): the fold
    /// (this process), the log's reader and the projections' writer (two
    /// connections) then work at once. A batch folded ahead on the
    /// assumption that the one before lands is dropped, with every state,
    /// if it does not (`step` forgets all after anything unexpected); a
    /// checkpoint moved meanwhile (a reset, another runner) fails its
    /// commit on the generation it names.
    pub(crate) fn reading_ahead(mut self) -> Self {
        self.reads_ahead = true;
        self
    }

    /// Publishes the shared fold's states to `published` after each commit.
    pub(crate) fn publishing(mut self, published: Arc<PublishedStates>) -> Self {
        self.published = Some(published);
        self
    }

    /// Where each projection's checkpoint stands as this projector last
    /// committed or read it; `None` after anything unexpected, until the
    /// next step reads them again.
    fn positions(&self) -> Option<HashMap<Projection, Option<LogPosition>>> {
        let checkpoints = self.checkpoints.as_ref()?;
        self.projections
            .iter()
            .map(|p| Some((*p, checkpoints.get(p.name())?.position)))
            .collect()
    }

    /// Whether every projection stands at the shared fold's checkpoint, as
    /// last read or committed: none is catching up on a fold of its own.
    fn all_joined(&self) -> bool {
        let Some(checkpoints) = &self.checkpoints else {
            return false;
        };
        let position = |name: &str| checkpoints.get(name).map(|c| c.position);
        let Some(fold) = position(ACCOUNT_FOLD) else {
            return false;
        };
        self.projections
            .iter()
            .all(|p| position(p.name()) >= Some(fold))
    }

    /// Whether a checkpoint this projector works from has moved past the
    /// generation it last committed or read, by `seen` (the newest
    /// generation signalled or measured for each checkpoint). Only another
    /// process moves them while this one holds the runner lock: a reset
    /// for a rebuild (`tallyd rebuild` beside a running `tallyd`). A busy
    /// runner learns of it from its next commit, which names the old
    /// generation and fails; an idle one commits nothing, so it asks this.
    fn moved_elsewhere(&self, seen: &HashMap<String, u64>) -> bool {
        self.checkpoints.as_ref().is_some_and(|checkpoints| {
            checkpoints.iter().any(|(name, checkpoint)| {
                seen.get(name)
                    .is_some_and(|&generation| generation > checkpoint.generation)
            })
        })
    }

    /// Forgets everything cached: the next step starts again from the store.
    fn forget(&mut self) {
        self.checkpoints = None;
        self.ahead = None;
        self.states.clear();
        self.recently_folded.clear();
        self.catching_up.clear();
        if let Some(published) = &self.published {
            published.write().clear();
        }
    }

    async fn checkpoints<P: ProjectionStore>(
        &mut self,
        target: &P,
    ) -> Result<HashMap<String, ProjectionCheckpoint>, ProjectionError> {
        if let Some(checkpoints) = &self.checkpoints {
            return Ok(checkpoints.clone());
        }
        self.forget();
        let mut checkpoints = HashMap::new();
        for name in self
            .projections
            .iter()
            .map(|p| p.name())
            .chain([ACCOUNT_FOLD])
        {
            checkpoints.insert(name.to_owned(), target.projection_checkpoint(name).await?);
        }
        self.checkpoints = Some(checkpoints.clone());
        Ok(checkpoints)
    }

    /// Applies the next batch of `log` to the projections in `target`,
    /// stopping at `until` when given. `log` and `target` are the same store
    /// except when verifying, which folds the live log into a scratch copy.
    pub(crate) async fn step<L: EventStore, P: ProjectionStore>(
        &mut self,
        log: &L,
        target: &P,
        batch: usize,
        until: Option<LogPosition>,
        now_ms: i64,
    ) -> Result<Step, ProjectionError> {
        let result = self.try_step(log, target, batch, until, now_ms).await;
        if !matches!(result, Ok(Step::Applied { .. } | Step::Idle)) {
            self.forget();
        }
        result
    }

    async fn try_step<L: EventStore, P: ProjectionStore>(
        &mut self,
        log: &L,
        target: &P,
        batch: usize,
        until: Option<LogPosition>,
        now_ms: i64,
    ) -> Result<Step, ProjectionError> {
        let checkpoints = self.checkpoints(target).await?;
        let fold = checkpoints[ACCOUNT_FOLD];
        if fold.generation > 0 && fold.schema_version != ACCOUNT_FOLD_SCHEMA_VERSION {
            tracing::warn!(
                found = fold.schema_version,
                expected = ACCOUNT_FOLD_SCHEMA_VERSION,
                "account states saved by another version; folding the log again"
            );
            return Ok(match reset_fold(target, fold, now_ms).await? {
                true => Step::Reset,
                false => Step::Moved,
            });
        }
        for &projection in &self.projections {
            let checkpoint = checkpoints[projection.name()];
            if checkpoint.generation > 0 && checkpoint.schema_version != projection.schema_version()
            {
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
        }
        let behind = self
            .projections
            .iter()
            .copied()
            .find(|p| checkpoints[p.name()].position < fold.position);
        let caught_up = match behind {
            Some(projection) => {
                if checkpoints[projection.name()].position.is_none() {
                    self.refolds_started.push(projection);
                }
                let until = fold.position.min(until.or(fold.position));
                self.catch_up(log, target, projection, batch, until, now_ms)
                    .await?
            }
            None => Step::Idle,
        };
        if caught_up == Step::Moved {
            return Ok(Step::Moved);
        }
        let shared = self.shared_step(log, target, batch, until, now_ms).await?;
        Ok(match (caught_up, shared) {
            (_, Step::Moved) => Step::Moved,
            (
                Step::Applied { events, .. },
                Step::Applied {
                    events: more,
                    position,
                },
            ) => Step::Applied {
                events: events + more,
                position,
            },
            (applied @ Step::Applied { .. }, _) => applied,
            (_, shared) => shared,
        })
    }

    /// One batch of the shared fold, feeding the projections at or past
    /// its checkpoint. Reading ahead, the next batch is read and folded
    /// while this one commits.
    async fn shared_step<L: EventStore, P: ProjectionStore>(
        &mut self,
        log: &L,
        target: &P,
        batch: usize,
        until: Option<LogPosition>,
        now_ms: i64,
    ) -> Result<Step, ProjectionError> {
        let checkpoints = self.checkpoints(target).await?;
        let fold = checkpoints[ACCOUNT_FOLD];
        let prepared = match self.ahead.take() {
            Some(ahead) if Some(ahead.after) == fold.position => ahead.batch,
            _ => {
                let events = read_until(log, fold.position, batch, until).await?;
                let states = &mut self.states;
                match prepare(target, states, &self.projections, &checkpoints, events).await? {
                    Some(prepared) => prepared,
                    None => return Ok(Step::Idle),
                }
            }
        };
        let last = prepared.last;
        let commit = target.commit_projection(ProjectionCommit {
            checkpoints: prepared.moves.clone(),
            updated_at_ms: now_ms,
            emptied: vec![],
            statements: prepared.statements,
        });
        // A full batch: more is waiting (a rebuild's every batch but the
        // last; a live runner behind the log).
        let more = prepared.events >= batch && until.is_none_or(|until| last < until);
        let outcome = if self.reads_ahead && more {
            // What the checkpoints will be once this batch lands: the next
            // batch is folded on that assumption, and dropped (with every
            // state, by `step`) if it does not land.
            let mut landed = checkpoints.clone();
            moved(&mut landed, &prepared.moves, now_ms);
            let states = &mut self.states;
            let projections = &self.projections;
            let next = async {
                let events = read_until(log, Some(last), batch, until).await?;
                prepare(target, states, projections, &landed, events).await
            };
            let (outcome, next) = tokio::join!(commit, next);
            let outcome = outcome?;
            if let Some(next) = next? {
                self.ahead = Some(Ahead {
                    after: last,
                    batch: next,
                });
            }
            outcome
        } else {
            commit.await?
        };
        if !matches!(outcome, CommitOutcome::Committed { .. }) {
            return Ok(Step::Moved);
        }
        moved(
            self.checkpoints.get_or_insert_with(HashMap::new),
            &prepared.moves,
            now_ms,
        );
        let keep = self.cached_states * 3 / 4;
        if self.states.len() > keep {
            self.recently_folded
                .extend(prepared.folded.iter().map(|(account, _)| account.clone()));
        }
        if let Some(published) = &self.published {
            // As of this batch, not of one folded ahead: a read that waited
            // for this commit sees what it committed.
            published.write().extend(prepared.folded);
        }
        if self.states.len() > self.cached_states {
            // Every state is saved, except those of a batch folded ahead
            // and not committed yet: any other may go. Trim to three
            // quarters so that the next batches do not trim again, those
            // not folded lately first: the engine leaves idle accounts
            // here, and the ones in use are the ones worth keeping.
            let pending = self.ahead.as_ref().map(|ahead| &ahead.batch.changed);
            let recent = std::mem::take(&mut self.recently_folded);
            let (lately, earlier): (Vec<Arc<str>>, Vec<Arc<str>>) = self
                .states
                .keys()
                .filter(|account| !pending.is_some_and(|pending| pending.contains::<str>(account)))
                .cloned()
                .partition(|account| recent.contains(account));
            let excess_count = (lately.len() + earlier.len()).saturating_sub(keep);
            let excess = earlier.into_iter().chain(lately).take(excess_count);
            let mut published = self.published.as_ref().map(|p| p.write());
            for account in excess {
                self.states.remove(&account);
                if let Some(published) = published.as_mut() {
                    published.remove(&account);
                }
            }
        }
        Ok(Step::Applied {
            events: prepared.events,
            position: last,
        })
    }

    /// One batch of `projection` catching up alone, on its own fold, up to
    /// the shared fold's checkpoint `until`; on reaching it, it joins the
    /// shared fold and its own states are dropped.
    async fn catch_up<L: EventStore, P: ProjectionStore>(
        &mut self,
        log: &L,
        target: &P,
        projection: Projection,
        batch: usize,
        until: Option<LogPosition>,
        now_ms: i64,
    ) -> Result<Step, ProjectionError> {
        let checkpoints = self.checkpoints(target).await?;
        let checkpoint = checkpoints[projection.name()];
        let fold = checkpoints[ACCOUNT_FOLD];
        let mut events = log.read_log(checkpoint.position, batch).await?;
        events.retain(|event| Some(event.position) <= until);
        let Some(last) = events.last().map(|event| event.position) else {
            return Ok(Step::Idle);
        };
        let states = self.catching_up.entry(projection).or_default();
        load_missing(target, projection.name(), states, &events).await?;
        let mut batch_fold = Fold::new(states, vec![(projection, checkpoint.position)]);
        for event in &events {
            batch_fold.event(event)?;
        }
        let changed = std::mem::take(&mut batch_fold.changed);
        let mut statements = batch_fold.finish()?;
        let joins = Some(last) == fold.position;
        let mut moves = vec![CheckpointMove {
            name: projection.name().to_owned(),
            expected_generation: checkpoint.generation,
            position: Some(last),
            schema_version: projection.schema_version(),
        }];
        if joins {
            statements.push(own_states_delete(projection));
            // Joins only if the shared fold is still where it was read.
            moves.push(CheckpointMove {
                name: ACCOUNT_FOLD.to_owned(),
                expected_generation: fold.generation,
                position: fold.position,
                schema_version: ACCOUNT_FOLD_SCHEMA_VERSION,
            });
        } else {
            statements.extend(state_rows(states, &changed, projection.name())?);
        }
        if !self.commit(target, moves, statements, now_ms).await? {
            return Ok(Step::Moved);
        }
        if joins {
            self.catching_up.remove(&projection);
            tracing::info!(%projection, position = %last, "projection caught up and joined the shared fold");
        }
        Ok(Step::Applied {
            events: events.len(),
            position: last,
        })
    }

    /// Commits the rows and moves the checkpoints; returns whether it
    /// landed, and keeps the checkpoints it moved.
    async fn commit<P: ProjectionStore>(
        &mut self,
        target: &P,
        moves: Vec<CheckpointMove>,
        statements: Vec<tally_store::SqlStatement>,
        now_ms: i64,
    ) -> Result<bool, ProjectionError> {
        let outcome = target
            .commit_projection(ProjectionCommit {
                checkpoints: moves.clone(),
                updated_at_ms: now_ms,
                emptied: vec![],
                statements,
            })
            .await?;
        if !matches!(outcome, CommitOutcome::Committed { .. }) {
            return Ok(false);
        }
        moved(
            self.checkpoints.get_or_insert_with(HashMap::new),
            &moves,
            now_ms,
        );
        Ok(true)
    }
}

/// Loads the saved states of the accounts in `events` that `states` lacks.
async fn load_missing<P: ProjectionStore>(
    target: &P,
    name: &str,
    states: &mut States,
    events: &[tally_store::RecordedEvent],
) -> Result<(), ProjectionError> {
    let missing: BTreeSet<String> = accounts_in(events)
        .into_iter()
        .filter(|account| !states.contains_key(account.as_str()))
        .collect();
    if !missing.is_empty() {
        states.extend(load_states(target, name, &missing).await?);
    }
    Ok(())
}

/// A batch of the shared fold, folded and ready to commit.
struct Prepared {
    statements: Vec<tally_store::SqlStatement>,
    moves: Vec<CheckpointMove>,
    /// The accounts whose states the batch changed (and saves).
    changed: BTreeSet<String>,
    /// Those states as this batch leaves them, for publishing once it
    /// commits: a batch folded ahead changes `states` before then.
    folded: Vec<(Arc<str>, Arc<Account>)>,
    events: usize,
    last: LogPosition,
}

/// A batch folded while the one before it committed, and where the log
/// stood when it was read.
struct Ahead {
    after: LogPosition,
    batch: Prepared,
}

/// The next batch of the log after `after`, up to `until`.
async fn read_until<L: EventStore>(
    log: &L,
    after: Option<LogPosition>,
    batch: usize,
    until: Option<LogPosition>,
) -> Result<Vec<RecordedEvent>, ProjectionError> {
    let mut events = log.read_log(after, batch).await?;
    if let Some(until) = until {
        events.retain(|event| event.position <= until);
    }
    Ok(events)
}

/// Folds `events` into `states` for the projections at or past the shared
/// fold's checkpoint in `checkpoints`: the rows, the states and the
/// checkpoint moves of one commit. `None` when there are no events.
async fn prepare<P: ProjectionStore>(
    target: &P,
    states: &mut States,
    projections: &[Projection],
    checkpoints: &HashMap<String, ProjectionCheckpoint>,
    events: Vec<RecordedEvent>,
) -> Result<Option<Prepared>, ProjectionError> {
    let Some(last) = events.last().map(|event| event.position) else {
        return Ok(None);
    };
    let checkpoint = |name: &str| checkpoints.get(name).copied().unwrap_or_default();
    let fold = checkpoint(ACCOUNT_FOLD);
    let fed: Vec<(Projection, Option<LogPosition>)> = projections
        .iter()
        .map(|p| (*p, checkpoint(p.name()).position))
        .filter(|(_, position)| *position >= fold.position)
        .collect();
    load_missing(target, ACCOUNT_FOLD, states, &events).await?;
    let mut batch_fold = Fold::new(states, fed.clone());
    for event in &events {
        batch_fold.event(event)?;
    }
    let changed = std::mem::take(&mut batch_fold.changed);
    let mut statements = batch_fold.finish()?;
    statements.extend(state_rows(states, &changed, ACCOUNT_FOLD)?);
    let mut moves: Vec<CheckpointMove> = fed
        .iter()
        .map(|(p, position)| CheckpointMove {
            name: p.name().to_owned(),
            expected_generation: checkpoint(p.name()).generation,
            position: (*position).max(Some(last)),
            schema_version: p.schema_version(),
        })
        .collect();
    moves.push(CheckpointMove {
        name: ACCOUNT_FOLD.to_owned(),
        expected_generation: fold.generation,
        position: Some(last),
        schema_version: ACCOUNT_FOLD_SCHEMA_VERSION,
    });
    for account in &changed {
        // Kept between batches (and published): unique here, as the fold
        // just wrote it.
        if let Some(state) = states.get_mut(account.as_str()).and_then(Arc::get_mut) {
            state.shrink_to_fit();
        }
    }
    let folded = changed
        .iter()
        .filter_map(|account| {
            let (id, state) = states.get_key_value(account.as_str())?;
            Some((Arc::clone(id), Arc::clone(state)))
        })
        .collect();
    Ok(Some(Prepared {
        statements,
        moves,
        changed,
        folded,
        events: events.len(),
        last,
    }))
}

/// `checkpoints` after `moves` landed.
fn moved(
    checkpoints: &mut HashMap<String, ProjectionCheckpoint>,
    moves: &[CheckpointMove],
    now_ms: i64,
) {
    for moved in moves {
        checkpoints.insert(
            moved.name.clone(),
            ProjectionCheckpoint {
                position: moved.position,
                generation: moved.expected_generation + 1,
                schema_version: moved.schema_version,
                updated_at_ms: now_ms,
            },
        );
    }
}

/// Empties `projection` and moves its checkpoint to the start, if it is
/// still at what was `seen`; returns whether it did. It then catches up on
/// its own fold while the others go on.
pub(crate) async fn reset<P: ProjectionStore>(
    target: &P,
    projection: Projection,
    seen: ProjectionCheckpoint,
    now_ms: i64,
) -> Result<bool, ProjectionError> {
    let outcome = target
        .commit_projection(
            ProjectionCommit::single(
                projection.name(),
                seen.generation,
                None,
                projection.schema_version(),
                now_ms,
                vec![own_states_delete(projection)],
            )
            .emptying(table_names(&[projection])),
        )
        .await?;
    Ok(matches!(outcome, CommitOutcome::Committed { .. }))
}

/// Forgets the shared fold's saved states, if it is still at `seen`; it
/// then folds the log again, the projections past each event writing
/// nothing for it.
pub(crate) async fn reset_fold<P: ProjectionStore>(
    target: &P,
    seen: ProjectionCheckpoint,
    now_ms: i64,
) -> Result<bool, ProjectionError> {
    let outcome = target
        .commit_projection(ProjectionCommit::single(
            ACCOUNT_FOLD,
            seen.generation,
            None,
            ACCOUNT_FOLD_SCHEMA_VERSION,
            now_ms,
            reset_fold_statements(),
        ))
        .await?;
    Ok(matches!(outcome, CommitOutcome::Committed { .. }))
}

fn own_states_delete(projection: Projection) -> tally_store::SqlStatement {
    tally_store::SqlStatement::new(
        "DELETE FROM projection_account_states WHERE projection = $1",
        vec![tally_store::SqlValue::text(projection.name())],
    )
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
    poke: Notify,
    /// Signalled after every commit of a runner in this process, and on
    /// the store's signal of one in another process.
    committed: Notify,
    /// The store signalled an append: wakes an idle runner at once.
    appended: Notify,
    /// The newest generation of each checkpoint that the store signalled
    /// (commits of this process and of others) or a lag measurement read:
    /// one past what this process's runner committed means another process
    /// moved it (a reset to rebuild), which an idle runner must notice.
    seen: Mutex<HashMap<String, u64>>,
    /// Signalled whenever `seen` grows: wakes an idle runner to compare.
    seen_moved: Notify,
    /// While this process's runner holds the lock, the checkpoints it
    /// committed: no other runner can move them then, so a read waiting for
    /// freshness needs no round trip to learn it. Empty otherwise, and
    /// emptied when another process resets a projection (a rebuild), until
    /// the runner has read the checkpoints again.
    held: RwLock<HashMap<Projection, Option<LogPosition>>>,
    /// The shared fold's states, published by this process's runner.
    published: Arc<PublishedStates>,
    lag: Mutex<HashMap<Projection, Lag>>,
    /// The lag measurements, as the pacing of appends needs them.
    backlog: Mutex<BacklogWatch>,
    /// Signalled after every lag measurement.
    measured: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<S: EventStore + ProjectionStore + Clone> Projections<S> {
    pub fn new(store: S, clock: Arc<dyn Clock>, config: RunnerConfig) -> Self {
        Projections {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                poke: Notify::new(),
                committed: Notify::new(),
                appended: Notify::new(),
                seen: Mutex::new(HashMap::new()),
                seen_moved: Notify::new(),
                held: RwLock::default(),
                published: Arc::default(),
                lag: Mutex::new(HashMap::new()),
                backlog: Mutex::new(BacklogWatch::default()),
                measured: Notify::new(),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Starts the runner (or a standby), and the lag measurement.
    pub fn start(&self) {
        let mut tasks = self.inner.tasks.lock().expect("tasks lock");
        tasks.push(tokio::spawn(run(Arc::clone(&self.inner))));
        tasks.push(tokio::spawn(measure_lag(Arc::clone(&self.inner))));
        tasks.push(tokio::spawn(hear_changes(Arc::clone(&self.inner))));
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
        // The runner is gone: what it held says nothing any more.
        self.inner.hold(None);
        self.inner.published.write().clear();
    }

    /// The account as the shared fold holds it, from memory, when this
    /// process runs the projections and has it cached; `None` means read
    /// the store. As fresh as the checkpoints [`wait_for`](Self::wait_for)
    /// sees, so a read that waited for freshness may use it.
    pub fn cached_state(&self, account: &str) -> Option<Account> {
        self.folded_state(account).map(|state| (*state).clone())
    }

    /// The account as the shared fold holds it, shared rather than copied,
    /// under the same conditions as [`cached_state`](Self::cached_state):
    /// for the engine, which keeps an idle account here instead of in its
    /// own cache.
    pub fn folded_state(&self, account: &str) -> Option<Arc<Account>> {
        if self
            .inner
            .held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            return None;
        }
        self.inner.published.get(account)
    }

    /// Whether appends outrun the projections: a runner that had caught
    /// up is more than `max_backlog` events behind and still advancing
    /// (see `pacing`). Never while `max_backlog` is 0.
    pub fn outrun(&self) -> bool {
        let max = self.inner.config.max_backlog;
        max > 0
            && self
                .inner
                .backlog
                .lock()
                .expect("backlog lock")
                .outrun(Instant::now(), max)
    }

    /// While appends outrun the projections, waits until they no longer
    /// do, or `patience` has passed whatever they do, so that writes slow
    /// down to the pace the projections keep but never stop. `None` when
    /// nothing was held back, else how long it waited. What an append gate
    /// calls before each transaction.
    ///
    /// Not one projection commit at a time: a held transaction carries
    /// everything queued behind it (up to every caller's whole batch), so
    /// letting one through per commit let the writes run away again.
    pub async fn hold_back_appends(&self, patience: Duration) -> Option<Duration> {
        if !self.outrun() {
            return None;
        }
        let started = Instant::now();
        let deadline = started + patience;
        loop {
            // Registered before looking, so a measurement in between still
            // wakes us.
            let measured = self.inner.measured.notified();
            if !self.outrun() || Instant::now() >= deadline {
                return Some(started.elapsed());
            }
            let _ = tokio::time::timeout_at(deadline, measured).await;
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
            let position = match self.inner.held_position(projection) {
                Some(position) => position,
                None => {
                    self.inner
                        .store
                        .projection_checkpoint(projection.name())
                        .await?
                        .position
                }
            };
            if position.is_some_and(|p| p >= target) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ProjectionError::NotFresh {
                    projection: projection.name(),
                });
            }
            self.inner.poke.notify_one();
            // Commits here and the store's signals of commits elsewhere wake
            // us; the poll is the backstop for a signal lost between
            // processes.
            let _ =
                tokio::time::timeout_at(deadline.min(Instant::now() + backoff), committed).await;
            backoff = (backoff * 2).min(Duration::from_millis(250));
        }
    }
}

async fn run<S: EventStore + ProjectionStore>(inner: Arc<Inner<S>>) {
    let config = &inner.config;
    loop {
        let lock = match inner.store.try_lock_projection(RUNNER_LOCK).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tokio::time::sleep(config.standby_poll).await;
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot take the projection runner's lock");
                tokio::time::sleep(config.standby_poll).await;
                continue;
            }
        };
        tracing::info!("running the projections");
        // Behind the log, the next batch is folded while one commits.
        let mut projector = Projector::new(&Projection::ALL, config)
            .publishing(Arc::clone(&inner.published))
            .reading_ahead();
        let mut idle = config.idle_min;
        let mut batch = config.batch;
        // Whether a projection folding the log again from its start (reset
        // by another version of the code, or by `tallyd rebuild` beside this
        // process) has its read indexes suspended until it catches up. A
        // restart forgets it; opening the store builds them then.
        let mut refolding = false;
        while lock.is_held() {
            let now_ms = inner.clock.now().as_millis();
            let step = projector
                .step(&inner.store, &inner.store, batch, None, now_ms)
                .await;
            // Before waking the waiters, who read it.
            inner.hold(projector.positions().filter(|_| lock.is_held()));
            let refolds = projector.take_refolds_started();
            if !refolds.is_empty() {
                refolding |= suspend_indexes_of(&inner.store, &refolds).await;
            }
            // Caught up: nothing new, or the log ran out before the batch
            // filled; and no projection is still catching up alone.
            let caught_up = match step {
                Ok(Step::Idle) => true,
                Ok(Step::Applied { events, .. }) => events < batch,
                _ => false,
            };
            if refolding && caught_up && projector.all_joined() {
                refolding = !restore_indexes(&inner.store).await;
            }
            match step {
                Ok(Step::Applied { events, position }) => {
                    tracing::debug!(events, %position, "projections advanced");
                    idle = config.idle_min;
                    inner.committed.notify_waiters();
                    if events < batch {
                        batch = config.batch;
                        let _ = tokio::time::timeout(config.commit_interval, inner.poke.notified())
                            .await;
                    } else {
                        batch = batch
                            .saturating_mul(2)
                            .min(config.max_batch.max(config.batch));
                    }
                }
                Ok(Step::Moved | Step::Reset) => inner.committed.notify_waiters(),
                Ok(Step::Idle) => {
                    tokio::select! {
                        _ = inner.poke.notified() => {}
                        _ = inner.appended.notified() => {}
                        _ = inner.seen_moved.notified() => {}
                        _ = tokio::time::sleep(idle) => {}
                    }
                    idle = (idle * 2).min(config.idle_max);
                    if inner.moved_under(&projector) {
                        tracing::info!(
                            "a projection checkpoint was moved by another process \
                             (reset for a rebuild?); reading the checkpoints again"
                        );
                        projector.forget();
                        inner.hold(None);
                        idle = config.idle_min;
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "projection batch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        inner.hold(None);
        tracing::warn!("lost the projection runner's lock; standing by");
    }
}

/// Suspends the read indexes of `projections`, which began folding the
/// whole log again (reset by `tallyd rebuild` beside this process, or by a
/// new version of the code), as `tallyd rebuild` does for its own pass:
/// where the store can (the embedded store), the refold then writes each
/// row into its table and key only. Returns whether any were suspended. A
/// failure only costs speed.
async fn suspend_indexes_of<S: ProjectionStore>(store: &S, projections: &[Projection]) -> bool {
    match store.suspend_indexes(&table_names(projections)).await {
        Ok(suspended) => {
            if suspended {
                tracing::info!(
                    ?projections,
                    "folding the log again: read indexes dropped until caught up"
                );
            }
            suspended
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot suspend indexes for a refold");
            false
        }
    }
}

/// Builds again the indexes a refold suspended, now that it caught up.
/// Returns whether they were built; if not, the next caught-up step tries
/// again.
async fn restore_indexes<S: ProjectionStore>(store: &S) -> bool {
    let started = Instant::now();
    match store.restore_indexes().await {
        Ok(()) => {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "caught up after folding the log again: read indexes built"
            );
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot build the suspended indexes; will retry");
            false
        }
    }
}

impl<S> Inner<S> {
    /// Records what this process's runner holds (`None`: nothing known).
    fn hold(&self, positions: Option<HashMap<Projection, Option<LogPosition>>>) {
        *self.held.write().unwrap_or_else(PoisonError::into_inner) = positions.unwrap_or_default();
    }

    /// Records checkpoint generations the store signalled or a measurement
    /// read, and wakes an idle runner if any is newer than seen before.
    fn saw<'a>(&self, generations: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut newer = false;
        {
            let mut seen = self.seen.lock().expect("seen lock");
            for (name, generation) in generations {
                let known = seen.entry(name.to_owned()).or_insert(0);
                if generation > *known {
                    *known = generation;
                    newer = true;
                }
            }
        }
        if newer {
            self.seen_moved.notify_one();
        }
    }

    /// Whether the store has moved a checkpoint past `projector`'s (see
    /// [`Projector::moved_elsewhere`]); if so, what was seen is dropped: the
    /// checkpoints are read again, and a generation seen before that
    /// (checkpoint rows recreated by hand, say) must not count twice.
    fn moved_under(&self, projector: &Projector) -> bool {
        let mut seen = self.seen.lock().expect("seen lock");
        let moved = projector.moved_elsewhere(&seen);
        if moved {
            seen.clear();
        }
        moved
    }

    /// Where `projection` stands, if this process's runner holds it.
    fn held_position(&self, projection: Projection) -> Option<Option<LogPosition>> {
        self.held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&projection)
            .copied()
    }
}

/// Turns the store's change signals into wake-ups: an append wakes an idle
/// runner, a projection commit (another process's too) wakes the reads
/// waiting to be fresh.
async fn hear_changes<S: EventStore>(inner: Arc<Inner<S>>) {
    let mut changes = inner.store.changes();
    loop {
        match changes.recv().await {
            Ok(StoreChange::Projected(moved)) => {
                inner.saw(moved.iter().map(|to| (to.name.as_str(), to.generation)));
                inner.committed.notify_waiters();
            }
            Ok(_) => inner.appended.notify_one(),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                inner.appended.notify_one();
                inner.committed.notify_waiters();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn measure_lag<S: EventStore + ProjectionStore>(inner: Arc<Inner<S>>) {
    loop {
        for projection in Projection::ALL {
            match lag_of(&inner.store, projection, inner.clock.now().as_millis()).await {
                Ok(lag) => {
                    // The backstop for a lost signal, and for another
                    // process on the embedded store, which signals nothing.
                    inner.saw([(projection.name(), lag.generation)]);
                    inner.lag.lock().expect("lag lock").insert(projection, lag);
                }
                Err(err) => {
                    tracing::warn!(%projection, error = %err, "cannot measure projection lag")
                }
            }
        }
        // The slowest projection's.
        let slowest = inner
            .lag
            .lock()
            .expect("lag lock")
            .values()
            .max_by_key(|lag| lag.events)
            .map(|lag| Backlog {
                events: lag.events,
                checkpoint: lag.checkpoint,
            });
        if let Some(backlog) = slowest {
            tracing::debug!(?backlog, "projection lag measured");
            inner.backlog.lock().expect("backlog lock").observe(
                backlog,
                Instant::now(),
                inner.config.max_backlog,
            );
        }
        inner.measured.notify_waiters();
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
        generation: checkpoint.generation,
        events,
        age,
        measured_at_ms: now_ms,
    })
}
