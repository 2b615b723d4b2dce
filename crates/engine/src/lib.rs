//! Tally's command engine.
//!
//! Every active account has one actor: a task that owns the account's state
//! in memory and takes its commands in arrival order. The actor drains what
//! has queued up, decides each command against the evolving state, and
//! appends all their events in one store transaction (group commit), then
//! answers the callers. Correctness across replicas comes from the store:
//! the append names the version it decided against, and a replica that
//! loses the race reloads the account and decides again.

mod actor;
mod catalog;
mod codec;
mod error;
mod observe;
mod quote;
mod service_streams;
mod snapshots;
mod sweeper;
mod test_clocks;
mod writer;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tally_core::{
    Account, AccountId, BalanceView, Clock, Command, GrantId, IdempotencyKey, OpenAccount,
    ReservationId, Timestamp,
};
use tally_store::{AppendRequest, AppendResult, EventStore, LogPosition, StoreError};
use tally_telemetry::Metrics;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use catalog::{CATALOG_STREAM, Catalog, Published};
pub use codec::{StoredReply, decode_event};
pub use error::EngineError;
pub use quote::{Quote, QuoteItem, QuoteLine};
pub use snapshots::{SnapshotReport, verify_snapshots};
pub use sweeper::SweepReport;
pub use tally_codec::DecodedEvent;
pub use test_clocks::{
    MAX_ACCOUNTS_PER_TEST_CLOCK, TestClock, TestClockAdvanced, test_clock_stream,
};
use tracing::Instrument as _;
pub use writer::AppendGate;

/// Something else in the process that keeps accounts' states as they were
/// folded from the log (in `tallyd`, the projections' fold, on the replica
/// that runs them). A retiring actor whose account is held there leaves
/// it there, and keeps only its version in the engine's cache, so an idle
/// account is held once, not twice. The next actor for it starts from the
/// fold's state as from its own if the fold has reached that version (it
/// nearly always has: it commits every few milliseconds), or else reads
/// the stream after the fold's version first, as after a snapshot.
pub trait FoldedStates: Send + Sync + 'static {
    /// The account as folded up to some version of its stream, if held.
    fn folded(&self, account: &str) -> Option<Arc<Account>>;
}

/// Tuning knobs. The defaults suit a 2-core machine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most commands decided and appended in one transaction.
    pub max_batch: usize,
    /// An actor with nothing to do for this long stops, leaving its
    /// account's state in the cache (see `max_cached_accounts`).
    pub idle_timeout: Duration,
    /// Save a snapshot each time the stream passes a multiple of this.
    pub snapshot_every: u64,
    /// Version races lost in a row before a batch gives up.
    pub max_attempts: u32,
    /// Commands that may queue for one account. Past it a single call is
    /// refused at once (`AccountOverloaded`), and a batch call's next
    /// record waits for room.
    pub mailbox: usize,
    /// How often the background sweep looks for accounts with time-due
    /// work (cycle resets, expiries) and the catalog for new versions.
    pub sweep_every: Duration,
    /// Accounts the sweep wakes per round.
    pub sweep_batch: usize,
    /// Group-commit transactions in flight at once, each carrying the
    /// appends of many accounts. 1 suits a store that serialises writers
    /// (SQLite); a few let PostgreSQL overlap commits.
    pub commit_concurrency: usize,
    /// Most accounts whose appends share one transaction.
    pub commit_max_streams: usize,
    /// Accounts whose state stays in memory while idle, least recently
    /// used evicted first.
    pub max_cached_accounts: usize,
    /// Whether test clocks may be created, advanced and opened accounts
    /// on. A production deployment refuses them (`--test-clocks refuse`);
    /// accounts already on a clock keep working either way.
    pub test_clocks_allowed: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch: 512,
            idle_timeout: Duration::from_secs(5),
            snapshot_every: 1_000,
            max_attempts: 16,
            mailbox: 4_096,
            sweep_every: Duration::from_secs(1),
            sweep_batch: 256,
            commit_concurrency: 4,
            commit_max_streams: 256,
            max_cached_accounts: 100_000,
            test_clocks_allowed: true,
        }
    }
}

