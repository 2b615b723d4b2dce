//! SPEC §4 invariant 3: the same idempotency key never produces two
//! effects. Random sequences of mutations drawn from a small pool of keys
//! and requests (so retries and key reuse are frequent) run against the
//! engine over each real store, SQLite and PostgreSQL, with restarts in
//! between: graceful ones, and hard ones that kill the process's runtime
//! where it stands (on PostgreSQL also terminating its sessions), some with
//! a request in flight whose fate the caller never learns. After each hard
//! restart the caller retries the request in doubt, then every key that
//! had an effect: each retry answers as the first attempt did and writes
//! nothing, and in the log each key has one effect at most.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tally_core::{
    AccountId, ActionKey, BucketKind, Command, GrantCommand, IdempotencyKey, ManualClock, MemberId,
    Millicredits, Rejection, ReservationId, Timestamp,
};
use tally_engine::{Applied, Engine, EngineConfig, EngineError, Mutation, decode_event};
use tally_store::EventStore;
use tally_store::conformance::Harness;
use tally_store::postgres::{PostgresHarness, PostgresLocation};
use tally_store::sqlite::{SqliteHarness, SqliteLocation};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Request {
    Grant(i64),
    Reserve(i64),
    Commit { reservation: usize, amount: i64 },
    Release { reservation: usize },
    Debit(i64),
}

#[derive(Clone, Debug)]
enum Step {
    Send {
        key: usize,
        request: Request,
    },
    /// Shut down gracefully and start again.
    Restart,
    /// Die where it stands, perhaps with a request in flight (sent, then
    /// `yields` turns of the scheduler before the end), and start again.
    Crash {
        in_flight: Option<(usize, Request)>,
        yields: u8,
    },
}

fn request() -> impl Strategy<Value = Request> {
    let amount = prop_oneof![Just(1_000i64), Just(2_500), Just(6_000)];
    prop_oneof![
        amount.clone().prop_map(Request::Grant),
        amount.clone().prop_map(Request::Reserve),
        (0usize..4, amount.clone()).prop_map(|(reservation, amount)| Request::Commit {
            reservation,
            amount
        }),
        (0usize..4).prop_map(|reservation| Request::Release { reservation }),
        amount.prop_map(Request::Debit),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (0usize..6, request()).prop_map(|(key, request)| Step::Send { key, request }),
        1 => Just(Step::Restart),
        2 => (proptest::option::weighted(0.7, (0usize..6, request())), 0u8..40)
            .prop_map(|(in_flight, yields)| Step::Crash { in_flight, yields }),
    ]
}

/// A store the test can crash: what a dead process leaves behind, cut.
trait Crashable: Harness {
    /// Ends whatever the dead process still has open on the store.
    fn cut(&self, location: &Self::Location) -> impl Future<Output = ()> + Send;
}

impl Crashable for SqliteHarness {
    /// Nothing: the file is all there is, and the runtime that held it
    /// open is gone.
    async fn cut(&self, _location: &SqliteLocation) {}
}

impl Crashable for PostgresHarness {
    /// Terminates the dead process's sessions, as its crash would (any
    /// transaction they had open rolls back), and waits until the server
    /// has let them go.
    async fn cut(&self, location: &PostgresLocation) {
        let (admin, connection) = location.config.connect(NoTls).await.expect("admin");
        tokio::spawn(connection);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: i64 = admin
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name = 'tallyd'",
                    &[],
                )
                .await
                .expect("terminate the store's sessions")
                .get(0);
            if left == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the store's sessions lingered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One life of the process: a runtime of its own, and the engine on it.
struct Life<S: EventStore> {
    runtime: Runtime,
    engine: Engine<S>,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

impl<S: EventStore + Clone> Life<S> {
    fn start(runtime: Runtime, store: S, clock: Arc<ManualClock>) -> Life<S> {
        let engine = {
            let _entered = runtime.enter();
            Engine::new(store, clock, EngineConfig::default())
        };
        Life { runtime, engine }
    }

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    fn version(&self, account: &AccountId) -> u64 {
        self.block_on(self.engine.store().stream_version(account.as_str()))
            .unwrap()
    }

