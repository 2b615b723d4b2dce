//! An account's state does not grow with its history, on both stores:
//! holds that ended live in the store and still answer precisely, the
//! snapshot stays the same size however many holds resolve, idle
//! accounts evicted from the bounded cache come back exact, and an idle
//! account left with the projections' fold is held once and comes back
//! exact even from a fold reset behind it.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{debit, events_of, grant};

use tally_core::{
    Account, AccountId, ActionKey, BucketKind, Command, IdempotencyKey, ManualClock, MemberId,
    Millicredits, Outcome, Rejection, ReservationId, Resolution, Timestamp,
};
use tally_engine::{Applied, Engine, EngineConfig, EngineError, FoldedStates, Mutation};
use tally_store::EventStore;
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;

const HOUR: i64 = 60 * 60 * 1000;

struct Bench<S: EventStore> {
    engine: Engine<S>,
    clock: Arc<ManualClock>,
    account: AccountId,
    next_key: usize,
}

impl<S: EventStore + Clone> Bench<S> {
    async fn open(store: S, config: EngineConfig) -> Self {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
        let engine = Engine::new(store, clock.clone(), config);
        let mut bench = Bench {
            engine,
            clock,
            account: AccountId::parse("acme").unwrap(),
            next_key: 0,
        };
        bench.open_account("acme").await;
        bench
    }

    async fn open_account(&mut self, id: &str) {
        let account = AccountId::parse(id).unwrap();
        self.run_on(&account, Command::OpenAccount(Default::default()))
            .await
            .expect("open");
        self.run_on(
            &account,
            Command::Grant(grant(
                Engine::<S>::mint_grant_id(),
                BucketKind::Promotional,
                Millicredits::new(1_000_000_000),
            )),
        )
        .await
        .expect("grant");
    }

    /// A fresh restart: a new engine over the same store, nothing cached.
    fn restart(&mut self, config: EngineConfig) {
        let store = self.engine.store().clone();
        self.engine = Engine::new(store, self.clock.clone(), config);
    }

    async fn run(&mut self, command: Command) -> Result<Applied, EngineError> {
        let account = self.account.clone();
        self.run_on(&account, command).await
    }

    async fn run_on(
        &mut self,
        account: &AccountId,
        command: Command,
    ) -> Result<Applied, EngineError> {
        self.next_key += 1;
        self.engine
            .execute(Mutation {
                account: account.clone(),
                idempotency_key: IdempotencyKey::parse(format!("k{}", self.next_key)).unwrap(),
                fingerprint: format!("{command:?}").into_bytes(),
                command,
            })
            .await
    }

    async fn reserve(&mut self, amount: i64, ttl_millis: i64) -> ReservationId {
        let applied = self
            .run(Command::Reserve {
                reservation_id: Engine::<S>::mint_reservation_id(),
                member: MemberId::parse("m").unwrap(),
                action: ActionKey::parse("agent.step").unwrap(),
                model: None,
                amount: Some(Millicredits::new(amount)),
                dimensions: None,
                ttl_millis,
            })
            .await
            .expect("reserve");
        match applied.reply.outcome {
            Outcome::Reserved { reservation } => reservation.id,
            other => panic!("reserve answered {other:?}"),
        }
    }

    async fn commit(&mut self, id: &ReservationId, amount: i64) -> Result<Applied, EngineError> {
        self.run(Command::Commit {
            reservation_id: id.clone(),
            amount: Some(Millicredits::new(amount)),
            dimensions: None,
        })
        .await
    }

    async fn snapshot_size(&self) -> usize {
        self.engine
            .store()
            .load_snapshot(self.account.as_str())
            .await
            .expect("load snapshot")
            .expect("a snapshot")
            .payload
            .len()
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        snapshot_every: 20,
        ..EngineConfig::default()
    }
}

fn resolved(result: Result<Applied, EngineError>) -> Resolution {
    match result {
        Err(EngineError::Rejected(Rejection::AlreadyResolved { resolution, .. })) => resolution,
        other => panic!("expected AlreadyResolved, got {other:?}"),
    }
}

async fn snapshot_does_not_grow_as_holds_resolve<S: EventStore + Clone>(store: S) {
    let mut bench = Bench::open(store, config()).await;
    let mut sizes = Vec::new();
    for round in 0..3 {
        for _ in 0..50 {
            let id = bench.reserve(1_000, 60_000).await;
            bench.commit(&id, 700).await.expect("commit");
        }
        // 100 events a round: a snapshot was just saved at a multiple of 20.
        sizes.push(bench.snapshot_size().await);
        assert_eq!(round, sizes.len() - 1);
    }
    // Totals gain a digit now and then; 150 resolved holds would add tens
    // of kilobytes.
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() < 64,
        "snapshot sizes grew with history: {sizes:?}"
    );
    let payload = bench
        .engine
        .store()
        .load_snapshot("acme")
        .await
        .unwrap()
        .unwrap()
        .payload;
    // At most the one hold open when it was saved, named twice (its key
    // and its id); never the 150 that resolved.
    let named = String::from_utf8_lossy(&payload).matches("rsv_").count();
    assert!(named <= 2, "the snapshot names {named} reservations");
}