/// What sending to a full mailbox does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WhenFull {
    Wait,
    Refuse,
}

/// A mutation as the engine takes it: the command and what makes it safe
/// to retry.
#[derive(Clone, Debug)]
pub struct Mutation {
    pub account: AccountId,
    pub idempotency_key: IdempotencyKey,
    /// A digest of the whole request: the same key with another request is
    /// refused.
    pub fingerprint: Vec<u8>,
    pub command: Command,
}

/// A mutation's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub reply: StoredReply,
    /// Global position of the command's last event: the consistency token.
    pub position: LogPosition,
    /// True when this is a retry answered from the first attempt's record.
    pub replayed: bool,
}

/// The span of one command, at `$level`; it lasts until its answer is taken.
macro_rules! command_span {
    ($level:expr, $mutation:expr) => {
        tracing::span!(
            target: "tally::engine",
            $level,
            "command",
            otel.name = %format_args!("command {}", $mutation.command.name()),
            tally.account_id = %$mutation.account,
            tally.command = $mutation.command.name(),
            tally.action = $mutation.command.action().map(|action| action.as_str()),
            tally.idempotency_key = %$mutation.idempotency_key,
            tally.outcome = tracing::field::Empty,
        )
    };
}

/// A queued mutation: await [`Submitted::answer`] for what became of it.
#[derive(Debug)]
pub struct Submitted {
    answer: oneshot::Receiver<Result<Applied, EngineError>>,
    /// The command's span, where the outcome is recorded.
    span: tracing::Span,
}

impl Submitted {
    pub async fn answer(self) -> Result<Applied, EngineError> {
        let applied = self.answer.await.map_err(|_| EngineError::ShuttingDown)?;
        let outcome = match &applied {
            Ok(applied) if applied.replayed => "replayed",
            Ok(_) => "ok",
            Err(EngineError::Rejected(rejection)) => rejection.reason(),
            Err(_) => "error",
        };
        self.span.record("tally.outcome", outcome);
        applied
    }
}

/// The engine. Cheap to clone; all clones share the actors.
pub struct Engine<S: EventStore> {
    shared: Arc<Shared<S>>,
}

impl<S: EventStore> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            shared: self.shared.clone(),
        }
    }
}

/// An idle account in the engine's cache.
enum Idle {
    /// Its state. Boxed, so that an entry left with the fold is small.
    Own(Box<Account>),
    /// Left with the fold ([`FoldedStates`]) at this version.
    Folded { version: u64 },
}

/// An account's state found in memory when its actor starts.
pub(crate) enum CachedState {
    /// As its last actor left it (or newer, from the fold): current,
    /// unless another replica wrote since, which the append's version
    /// check catches.
    Current(Account),
    /// From a fold behind the version the last actor left (lagging, or
    /// reset to be rebuilt): the stream after it must be read first.
    Behind(Account),
}

pub(crate) struct Shared<S> {
    pub(crate) store: S,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: EngineConfig,
    catalog: RwLock<Arc<Catalog>>,
    background: Mutex<Vec<JoinHandle<()>>>,
    actors: Mutex<HashMap<AccountId, ActorHandle>>,
    next_actor: AtomicU64,
    pub(crate) metrics: Metrics,
    /// Idle accounts' states (or, for those left with the fold, their
    /// version), least recently used evicted first. An actor takes its
    /// account's entry out while it runs and puts it back when it retires;
    /// a miss reloads from the snapshot and the stream.
    cache: Mutex<lru::LruCache<AccountId, Idle>>,
    /// The group-commit writer, started by the first append.
    writer: OnceLock<mpsc::Sender<writer::PendingAppend>>,
    /// What the writer asks before each transaction, once set.
    gate: OnceLock<Arc<dyn AppendGate>>,
    /// Where idle accounts may be held instead of `cache`, once set.
    folded: OnceLock<Arc<dyn FoldedStates>>,
    pub(crate) test_clocks: test_clocks::TestClocks,
}