    /// Ends this life: gracefully (the engine answers what it took in,
    /// then stops), or as a crash (every task dropped where it stands;
    /// work already handed to a blocking thread finishes, as a system call
    /// in progress would).
    fn end(self, graceful: bool) {
        let Life { runtime, engine } = self;
        if graceful {
            runtime.block_on(engine.shutdown());
        }
        runtime.block_on(async move { drop(engine) });
        runtime.shutdown_timeout(Duration::from_secs(10));
    }
}

fn command(request: &Request, reservations: &[ReservationId]) -> Command {
    let member = MemberId::parse("m").unwrap();
    let action = ActionKey::parse("agent.step").unwrap();
    let pick = |i: usize| {
        reservations
            .get(i % reservations.len().max(1))
            .cloned()
            .unwrap_or_else(|| ReservationId::parse("rsv_none").unwrap())
    };
    match request {
        Request::Grant(amount) => Command::Grant(GrantCommand {
            grant_id: Engine::<tally_store::sqlite::SqliteStore>::mint_grant_id(),
            pack: None,
            kind: BucketKind::TopUp,
            source: None,
            priority: None,
            amount: Millicredits::new(*amount),
            effective_at: None,
            expires_at: None,
            cost_basis: None,
            reference: String::new(),
        }),
        Request::Reserve(amount) => Command::Reserve {
            dimensions: None,
            reservation_id: Engine::<tally_store::sqlite::SqliteStore>::mint_reservation_id(),
            member,
            action,
            model: None,
            amount: Some(Millicredits::new(*amount)),
            ttl_millis: 60_000,
        },
        Request::Commit {
            reservation,
            amount,
        } => Command::Commit {
            dimensions: None,
            reservation_id: pick(*reservation),
            amount: Some(Millicredits::new(*amount)),
        },
        Request::Release { reservation } => Command::Release {
            reservation_id: pick(*reservation),
        },
        Request::Debit(amount) => Command::Debit {
            occurred_at: None,
            dimensions: None,
            member,
            action,
            model: None,
            amount: Some(Millicredits::new(*amount)),
        },
    }
}

/// What the caller knows: each key's first effect (its request and
/// answer), and the holds those effects opened.
#[derive(Default)]
struct Caller {
    effects: HashMap<usize, (Request, Applied)>,
    reservations: Vec<ReservationId>,
}

impl Caller {
    fn mutation(&self, account: &AccountId, key: usize, request: &Request) -> Mutation {
        Mutation {
            account: account.clone(),
            idempotency_key: IdempotencyKey::parse(format!("key-{key}")).unwrap(),
            // The fingerprint is the request as the caller sent it, never
            // the ids the server minted for it.
            fingerprint: format!("{request:?}").into_bytes(),
            command: command(request, &self.reservations),
        }
    }

