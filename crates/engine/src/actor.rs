//! One account's actor: decides its commands in order and group-commits
//! their events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tally_core::{
    Account, AccountId, Command, Context, IdempotencyKey, Outcome, TestClockId, Timestamp, advance,
    execute, next_due,
};
use tally_store::{
    AppendRequest, AppendResult, EventStore, IdempotencyRecord, LogPosition, Snapshot, StoreError,
};
use tally_telemetry::AppendOutcome;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, Span, debug, warn};

use crate::codec::{self, StoredReply};
use crate::observe::Observations;
use crate::{Applied, CachedState, EngineError, Mutation, ReadFn, Shared};

pub(crate) enum Job {
    /// Boxed: a mailbox allocates its slots in blocks whatever is queued,
    /// and every active account has one, so a small job keeps an account's
    /// memory small; the allocation per request is cheap beside the rest.
    Mutate(Box<MutateJob>),
    Read(ReadFn),
    /// Write whatever time has made due, for an account nobody is using.
    /// Answers with the number of events written.
    Sweep(oneshot::Sender<Result<usize, EngineError>>),
}

pub(crate) struct MutateJob {
    pub(crate) mutation: Mutation,
    pub(crate) reply: oneshot::Sender<Result<Applied, EngineError>>,
    /// The caller's command span: the batch that decides it is traced
    /// under it.
    pub(crate) span: Span,
}