struct ActorHandle {
    id: u64,
    mailbox: mpsc::Sender<actor::Job>,
    task: JoinHandle<()>,
}

/// A read run inside the account's actor, on the state advanced to now.
pub(crate) type ReadFn = Box<dyn FnOnce(&Account, Timestamp) + Send>;

impl<S: EventStore> Engine<S> {
    /// An engine with an empty catalog: call [`Engine::refresh_catalog`]
    /// to read what the store holds, and [`Engine::start_background`] for
    /// the sweep.
    pub fn new(store: S, clock: Arc<dyn Clock>, config: EngineConfig) -> Self {
        Engine {
            shared: Arc::new(Shared {
                store,
                clock,
                catalog: RwLock::new(Arc::new(Catalog::default())),
                background: Mutex::new(Vec::new()),
                actors: Mutex::new(HashMap::new()),
                next_actor: AtomicU64::new(0),
                metrics: Metrics::global(),
                writer: OnceLock::new(),
                gate: OnceLock::new(),
                folded: OnceLock::new(),
                test_clocks: test_clocks::TestClocks::default(),
                cache: Mutex::new(lru::LruCache::new(
                    NonZeroUsize::new(config.max_cached_accounts).unwrap_or(NonZeroUsize::MIN),
                )),
                config,
            }),
        }
    }

    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// Makes every append transaction from now on wait for `gate` first.
    /// Set once: a second gate is refused (returned).
    pub fn gate_appends(&self, gate: Arc<dyn AppendGate>) -> Result<(), Arc<dyn AppendGate>> {
        self.shared.gate.set(gate)
    }

    /// Idle accounts whose state the engine's own cache holds, not
    /// counting those left with the fold (which the cache names, with
    /// their version). Walks the cache.
    pub fn cached_states(&self) -> usize {
        self.shared
            .cache
            .lock()
            .expect("cache lock")
            .iter()
            .filter(|(_, idle)| matches!(idle, Idle::Own(_)))
            .count()
    }

    /// Lets `folded` hold idle accounts instead of the engine's cache
    /// (see [`FoldedStates`]). Set once: a second is refused (returned).
    pub fn share_folded_states(
        &self,
        folded: Arc<dyn FoldedStates>,
    ) -> Result<(), Arc<dyn FoldedStates>> {
        self.shared.folded.set(folded)
    }

    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    pub fn mint_reservation_id() -> ReservationId {
        ReservationId::parse(format!("rsv_{}", uuid::Uuid::now_v7().simple()))
            .expect("a uuid is a valid id")
    }

    pub fn mint_grant_id() -> GrantId {
        GrantId::parse(format!("grn_{}", uuid::Uuid::now_v7().simple()))
            .expect("a uuid is a valid id")
    }

    /// Runs a mutation: decided in order with the account's other commands,
    /// answered once its events are durably appended. A retry with the same
    /// idempotency key and fingerprint gets the first answer back.
    pub async fn execute(&self, mutation: Mutation) -> Result<Applied, EngineError> {
        self.submit(mutation).await?.answer().await
    }

    /// Queues a mutation behind those already queued for its account and
    /// returns once it is queued; its answer comes from
    /// [`Submitted::answer`]. Mutations of one account submitted one after
    /// another are decided in that order, and queued together they are
    /// decided and committed together.
    pub async fn submit(&self, mutation: Mutation) -> Result<Submitted, EngineError> {
        let span = command_span!(tracing::Level::INFO, mutation);
        self.submit_in(mutation, span, WhenFull::Refuse).await
    }

    /// [`Engine::submit`] for one of many mutations of a batch call: its span
    /// is at debug level, so that a call of a thousand records traces (and
    /// costs) as one call unless debug tracing is on.
    /// Unlike a single call's, a batch record waits for room in a full
    /// mailbox: the batch's caller is then held back (a stream by its flow
    /// control) instead of refused record by record.
    pub async fn submit_batched(&self, mutation: Mutation) -> Result<Submitted, EngineError> {
        let span = command_span!(tracing::Level::DEBUG, mutation);
        self.submit_in(mutation, span, WhenFull::Wait).await
    }