async fn resolved_holds_answer_from_the_store<S: EventStore + Clone>(store: S) {
    let mut bench = Bench::open(store, config()).await;
    let committed = bench.reserve(1_000, 60_000).await;
    bench.commit(&committed, 1_000).await.expect("commit");
    let expiring = bench.reserve(2_000, 1_000).await;
    bench.clock.advance_millis(5_000);
    // The hold expires on the next command.
    bench.reserve(1, 60_000).await;

    // Nothing in memory: every answer below comes from the store.
    bench.restart(config());
    assert_eq!(
        resolved(bench.commit(&committed, 5).await),
        Resolution::Committed
    );
    assert_eq!(
        resolved(
            bench
                .run(Command::Release {
                    reservation_id: committed.clone()
                })
                .await
        ),
        Resolution::Committed
    );
    let late = bench.commit(&expiring, 1_500).await.expect("late commit");
    match &late.reply.outcome {
        Outcome::Charged { debit } => {
            assert!(debit.late, "recorded as late");
            assert_eq!(debit.charged, Millicredits::new(1_500));
        }
        other => panic!("late commit answered {other:?}"),
    }
    bench.restart(config());
    assert_eq!(
        resolved(bench.commit(&expiring, 1_500).await),
        Resolution::Committed,
        "the late commit overwrote the expired record"
    );

    // Retention: an hour for committed holds, as when they lived in memory.
    bench.clock.advance_millis(2 * HOUR);
    assert!(matches!(
        bench.commit(&committed, 5).await,
        Err(EngineError::Rejected(Rejection::ReservationNotFound { .. }))
    ));
}

async fn evicted_accounts_come_back_exact<S: EventStore + Clone>(store: S) {
    let small = EngineConfig {
        max_cached_accounts: 2,
        idle_timeout: Duration::from_millis(20),
        ..config()
    };
    let mut bench = Bench::open(store, small).await;
    let accounts: Vec<AccountId> = (0..6)
        .map(|i| AccountId::parse(format!("acct-{i}")).unwrap())
        .collect();
    for account in &accounts {
        bench.open_account(account.as_str()).await;
    }
    for round in 0..4 {
        for account in &accounts {
            bench
                .run_on(
                    account,
                    Command::Debit {
                        occurred_at: None,
                        member: MemberId::parse("m").unwrap(),
                        action: ActionKey::parse("agent.step").unwrap(),
                        model: None,
                        amount: Some(Millicredits::new(100 + round)),
                        dimensions: None,
                    },
                )
                .await
                .expect("debit");
        }
        // Every actor retires; only two states stay cached.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for account in &accounts {
        let balance = bench.engine.balance(account).await.expect("balance");
        assert_eq!(
            balance.totals.consumed,
            Millicredits::new(100 + 101 + 102 + 103),
            "{account}"
        );
        assert_eq!(balance.available, Millicredits::new(1_000_000_000 - 406));
    }
}

/// The states a fold holds, set by the test: folded from the stream's
/// events, as the projections fold them.
#[derive(Default)]
struct Fold {
    states: Mutex<HashMap<String, Arc<Account>>>,
    /// How often the engine found an account here.
    found: AtomicUsize,
}

impl Fold {
    /// Holds `account` folded from its first `events` events.
    async fn hold<S: EventStore>(&self, store: &S, account: &str, events: usize) {
        let mut state = Account::default();
        for event in &events_of(store, account).await[..events] {
            state.apply(event).expect("the stream folds");
        }
        self.states
            .lock()
            .unwrap()
            .insert(account.to_owned(), Arc::new(state));
    }
}

impl FoldedStates for Fold {
    fn folded(&self, account: &str) -> Option<Arc<Account>> {
        let state = self.states.lock().unwrap().get(account).cloned();
        if state.is_some() {
            self.found.fetch_add(1, Ordering::SeqCst);
        }
        state
    }
}