    /// Judges the answer to a send of `request` under `key`, given the
    /// stream's version before and after. `in_doubt`: an earlier attempt
    /// of this very send may have taken effect unseen (the process died
    /// with it in flight), so a first answer may be a replay.
    fn judge(
        &mut self,
        key: usize,
        request: Request,
        result: Result<Applied, EngineError>,
        versions: (u64, u64),
        in_doubt: bool,
    ) {
        let (version_before, version_after) = versions;
        match (self.effects.get(&key), result) {
            (Some((first, applied)), Ok(again)) => {
                assert_eq!(
                    first, &request,
                    "a different request under a used key must be refused"
                );
                assert!(again.replayed);
                assert_eq!(again.reply, applied.reply, "a retry gets the first answer");
                assert_eq!(again.position, applied.position);
                assert_eq!(version_after, version_before, "a retry writes nothing");
            }
            (Some((first, _)), Err(EngineError::IdempotencyKeyReused { .. })) => {
                assert_ne!(first, &request);
                assert_eq!(version_after, version_before);
            }
            (None, Ok(applied)) => {
                if applied.replayed {
                    assert!(in_doubt, "a replay of key {key}, which had no effect");
                    assert_eq!(version_after, version_before, "a replay writes nothing");
                } else {
                    assert!(version_after > version_before);
                }
                if let tally_core::Outcome::Reserved { reservation } = &applied.reply.outcome {
                    self.reservations.push(reservation.id.clone());
                }
                self.effects.insert(key, (request, applied));
            }
            (None, Err(EngineError::Rejected(rejection))) => {
                assert!(matches!(
                    rejection,
                    Rejection::InsufficientCredits { .. }
                        | Rejection::ReservationNotFound { .. }
                        | Rejection::AlreadyResolved { .. }
                ));
                assert_eq!(
                    version_after, version_before,
                    "a refusal writes nothing and keeps the key free"
                );
            }
            (known, other) => {
                panic!("unexpected {other:?} for key {key} (first effect: {known:?})")
            }
        }
    }
}

async fn create<H: Harness>(harness: &H) -> (H::Store, H::Location) {
    harness.create().await
}

fn run<H: Crashable>(harness: H, steps: Vec<Step>)
where
    H::Store: Clone,
{
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let first = runtime();
    let (store, location) = first.block_on(create(&harness));
    let mut life = Life::start(first, store, clock.clone());
    let account = AccountId::parse("acct").unwrap();
    life.block_on(life.engine.execute(Mutation {
        account: account.clone(),
        idempotency_key: IdempotencyKey::parse("open").unwrap(),
        fingerprint: b"open".to_vec(),
        command: Command::OpenAccount(Default::default()),
    }))
    .unwrap();

    let reopen = |life: Life<H::Store>, graceful: bool| {
        life.end(graceful);
        let runtime = runtime();
        let store = runtime.block_on(async {
            if !graceful {
                harness.cut(&location).await;
            }
            harness.reopen(&location).await
        });
        Life::start(runtime, store, clock.clone())
    };

    let mut caller = Caller::default();
    for step in steps {
        clock.advance_millis(10);
        match step {
            Step::Send { key, request } => {
                let before = life.version(&account);
                let result = life.block_on(
                    life.engine
                        .execute(caller.mutation(&account, key, &request)),
                );
                let after = life.version(&account);
                caller.judge(key, request, result, (before, after), false);
            }
            Step::Restart => life = reopen(life, true),
            Step::Crash { in_flight, yields } => {
                let sent = in_flight.map(|(key, request)| {
                    let before = life.version(&account);
                    let engine = life.engine.clone();
                    let mutation = caller.mutation(&account, key, &request);
                    let task = life
                        .runtime
                        .spawn(async move { engine.execute(mutation).await });
                    life.block_on(async {
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                    });
                    (key, request, before, task)
                });
                // If the answer came before the end, the caller has it.
                let in_doubt = match sent {
                    Some((key, request, before, task)) if task.is_finished() => {
                        let result = life.block_on(task).unwrap();
                        let after = life.version(&account);
                        caller.judge(key, request, result, (before, after), false);
                        None
                    }
                    Some((key, request, _, _)) => Some((key, request)),
                    None => None,
                };
                life = reopen(life, false);
                // The caller retries what it never heard back about...
                if let Some((key, request)) = in_doubt {
                    let before = life.version(&account);
                    let result = life.block_on(
                        life.engine
                            .execute(caller.mutation(&account, key, &request)),
                    );
                    let after = life.version(&account);
                    caller.judge(key, request, result, (before, after), true);
                }
                // ...and every key that had an effect answers as it did.
                let known: Vec<(usize, Request)> = caller
                    .effects
                    .iter()
                    .map(|(key, (request, _))| (*key, request.clone()))
                    .collect();
                for (key, request) in known {
                    let before = life.version(&account);
                    let result = life.block_on(
                        life.engine
                            .execute(caller.mutation(&account, key, &request)),
                    );
                    let after = life.version(&account);
                    caller.judge(key, request, result, (before, after), false);
                }
            }
        }
    }

    // In the log, each key's events form one contiguous run: one effect.
    let events = life
        .block_on(
            life.engine
                .store()
                .read_stream(account.as_str(), 1, 100_000),
        )
        .unwrap();
    let keys: Vec<Option<String>> = events
        .iter()
        .map(|e| decode_event(e).unwrap().idempotency_key)
        .collect();
    let mut runs: Vec<&Option<String>> = Vec::new();
    for key in &keys {
        if runs.last() != Some(&key) {
            runs.push(key);
        }
    }
    let mut seen = HashSet::new();
    for key in runs.into_iter().flatten() {
        assert!(
            seen.insert(key.clone()),
            "key {key} has two separate effects in the log"
        );
    }
    assert_eq!(
        seen.len(),
        caller.effects.len() + 1,
        "every effect, and only effects, are in the log"
    );
    life.end(true);
    drop(location);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_same_key_never_produces_two_effects_on_sqlite(steps in prop::collection::vec(step(), 1..60)) {
        run(SqliteHarness::new(), steps);
    }
}

proptest! {
    // Each case is a database of its own; a failure shrinks for a bounded
    // while.
    #![proptest_config(ProptestConfig {
        cases: 16,
        max_shrink_iters: 128,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_same_key_never_produces_two_effects_on_postgres(steps in prop::collection::vec(step(), 1..60)) {
        run(PostgresHarness::new(), steps);
    }
}

async fn concurrent_retries_of_one_key_have_one_effect<H: Harness>(harness: H)
where
    H::Store: Clone,
{
    let (store, _location) = harness.create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let engine = Engine::new(store, clock, EngineConfig::default());
    let account = AccountId::parse("acct").unwrap();
    let mutation = |key: &str, command: Command| Mutation {
        account: account.clone(),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: key.as_bytes().to_vec(),
        command,
    };
    engine
        .execute(mutation("open", Command::OpenAccount(Default::default())))
        .await
        .unwrap();
    let version = || engine.store().stream_version(account.as_str());
    let before = version().await.unwrap();

    // 32 copies race; most land in the same group-commit batch.
    let grant = mutation("grant-once", command(&Request::Grant(5_000), &[]));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let engine = engine.clone();
            let grant = grant.clone();
            tokio::spawn(async move { engine.execute(grant).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().expect("every copy succeeds"));
    }
    let fresh = results.iter().filter(|r| !r.replayed).count();
    assert_eq!(fresh, 1, "exactly one copy had an effect");
    assert!(
        results
            .iter()
            .all(|r| r.position == results[0].position && r.reply == results[0].reply)
    );
    assert_eq!(version().await.unwrap(), before + 1, "one grant event");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_key_have_one_effect_on_sqlite() {
    concurrent_retries_of_one_key_have_one_effect(SqliteHarness::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_key_have_one_effect_on_postgres() {
    concurrent_retries_of_one_key_have_one_effect(PostgresHarness::new()).await;
}