    async fn submit_in(
        &self,
        mutation: Mutation,
        span: tracing::Span,
        when_full: WhenFull,
    ) -> Result<Submitted, EngineError> {
        // An account opening on a test clock is put on the clock's list
        // first, so no account is ever on a clock that would not advance it.
        if let Command::OpenAccount(OpenAccount {
            test_clock: Some(clock),
            ..
        }) = &mutation.command
        {
            self.shared
                .attach_to_test_clock(clock, &mutation.account)
                .instrument(span.clone())
                .await?;
        }
        let (reply, answer) = oneshot::channel();
        let account = mutation.account.clone();
        let job = actor::Job::Mutate(Box::new(actor::MutateJob {
            mutation,
            reply,
            span: span.clone(),
        }));
        self.send(&account, job, when_full)
            .instrument(span.clone())
            .await?;
        Ok(Submitted { answer, span })
    }

    /// The balance now, with holds and buckets expired up to now.
    #[tracing::instrument(target = "tally::engine", skip(self))]
    pub async fn balance(&self, account: &AccountId) -> Result<BalanceView, EngineError> {
        self.read(account, |state, now| state.balance_at(now)).await
    }

    /// Runs `read` on the account's state advanced to now. Refused with
    /// `UnknownAccount` when the account is not open.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        account: &AccountId,
        read: impl FnOnce(&Account, Timestamp) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        let read: ReadFn = Box::new(move |state, now| {
            let result = if state.is_open() {
                Ok(read(state, now))
            } else {
                Err(tally_core::Rejection::UnknownAccount.into())
            };
            let _ = reply.send(result);
        });
        self.send(account, actor::Job::Read(read), WhenFull::Refuse)
            .await?;
        answer.await.map_err(|_| EngineError::ShuttingDown)?
    }

    pub(crate) async fn send(
        &self,
        account: &AccountId,
        mut job: actor::Job,
        when_full: WhenFull,
    ) -> Result<(), EngineError> {
        // An actor may be letting its account go just as we send; its
        // mailbox is then closed and a fresh actor takes over.
        for _ in 0..3 {
            let (id, mailbox) = self.mailbox(account);
            let sent = match when_full {
                WhenFull::Wait => mailbox.send(job).await.map_err(|e| e.0),
                WhenFull::Refuse => match mailbox.try_send(job) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.shared.metrics.shed("ACCOUNT_OVERLOADED");
                        return Err(EngineError::AccountOverloaded {
                            account: account.to_string(),
                            queued: self.shared.config.mailbox,
                        });
                    }
                    Err(mpsc::error::TrySendError::Closed(returned)) => Err(returned),
                },
            };
            match sent {
                Ok(()) => return Ok(()),
                Err(returned) => {
                    job = returned;
                    self.forget_actor(account, id);
                }
            }
        }
        Err(EngineError::ShuttingDown)
    }

    fn mailbox(&self, account: &AccountId) -> (u64, mpsc::Sender<actor::Job>) {
        let mut actors = self.shared.actors.lock().expect("actors lock");
        if let Some(handle) = actors.get(account).filter(|h| !h.mailbox.is_closed()) {
            return (handle.id, handle.mailbox.clone());
        }
        let id = self.shared.next_actor.fetch_add(1, Ordering::Relaxed);
        let (mailbox, inbox) = mpsc::channel(self.shared.config.mailbox);
        let task = tokio::spawn(actor::run(self.shared.clone(), account.clone(), id, inbox));
        actors.insert(
            account.clone(),
            ActorHandle {
                id,
                mailbox: mailbox.clone(),
                task,
            },
        );
        (id, mailbox)
    }

    fn forget_actor(&self, account: &AccountId, id: u64) {
        self.shared.forget_actor(account, id);
    }

    /// Stops every actor after it has answered what it already took in.
    /// New calls made after this start fresh actors.
    pub async fn shutdown(&self) {
        for task in self
            .shared
            .background
            .lock()
            .expect("background lock")
            .drain(..)
        {
            task.abort();
        }
        let handles: Vec<ActorHandle> = {
            let mut actors = self.shared.actors.lock().expect("actors lock");
            actors.drain().map(|(_, handle)| handle).collect()
        };
        for handle in handles {
            drop(handle.mailbox);
            let _ = handle.task.await;
        }
    }
}