async fn idle_accounts_held_by_the_fold_are_held_once<S: EventStore + Clone>(store: S) {
    let quick = EngineConfig {
        idle_timeout: Duration::from_millis(20),
        ..config()
    };
    let mut bench = Bench::open(store.clone(), quick).await;
    let fold = Arc::new(Fold::default());
    assert!(bench.engine.share_folded_states(fold.clone()).is_ok());
    bench
        .run(debit(Millicredits::new(100)))
        .await
        .expect("debit");
    let stream = events_of(&store, "acme").await.len();

    // The fold has the account at the version the actor leaves it at: the
    // engine keeps only that version, not a copy of its own.
    fold.hold(&store, "acme", stream).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(bench.engine.cached_states(), 0);

    // The next actor starts from the fold's state, and this time leaves
    // the account a version ahead of the fold (not told of the debit): a
    // fold that lags still holds it, and the next actor reads the rest.
    bench
        .run(debit(Millicredits::new(101)))
        .await
        .expect("debit");
    assert_eq!(
        fold.found.load(Ordering::SeqCst),
        2,
        "retired to, started from"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(bench.engine.cached_states(), 0);

    // Further behind than snapshots are apart (a stalled fold): the engine
    // keeps its own copy.
    for _ in 0..config().snapshot_every {
        bench.run(debit(Millicredits::new(1))).await.expect("debit");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(bench.engine.cached_states(), 1);
    let balance = bench.engine.balance(&bench.account).await.expect("balance");
    assert_eq!(
        balance.totals.consumed,
        Millicredits::new(201 + config().snapshot_every as i64)
    );
}

async fn a_fold_reset_behind_the_account_is_caught_up_before_deciding<S: EventStore + Clone>(
    store: S,
) {
    // An engine that may not lose a version race: had it decided on a
    // state behind the stream, the append would have met the events it
    // had not read, and failed.
    let strict = EngineConfig {
        idle_timeout: Duration::from_millis(20),
        max_attempts: 1,
        ..config()
    };
    let mut bench = Bench::open(store.clone(), strict).await;
    let fold = Arc::new(Fold::default());
    assert!(bench.engine.share_folded_states(fold.clone()).is_ok());
    for amount in [100, 101, 102] {
        bench
            .run(debit(Millicredits::new(amount)))
            .await
            .expect("debit");
    }
    let stream = events_of(&store, "acme").await.len();
    fold.hold(&store, "acme", stream).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(bench.engine.cached_states(), 0, "left with the fold");

    // The fold is reset to be rebuilt and has folded all but the last two
    // events again when the account wakes.
    fold.hold(&store, "acme", stream - 2).await;
    bench
        .run(debit(Millicredits::new(103)))
        .await
        .expect("debit on the caught-up state");
    let balance = bench.engine.balance(&bench.account).await.expect("balance");
    assert_eq!(balance.totals.consumed, Millicredits::new(406));
    assert_eq!(balance.available, Millicredits::new(1_000_000_000 - 406));
}

macro_rules! on_both_stores {
    ($($case:ident),+) => {
        mod sqlite {
            use super::Harness as _;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _location) = super::SqliteHarness::new().create().await;
                    super::$case(store).await;
                }
            )+
        }
        mod postgres {
            use super::Harness as _;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _location) = super::PostgresHarness::new().create().await;
                    super::$case(store).await;
                }
            )+
        }
    };
}

on_both_stores!(
    snapshot_does_not_grow_as_holds_resolve,
    resolved_holds_answer_from_the_store,
    evicted_accounts_come_back_exact,
    idle_accounts_held_by_the_fold_are_held_once,
    a_fold_reset_behind_the_account_is_caught_up_before_deciding
);

/// `verify_snapshots` finds a snapshot forged behind the engine's back
/// (the service's role may write snapshots), and passes honest ones.
async fn forged_snapshots_are_found<S: EventStore + Clone>(store: S) {
    let mut bench = Bench::open(
        store.clone(),
        EngineConfig {
            snapshot_every: 4,
            ..EngineConfig::default()
        },
    )
    .await;
    for _ in 0..10 {
        bench
            .run(Command::Debit {
                member: MemberId::parse("m").unwrap(),
                action: ActionKey::parse("agent.step").unwrap(),
                model: None,
                amount: Some(Millicredits::new(1_000)),
                dimensions: None,
                occurred_at: None,
            })
            .await
            .expect("debit");
    }
    let streams = vec!["acme".to_owned()];
    let honest = tally_engine::verify_snapshots(&store, &streams)
        .await
        .unwrap();
    assert_eq!((honest.checked, honest.differing), (1, 0), "{honest:?}");

    // A richer account, consistent with itself, at the same version.
    let snapshot = store
        .load_snapshot("acme")
        .await
        .unwrap()
        .expect("a snapshot");
    let mut payload: serde_json::Value = serde_json::from_slice(&snapshot.payload).unwrap();
    let account = &mut payload["account"];
    let remaining = account["buckets"][0]["remaining"].as_i64().unwrap();
    account["buckets"][0]["remaining"] = (remaining + 1_000_000).into();
    let granted = account["totals"]["granted"].as_i64().unwrap();
    account["totals"]["granted"] = (granted + 1_000_000).into();
    store
        .save_snapshot(
            "acme",
            tally_store::Snapshot {
                version: snapshot.version,
                payload: serde_json::to_vec(&payload).unwrap(),
            },
        )
        .await
        .unwrap();
    let forged = tally_engine::verify_snapshots(&store, &streams)
        .await
        .unwrap();
    assert_eq!((forged.checked, forged.differing), (1, 1), "{forged:?}");
    assert!(forged.examples[0].contains("acme"));
}

#[tokio::test]
async fn forged_snapshots_are_found_on_sqlite() {
    let (store, _location) = SqliteHarness::new().create().await;
    forged_snapshots_are_found(store).await;
}

#[tokio::test]
async fn forged_snapshots_are_found_on_postgres() {
    let (store, _location) = PostgresHarness::new().create().await;
    forged_snapshots_are_found(store).await;
}
