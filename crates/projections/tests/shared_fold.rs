//! The engine leaves idle accounts with the projections' fold, on both
//! stores: once the fold has caught up, an account whose actor retired is
//! held there alone (the engine's cache keeps no second copy), and the
//! account's next commands start from the fold's state and stay exact;
//! and a fold at its cap keeps the accounts in use, dropping those not
//! folded lately.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{caught_up, debit, grant, on_two_workers};
use tally_core::{
    Account, AccountId, Command, IdempotencyKey, ManualClock, Millicredits, OpenAccount, Timestamp,
};
use tally_engine::{Engine, EngineConfig, FoldedStates, Mutation};
use tally_projections::{Projections, RunnerConfig};
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;
use tally_store::{EventStore, ProjectionStore};

const START: i64 = 1_774_612_800_000;
const ACCOUNTS: usize = 8;
const ROUNDS: i64 = 3;
const GRANT: i64 = 1_000_000;

/// What `tallyd` shares with the engine, counting what the engine found.
struct SharedFold<S> {
    projections: Projections<S>,
    found: AtomicUsize,
}

impl<S: EventStore + ProjectionStore + Clone> FoldedStates for SharedFold<S> {
    fn folded(&self, account: &str) -> Option<Arc<Account>> {
        let state = self.projections.folded_state(account);
        if state.is_some() {
            self.found.fetch_add(1, Ordering::SeqCst);
        }
        state
    }
}

async fn run<S: EventStore>(engine: &Engine<S>, account: usize, key: String, command: Command) {
    engine
        .execute(Mutation {
            account: AccountId::parse(format!("acct-{account}")).unwrap(),
            idempotency_key: IdempotencyKey::parse(key.clone()).unwrap(),
            fingerprint: key.into_bytes(),
            command,
        })
        .await
        .unwrap_or_else(|e| panic!("acct-{account}: {e}"));
}

async fn shared<H: Harness>(harness: H)
where
    H::Store: Clone,
{
    let (store, _location) = harness.create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let engine = Engine::new(
        store.clone(),
        clock.clone(),
        EngineConfig {
            // Well past the fold's commit interval (20 ms), as in `tallyd`
            // (5 s): an actor retires after the fold has caught up with it.
            idle_timeout: Duration::from_secs(1),
            ..EngineConfig::default()
        },
    );
    let projections = Projections::new(store.clone(), clock.clone(), RunnerConfig::default());
    projections.start();
    let fold = Arc::new(SharedFold {
        projections: projections.clone(),
        found: AtomicUsize::new(0),
    });
    assert!(engine.share_folded_states(fold.clone()).is_ok());

    for account in 0..ACCOUNTS {
        open_funded(&engine, account).await;
    }
    for round in 0..ROUNDS {
        let mut debits = Vec::new();
        for account in 0..ACCOUNTS {
            let engine = engine.clone();
            debits.push(tokio::spawn(async move {
                let key = format!("debit-{round}");
                run(&engine, account, key, debit(100 + round)).await;
            }));
        }
        for debit in debits {
            debit.await.unwrap();
        }
        // The fold catches up, then every actor idles out and retires.
        caught_up(&projections).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            engine.cached_states(),
            0,
            "round {round}: every idle account is held by the fold alone"
        );
    }
    assert!(
        fold.found.load(Ordering::SeqCst) >= ACCOUNTS * (ROUNDS as usize - 1),
        "the accounts' later actors started from the fold"
    );
    let consumed: i64 = (0..ROUNDS).map(|round| 100 + round).sum();
    for account in 0..ACCOUNTS {
        let id = AccountId::parse(format!("acct-{account}")).unwrap();
        let balance = engine.balance(&id).await.expect("balance");
        assert_eq!(balance.totals.consumed, Millicredits::new(consumed), "{id}");
        assert_eq!(
            balance.available,
            Millicredits::new(GRANT - consumed),
            "{id}"
        );
        let folded = projections
            .folded_state(id.as_str())
            .expect("held by the fold");
        assert_eq!(folded.totals.consumed, Millicredits::new(consumed), "{id}");
    }
    projections.shutdown().await;
}

async fn open_funded<S: EventStore>(engine: &Engine<S>, account: usize) {
    let open = Command::OpenAccount(OpenAccount::default());
    run(engine, account, "open".into(), open).await;
    run(engine, account, "grant".into(), grant(GRANT)).await;
}

async fn full_fold<H: Harness>(harness: H)
where
    H::Store: Clone,
{
    const CAP: usize = 8;
    const IDLE: usize = 12;
    const IN_USE: usize = 4;
    let (store, _location) = harness.create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let engine = Engine::new(store.clone(), clock.clone(), EngineConfig::default());
    let projections = Projections::new(
        store.clone(),
        clock.clone(),
        RunnerConfig {
            cached_states: CAP,
            ..RunnerConfig::default()
        },
    );
    projections.start();
    // Accounts 0..IDLE are opened and funded, then left alone.
    for account in 0..IDLE {
        open_funded(&engine, account).await;
        caught_up(&projections).await;
    }
    // The rest are used, one batch after another: each batch loads what
    // the fold dropped and trims it again.
    let in_use = IDLE..IDLE + IN_USE;
    for account in in_use.clone() {
        open_funded(&engine, account).await;
    }
    for round in 0..6 {
        for account in in_use.clone() {
            run(&engine, account, format!("debit-{round}"), debit(100)).await;
            caught_up(&projections).await;
        }
    }
    for account in in_use {
        let id = format!("acct-{account}");
        let folded = projections
            .folded_state(&id)
            .unwrap_or_else(|| panic!("{id}, in use, was dropped from the fold"));
        assert_eq!(folded.totals.consumed, Millicredits::new(600), "{id}");
    }
    let idle_held = (0..IDLE)
        .filter(|account| {
            projections
                .folded_state(&format!("acct-{account}"))
                .is_some()
        })
        .count();
    assert!(idle_held <= CAP - IN_USE, "{idle_held} idle accounts held");
    projections.shutdown().await;
}

fn on<H: Harness, F: Future<Output = ()>>(harness: H, test: impl FnOnce(H) -> F) {
    on_two_workers(Duration::from_secs(120), test(harness));
}

#[test]
fn idle_accounts_are_held_once_by_the_fold_and_stay_exact_on_sqlite() {
    on(SqliteHarness::default(), shared);
}

#[test]
fn idle_accounts_are_held_once_by_the_fold_and_stay_exact_on_postgres() {
    on(PostgresHarness::new(), shared);
}

#[test]
fn a_fold_at_its_cap_keeps_the_accounts_in_use_on_sqlite() {
    on(SqliteHarness::default(), full_fold);
}

#[test]
fn a_fold_at_its_cap_keeps_the_accounts_in_use_on_postgres() {
    on(PostgresHarness::new(), full_fold);
}