impl<S: EventStore> Shared<S> {
    /// Appends through the group-commit writer: in one transaction with
    /// whatever other accounts are appending at the same moment.
    pub(crate) async fn append(
        self: &Arc<Self>,
        request: AppendRequest,
        span: tracing::Span,
    ) -> Result<AppendResult, StoreError> {
        let stopped = || StoreError::Unavailable("the engine's writer has stopped".into());
        let writer = self.writer.get_or_init(|| writer::start(self));
        let (reply, answer) = oneshot::channel();
        writer
            .send(writer::PendingAppend {
                request,
                span,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl<S> Shared<S> {
    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// Removes the actor's entry if it is still the one registered.
    pub(crate) fn forget_actor(&self, account: &AccountId, id: u64) {
        let mut actors = self.actors.lock().expect("actors lock");
        if actors.get(account).is_some_and(|h| h.id == id) {
            actors.remove(account);
        }
    }

    /// Under the registry lock, so no sender can pick up the mailbox while
    /// the actor decides to go: lets the account go if nothing is queued,
    /// and leaves its state in the cache for the next actor.
    ///
    /// A job sent in the instant before the mailbox closed is still in it
    /// afterwards; the state then stays with the retiring actor, which
    /// answers the job, and is not cached (the next actor reloads).
    pub(crate) fn retire_if_idle(
        &self,
        account: &AccountId,
        id: u64,
        inbox: &mut mpsc::Receiver<actor::Job>,
        state: &mut Option<Account>,
    ) -> bool {
        let mut actors = self.actors.lock().expect("actors lock");
        if !inbox.is_empty() {
            return false;
        }
        if actors.get(account).is_some_and(|h| h.id == id) {
            actors.remove(account);
        }
        inbox.close();
        if inbox.is_empty()
            && let Some(mut state) = state.take()
        {
            // Held by the fold: one copy is enough. The fold commits every
            // few milliseconds and an actor retires after seconds, so it
            // is nearly always at this version; if it lags (a burst), the
            // next actor reads what it lacks, as after a snapshot, so no
            // further behind than snapshots are apart. A fold further
            // behind (stalled), or without the account: keep our own.
            let held_folded = self
                .folded
                .get()
                .and_then(|folded| folded.folded(account.as_str()))
                .is_some_and(|folded| {
                    folded.version + self.config.snapshot_every.max(1) >= state.version
                });
            let idle = if held_folded {
                Idle::Folded {
                    version: state.version,
                }
            } else {
                state.shrink_to_fit();
                Idle::Own(Box::new(state))
            };
            self.cache
                .lock()
                .expect("cache lock")
                .put(account.clone(), idle);
        }
        true
    }

    /// The state of an account an actor is starting for, if one is held
    /// in memory: the engine's cached copy, taken out so only that actor
    /// has it, or a copy of the fold's if the account was left there.
    pub(crate) fn cached_state(&self, account: &AccountId) -> Option<CachedState> {
        let left_at = match self.cache.lock().expect("cache lock").pop(account)? {
            Idle::Own(state) => return Some(CachedState::Current(*state)),
            Idle::Folded { version } => version,
        };
        // Gone from the fold (its cap, a lost lock): read from the store.
        let folded = self.folded.get()?.folded(account.as_str())?;
        let mut state = Account::clone(&folded);
        // What a snapshot would hold: ended holds and refunded charges are
        // looked up in the store when a command names them.
        state.resolved.clear();
        state.charges.clear();
        Some(if state.version >= left_at {
            CachedState::Current(state)
        } else {
            CachedState::Behind(state)
        })
    }
}