pub(crate) async fn run<S: EventStore>(
    shared: Arc<Shared<S>>,
    account: AccountId,
    id: u64,
    mut inbox: mpsc::Receiver<Job>,
) {
    let (state, behind) = match shared.cached_state(&account) {
        Some(CachedState::Current(state)) => (Some(state), false),
        Some(CachedState::Behind(state)) => (Some(state), true),
        None => (None, false),
    };
    let mut actor = Actor {
        shared: shared.clone(),
        account,
        state,
        behind,
        snapshot_from: None,
    };
    loop {
        let first = match tokio::time::timeout(shared.config.idle_timeout, inbox.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(_idle) => {
                if shared.retire_if_idle(&actor.account, id, &mut inbox, &mut actor.state) {
                    // Jobs sent in the instant before the mailbox closed are
                    // still answered.
                    let mut late = Vec::new();
                    while let Ok(job) = inbox.try_recv() {
                        late.push(job);
                    }
                    if !late.is_empty() {
                        Box::pin(actor.process(late)).await;
                    }
                    break;
                }
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < shared.config.max_batch {
            match inbox.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Boxed so that an idle actor's task is small: the future of a
        // batch in progress is large and only exists while it runs.
        Box::pin(actor.process(batch)).await;
    }
    debug!(account = %actor.account, "actor stopped");
}

struct Actor<S> {
    shared: Arc<Shared<S>>,
    account: AccountId,
    /// The account as of its last known version; `None` means "reload from
    /// the store", after a lost race or anything uncertain.
    state: Option<Account>,
    /// `state` came from a fold behind what this engine last knew of the
    /// account: read the stream after it before deciding on it.
    behind: bool,
    /// The version before the last batch's append, until the batch's
    /// callers have their answers: a snapshot it made due is saved after
    /// that, not while they wait.
    snapshot_from: Option<u64>,
}

/// What became of one mutation within a batch.
enum Settled {
    /// Decided now; answered once the append commits.
    Fresh {
        reply: StoredReply,
        last_event: usize,
    },
    /// A retry of a key already in the store.
    Replayed(StoredReply),
    /// A retry of a key decided earlier in this very batch.
    SameAs(usize),
    /// The domain said no; answered so unless the key turns out to have
    /// an answer already.
    Refused(EngineError),
    Failed(EngineError),
}

impl<S: EventStore> Actor<S> {
    async fn process(&mut self, jobs: Vec<Job>) {
        let mut reads = Vec::new();
        let mut mutations = Vec::new();
        let mut spans = Vec::new();
        let mut sweeps = Vec::new();
        for job in jobs {
            match job {
                Job::Read(read) => reads.push(read),
                Job::Mutate(job) => {
                    let MutateJob {
                        mutation,
                        reply,
                        span,
                    } = *job;
                    // Its caller is gone (its deadline passed, or it hung
                    // up) before anything was decided: nothing is written,
                    // and a retry with the same key decides it afresh.
                    if reply.is_closed() {
                        debug!(
                            account = %self.account,
                            key = %mutation.idempotency_key,
                            "caller gone before the command was decided; skipped"
                        );
                        continue;
                    }
                    mutations.push((mutation, reply));
                    spans.push(span);
                }
                Job::Sweep(reply) => sweeps.push(reply),
            }
        }
        if !sweeps.is_empty() {
            let swept = self.sweep().await;
            for reply in sweeps {
                let _ = reply.send(match &swept {
                    Ok(n) => Ok(*n),
                    Err(e) => Err(duplicate(e)),
                });
            }
        }
        if !reads.is_empty()
            && let Err(e) = self.answer_reads(reads).await
        {
            warn!(account = %self.account, error = %e, "reads failed");
        }
        if mutations.is_empty() {
            return;
        }
        // One batch, one append: traced under the first command, linked
        // from the others it carries.
        let batch = tracing::info_span!(
            target: "tally::engine",
            parent: &spans[0],
            "batch",
            otel.name = "engine batch",
            tally.account_id = %self.account,
            tally.batch.size = mutations.len(),
        );
        for span in &spans[1..] {
            batch.follows_from(span);
        }
        let max_attempts = self.shared.config.max_attempts;
        for attempt in 1..=max_attempts {
            match self
                // The first attempt trusts the store's unique key to catch
                // a retried key; after a lost race, look them all up first.
                .try_mutations(&mutations, attempt > 1)
                .instrument(batch.clone())
                .await
            {
                Ok(results) => {
                    for ((mutation, reply), result) in mutations.into_iter().zip(results) {
                        if let Err(EngineError::Rejected(rejection)) = &result {
                            self.shared
                                .metrics
                                .refused(rejection.reason(), mutation.command.name());
                        }
                        let _ = reply.send(result);
                    }
                    if let Some(version_before) = self.snapshot_from.take() {
                        self.maybe_snapshot(version_before).await;
                    }
                    return;
                }
                Err(e) if is_race(&e) => {
                    debug!(account = %self.account, attempt, "lost a version race; reloading");
                    self.state = None;
                }
                Err(e) => {
                    self.state = None;
                    warn!(account = %self.account, error = %e, "batch failed");
                    for (_, reply) in mutations {
                        let _ = reply.send(Err(duplicate(&e)));
                    }
                    return;
                }
            }
        }
        for (_, reply) in mutations {
            let _ = reply.send(Err(EngineError::Contention {
                account: self.account.to_string(),
                attempts: max_attempts,
            }));
        }
    }

    async fn sweep(&mut self) -> Result<usize, EngineError> {
        let max_attempts = self.shared.config.max_attempts;
        for attempt in 1..=max_attempts {
            match self.try_sweep().await {
                Ok(written) => return Ok(written),
                Err(e) if is_race(&e) => {
                    debug!(account = %self.account, attempt, "sweep lost a version race; reloading");
                    self.state = None;
                }
                Err(e) => {
                    self.state = None;
                    return Err(e);
                }
            }
        }
        Err(EngineError::Contention {
            account: self.account.to_string(),
            attempts: max_attempts,
        })
    }

    /// Appends what time has made due. Another replica may have written it
    /// already: then the stream has moved, the state catches up first, and
    /// nothing is due any more. Two sweepers racing on the same version
    /// cannot both append, so each boundary is written once.
    async fn try_sweep(&mut self) -> Result<usize, EngineError> {
        let store = &self.shared.store;
        let mut state = match self.state.take() {
            Some(state) => state,
            None => load(store, &self.account).await?,
        };
        catch_up(store, &self.account, &mut state).await?;
        self.behind = false;
        let version_before = state.version;
        let now = self.shared.now_of(&state, None).await?;
        let mut observed = Observations::before(&state, now);
        let due = advance(&mut state, now);
        let wakeup = wakeup_of(&state);
        if due.is_empty() {
            // Only a stale wakeup woke us: record the real one, unless a
            // writer has moved the stream on (its append set it).
            store
                .set_wakeup(self.account.as_str(), version_before, wakeup)
                .await?;
            self.state = Some(state);
            return Ok(0);
        }
        let events = due
            .iter()
            .map(|event| codec::encode_event(event, None))
            .collect::<Result<Vec<_>, _>>()?;
        let holds = state
            .resolved
            .values()
            .map(codec::encode_hold)
            .collect::<Result<Vec<_>, _>>()?;
        self.append(AppendRequest {
            stream_id: self.account.as_str().to_owned(),
            expected_version: version_before,
            events,
            idempotency: Vec::new(),
            holds,
            charges: Vec::new(),
            next_wakeup_ms: wakeup,
        })
        .await?;
        for event in &due {
            observed.note(event, &state);
        }
        // Written: the store answers for them from now on.
        state.resolved.clear();
        observed.record(&self.shared.metrics, state.terms.test_clock.is_some());
        self.state = Some(state);
        self.maybe_snapshot(version_before).await;
        Ok(due.len())
    }

    /// Reads see the account as committed, advanced to now; they are
    /// ordered before the batch's mutations, which have not committed yet.
    async fn answer_reads(&mut self, reads: Vec<ReadFn>) -> Result<(), EngineError> {
        let shared = self.shared.clone();
        // Another replica may have written since we last looked. On
        // failure, dropping the reads closes their channels: callers see
        // the engine's failure rather than a stale answer.
        let state = self.refreshed_state().await?;
        let now = shared.now_of(state, None).await?;
        let mut view = state.clone();
        advance(&mut view, now);
        for read in reads {
            read(&view, now);
        }
        Ok(())
    }

    async fn refreshed_state(&mut self) -> Result<&Account, EngineError> {
        let mut state = match self.state.take() {
            Some(state) => state,
            None => load(&self.shared.store, &self.account).await?,
        };
        catch_up(&self.shared.store, &self.account, &mut state).await?;
        self.behind = false;
        Ok(self.state.insert(state))
    }

    async fn loaded_state(&mut self) -> Result<&mut Account, EngineError> {
        if std::mem::take(&mut self.behind)
            && let Some(mut state) = self.state.take()
        {
            catch_up(&self.shared.store, &self.account, &mut state).await?;
            self.state = Some(state);
        }
        if self.state.is_none() {
            self.state = Some(load(&self.shared.store, &self.account).await?);
        }
        Ok(self.state.as_mut().expect("just loaded"))
    }

    /// Decides every mutation in order and appends all their events in one
    /// transaction. An `Err` means nothing was written and the state must
    /// be reloaded; per-mutation refusals are in the `Ok` results.
    ///
    /// Idempotency keys are not looked up first unless `look_up_keys`: a
    /// fresh key (nearly every request) costs no read, and a retried one
    /// makes the append fail on the store's unique key, which sends the
    /// batch round again with the lookup. A refusal is the exception: it
    /// writes nothing, so before answering one the actor checks whether the
    /// key already has an answer to replay, and, when the batch appends
    /// nothing, whether another replica has moved the stream since the
    /// state was read (then the batch is decided again on the store's).
    async fn try_mutations(
        &mut self,
        mutations: &[(Mutation, oneshot::Sender<Result<Applied, EngineError>>)],
        look_up_keys: bool,
    ) -> Result<Vec<Result<Applied, EngineError>>, EngineError> {
        let mut known: HashMap<String, IdempotencyRecord> = if look_up_keys {
            let keys: Vec<String> = mutations
                .iter()
                .map(|(m, _)| m.idempotency_key.as_str().to_owned())
                .collect();
            self.find_records(&keys).await?
        } else {
            HashMap::new()
        };
        self.load_named_holds(mutations).await?;
        self.load_named_charges(mutations).await?;
        let refunds_named: HashSet<&str> = mutations
            .iter()
            .filter_map(|(m, _)| m.command.charge_key())
            .map(|key| key.as_str())
            .collect();

        let catalog = self.shared.catalog();
        let shared = self.shared.clone();
        let state = self.loaded_state().await?;
        let version_before = state.version;
        let opening_on = mutations.iter().find_map(|(m, _)| match &m.command {
            Command::OpenAccount(open) => open.test_clock.as_ref(),
            _ => None,
        });
        let now = shared.now_of(state, opening_on).await?;
        let ctx = Context {
            now,
            rate_cards: &catalog.rate_cards,
            plans: catalog.plans(),
        };

        let mut observed = Observations::before(state, now);
        let mut events = Vec::new();
        for event in advance(state, now) {
            events.push(codec::encode_event(&event, None)?);
            observed.note(&event, state);
        }
        let ticked = !events.is_empty();

        let mut records = Vec::new();
        let mut decided_here: HashMap<&str, (&[u8], usize)> = HashMap::new();
        // Charges whose refunded total this batch moves: written with it.
        let mut refunded_here: HashSet<&str> = HashSet::new();
        let mut settled = Vec::with_capacity(mutations.len());
        for (index, (mutation, _)) in mutations.iter().enumerate() {
            let key = mutation.idempotency_key.as_str();
            let outcome = if let Some(record) = known.get(key) {
                replay(record, mutation)?
            } else if let Some((fingerprint, first)) = decided_here.get(key) {
                if *fingerprint == mutation.fingerprint.as_slice() {
                    Settled::SameAs(*first)
                } else {
                    Settled::Failed(key_reused(key))
                }
            } else {
                match execute(state, &mutation.command, &ctx) {
                    Ok(decision) => {
                        if let Some(charge_key) = mutation.command.charge_key() {
                            refunded_here.insert(charge_key.as_str());
                        }
                        for event in &decision.events {
                            events.push(codec::encode_event(event, Some(key))?);
                            observed.note(event, state);
                        }
                        let balance = decision
                            .outcome
                            .shows_balance()
                            .then(|| state.balance_at(now));
                        let charged_at =
                            matches!(decision.outcome, Outcome::Charged { .. }).then_some(now);
                        let reply = StoredReply {
                            available: state.available_at(now),
                            outcome: decision.outcome,
                            balance,
                            last_version: state.version,
                            charged_at,
                        };
                        // A refund later in this batch may name this charge:
                        // it is not in the store yet.
                        if refunds_named.contains(key)
                            && let Some(charge) = reply.charge(&mutation.idempotency_key)
                        {
                            state.charges.insert(charge.key.clone(), charge);
                        }
                        records.push(IdempotencyRecord {
                            key: key.to_owned(),
                            fingerprint: mutation.fingerprint.clone(),
                            response: codec::encode_reply(&reply)?,
                        });
                        decided_here.insert(key, (&mutation.fingerprint, index));
                        Settled::Fresh {
                            reply,
                            last_event: events.len() - 1,
                        }
                    }
                    Err(rejection) => Settled::Refused(rejection.into()),
                }
            };
            settled.push(outcome);
        }
        let holds = state
            .resolved
            .values()
            .map(codec::encode_hold)
            .collect::<Result<Vec<_>, _>>()?;
        let charges = state
            .charges
            .values()
            .filter(|charge| refunded_here.contains(charge.key.as_str()))
            .map(codec::encode_charge)
            .collect::<Result<Vec<_>, _>>()?;
        let next_wakeup_ms = wakeup_of(state);
        let on_test_clock = state.terms.test_clock.is_some();

        // A refusal may be the retry of a request that succeeded before:
        // then its first answer stands. Refusals leave the state as it was,
        // so finding one changes nothing else in the batch.
        if !look_up_keys {
            let refused: Vec<String> = mutations
                .iter()
                .zip(&settled)
                .filter(|(_, outcome)| matches!(outcome, Settled::Refused(_)))
                .map(|((m, _), _)| m.idempotency_key.as_str().to_owned())
                .collect();
            if !refused.is_empty() && records.is_empty() {
                // Nothing to append, so no version check would notice that
                // another replica wrote to the account since this state was
                // read (a grant that turns this refusal into a charge): ask
                // the store, and decide again on its state if it moved.
                let stored = self
                    .shared
                    .store
                    .stream_version(self.account.as_str())
                    .await?;
                if stored != version_before {
                    return Err(StoreError::VersionConflict {
                        stream_id: self.account.to_string(),
                        expected: version_before,
                        actual: stored,
                    }
                    .into());
                }
            }
            if !refused.is_empty() {
                known = self.find_records(&refused).await?;
                for ((mutation, _), outcome) in mutations.iter().zip(settled.iter_mut()) {
                    if matches!(outcome, Settled::Refused(_))
                        && let Some(record) = known.get(mutation.idempotency_key.as_str())
                    {
                        *outcome = replay(record, mutation)?;
                    }
                }
            }
        }

        let positions = if records.is_empty() {
            if ticked {
                // Only time moved: leave writing that to a command or the
                // sweeper rather than have a refusal or a retry write.
                self.state = None;
            }
            Vec::new()
        } else {
            let stream_events = events.len() as u64;
            let appended = self
                .append(AppendRequest {
                    stream_id: self.account.as_str().to_owned(),
                    expected_version: version_before,
                    events,
                    idempotency: records,
                    holds,
                    charges,
                    next_wakeup_ms,
                })
                .await?;
            debug_assert_eq!(appended.last_version, version_before + stream_events);
            if let Some(state) = self.state.as_mut() {
                // Written: the store answers for them from now on.
                state.resolved.clear();
            }
            observed.record(&self.shared.metrics, on_test_clock);
            self.snapshot_from = Some(version_before);
            appended.positions
        };

        if let Some(state) = self.state.as_mut() {
            // Written, or refused: either way the store has the charges'
            // truth, and a copy kept here could be overtaken by another
            // replica's refund before the next batch looks.
            state.charges.clear();
        }

        let mut results: Vec<Result<Applied, EngineError>> = Vec::with_capacity(settled.len());
        for outcome in settled {
            let result = match outcome {
                Settled::Fresh { reply, last_event } => Ok(Applied {
                    reply,
                    position: positions[last_event],
                    replayed: false,
                }),
                Settled::Replayed(reply) => {
                    self.position_of(reply.last_version)
                        .await
                        .map(|position| Applied {
                            reply,
                            position,
                            replayed: true,
                        })
                }
                Settled::SameAs(first) => match &results[first] {
                    Ok(applied) => Ok(Applied {
                        replayed: true,
                        ..applied.clone()
                    }),
                    Err(e) => Err(duplicate(e)),
                },
                Settled::Failed(e) | Settled::Refused(e) => Err(e),
            };
            results.push(result);
        }
        Ok(results)
    }

    /// The stored idempotency records among `keys`, by key.
    async fn find_records(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, IdempotencyRecord>, EngineError> {
        Ok(self
            .shared
            .store
            .find_idempotency(self.account.as_str(), keys)
            .await?
            .into_iter()
            .map(|record| (record.key.clone(), record))
            .collect())
    }

    /// Brings into the state the resolved holds that the batch's commands
    /// name and the state does not hold open: a second commit, a late
    /// commit of an expired hold, a release of a committed one. They live
    /// in the store, so a lookup happens only for such commands.
    async fn load_named_holds(
        &mut self,
        mutations: &[(Mutation, oneshot::Sender<Result<Applied, EngineError>>)],
    ) -> Result<(), EngineError> {
        let state = self.loaded_state().await?;
        let mut missing: Vec<String> = mutations
            .iter()
            .filter_map(|(m, _)| m.command.reservation_id())
            .filter(|id| !state.reservations.contains_key(*id) && !state.resolved.contains_key(*id))
            .map(ToString::to_string)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort();
        missing.dedup();
        let found = self
            .shared
            .store
            .find_holds(self.account.as_str(), &missing)
            .await?;
        let state = self.loaded_state().await?;
        for record in &found {
            let hold = codec::decode_hold(record)?;
            state.resolved.insert(hold.reservation.id.clone(), hold);
        }
        Ok(())
    }

    /// Brings into the state the charges that the batch's refunds name and
    /// the state does not have: the record of earlier refunds of the charge
    /// if there is one, else the charge's own stored answer (its receipt).
    /// A charge made earlier in the same batch is added as it is decided.
    async fn load_named_charges(
        &mut self,
        mutations: &[(Mutation, oneshot::Sender<Result<Applied, EngineError>>)],
    ) -> Result<(), EngineError> {
        let state = self.loaded_state().await?;
        let mut missing: Vec<String> = mutations
            .iter()
            .filter_map(|(m, _)| m.command.charge_key())
            .filter(|key| !state.charges.contains_key(*key))
            .map(ToString::to_string)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort();
        missing.dedup();
        let store = &self.shared.store;
        let account = self.account.as_str();
        let mut charges = Vec::new();
        for record in store.find_charges(account, &missing).await? {
            charges.push(codec::decode_charge(&record)?);
        }
        missing.retain(|key| !charges.iter().any(|c| c.key.as_str() == key));
        for record in store.find_idempotency(account, &missing).await? {
            let key = IdempotencyKey::parse(record.key.clone()).map_err(|e| {
                EngineError::Corrupt(format!("stored idempotency key {:?}: {e}", record.key))
            })?;
            charges.extend(codec::decode_reply(&record.response)?.charge(&key));
        }
        let state = self.loaded_state().await?;
        for charge in charges {
            state.charges.insert(charge.key.clone(), charge);
        }
        Ok(())
    }

    /// Appends, timing the append and counting what group commit batched.
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        let events = request.events.len();
        let started = Instant::now();
        let appended = self.shared.append(request, Span::current()).await;
        let outcome = match &appended {
            Ok(_) => AppendOutcome::Ok,
            Err(StoreError::VersionConflict { .. }) => AppendOutcome::Conflict,
            Err(_) => AppendOutcome::Error,
        };
        self.shared.metrics.appended(
            self.shared.store.system_name(),
            outcome,
            started.elapsed(),
            events,
        );
        appended
    }

    async fn position_of(&self, version: u64) -> Result<LogPosition, EngineError> {
        let events = self
            .shared
            .store
            .read_stream(self.account.as_str(), version, 1)
            .await?;
        events
            .first()
            .filter(|e| e.version == version)
            .map(|e| e.position)
            .ok_or_else(|| {
                EngineError::Corrupt(format!("event {version} of {} is missing", self.account))
            })
    }

    /// Snapshots bound how much of the stream a reload replays. Failing to
    /// save one costs only time, so it is logged, not returned.
    async fn maybe_snapshot(&self, version_before: u64) {
        let Some(state) = &self.state else { return };
        let every = self.shared.config.snapshot_every.max(1);
        if state.version / every == version_before / every {
            return;
        }
        let saved = match codec::encode_snapshot(state) {
            Ok(payload) => self
                .shared
                .store
                .save_snapshot(
                    self.account.as_str(),
                    Snapshot {
                        version: state.version,
                        payload,
                    },
                )
                .await
                .map_err(EngineError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            warn!(account = %self.account, error = %e, "snapshot not saved");
        }
    }
}

/// A key already in the store: its first answer, or a refusal if the
/// request is not the one that used it.
fn replay(record: &IdempotencyRecord, mutation: &Mutation) -> Result<Settled, EngineError> {
    Ok(if record.fingerprint == mutation.fingerprint {
        Settled::Replayed(codec::decode_reply(&record.response)?)
    } else {
        Settled::Failed(key_reused(mutation.idempotency_key.as_str()))
    })
}

fn key_reused(key: &str) -> EngineError {
    EngineError::IdempotencyKeyReused {
        key: key.to_owned(),
    }
}

/// A lost race with another writer of the same account: reload and decide
/// again.
fn is_race(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Store(StoreError::VersionConflict { .. })
            | EngineError::Store(StoreError::DuplicateIdempotencyKey { .. })
    )
}

/// The same failure, for each caller of a failed batch.
fn duplicate(e: &EngineError) -> EngineError {
    match e {
        EngineError::Rejected(r) => EngineError::Rejected(r.clone()),
        EngineError::IdempotencyKeyReused { key } => {
            EngineError::IdempotencyKeyReused { key: key.clone() }
        }
        EngineError::Store(s) => EngineError::Store(match s {
            StoreError::VersionConflict {
                stream_id,
                expected,
                actual,
            } => StoreError::VersionConflict {
                stream_id: stream_id.clone(),
                expected: *expected,
                actual: *actual,
            },
            StoreError::DuplicateIdempotencyKey { stream_id, key } => {
                StoreError::DuplicateIdempotencyKey {
                    stream_id: stream_id.clone(),
                    key: key.clone(),
                }
            }
            StoreError::InvalidAppend(m) => StoreError::InvalidAppend(m.clone()),
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            StoreError::Internal(m) => StoreError::Internal(m.clone()),
        }),
        EngineError::Corrupt(m) => EngineError::Corrupt(m.clone()),
        EngineError::Contention { account, attempts } => EngineError::Contention {
            account: account.clone(),
            attempts: *attempts,
        },
        EngineError::ShuttingDown => EngineError::ShuttingDown,
        EngineError::AccountOverloaded { account, queued } => EngineError::AccountOverloaded {
            account: account.clone(),
            queued: *queued,
        },
    }
}

/// Rebuilds an account from its latest snapshot and the stream after it.
pub(crate) async fn load<S: EventStore>(
    store: &S,
    account: &AccountId,
) -> Result<Account, EngineError> {
    let mut state = match store.load_snapshot(account.as_str()).await? {
        Some(snapshot) => codec::decode_snapshot(&snapshot.payload)
            .filter(|state| state.version == snapshot.version)
            .unwrap_or_default(),
        None => Account::default(),
    };
    catch_up(store, account, &mut state).await?;
    Ok(state)
}

const READ_PAGE: usize = 1_000;

/// Applies whatever the stream holds beyond the state's version.
async fn catch_up<S: EventStore>(
    store: &S,
    account: &AccountId,
    state: &mut Account,
) -> Result<(), EngineError> {
    loop {
        let page = store
            .read_stream(account.as_str(), state.version + 1, READ_PAGE)
            .await?;
        for recorded in &page {
            state.apply(&codec::decode_event(recorded)?.event)?;
        }
        if page.len() < READ_PAGE {
            return Ok(());
        }
    }
}

/// When the store should wake the account: at its next boundary, or never
/// for an account on a test clock, which moves only when its clock does
/// (the sweep runs on the wall clock).
fn wakeup_of(state: &Account) -> Option<i64> {
    if state.terms.test_clock.is_some() {
        return None;
    }
    next_due(state).map(|at| at.as_millis())
}

impl<S: EventStore> Shared<S> {
    /// "Now" for the account: its test clock's time, or the wall clock's;
    /// `opening_on` is the clock of an opening decided in this batch. Never
    /// before the account's last event: time does not run backwards within
    /// an account.
    async fn now_of(
        &self,
        state: &Account,
        opening_on: Option<&TestClockId>,
    ) -> Result<Timestamp, EngineError> {
        let clock = match &state.terms.test_clock {
            Some(clock) => Some(&**clock),
            None if !state.is_open() => opening_on,
            None => None,
        };
        let now = self.now_on(clock).await?;
        Ok(now.max(state.last_event_at.unwrap_or_default()))
    }
}
