//! Writes paced to the projections, on both stores: a runner that had
//! caught up and then falls behind a burst of appends says the appends
//! outrun it, an engine gated on that holds its transactions back while it
//! does, every command still lands exactly once, and once the runner has
//! caught up nothing is held back any more.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::{caught_up, on_two_workers};
use tally_core::{AccountId, Command, IdempotencyKey, ManualClock, OpenAccount, Timestamp};
use tally_engine::{AppendGate, Engine, EngineConfig, Mutation};
use tally_projections::reads;
use tally_projections::{Projections, RunnerConfig};
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;
use tally_store::{EventStore, ProjectionStore, SqlStatement};

const START: i64 = 1_774_612_800_000;
const ACCOUNTS: usize = 1_500;
const WAVE: usize = 50;
const MAX_BACKLOG: u64 = 40;

/// The gate `tallyd` installs, counting the transactions it held back.
struct Paced<S> {
    projections: Projections<S>,
    held: AtomicUsize,
}

impl<S: EventStore + ProjectionStore + Clone> AppendGate for Paced<S> {
    fn admit(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let held = self
                .projections
                .hold_back_appends(Duration::from_secs(1))
                .await;
            if held.is_some() {
                self.held.fetch_add(1, Ordering::SeqCst);
            }
        })
    }
}

async fn paced<H: Harness>(harness: H)
where
    H::Store: Clone,
{
    let (store, _location) = harness.create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let engine = Engine::new(store.clone(), clock.clone(), EngineConfig::default());
    // A slow runner (small batches that never grow) measured often, so that
    // a burst of appends leaves it behind while it advances.
    let projections = Projections::new(
        store.clone(),
        clock.clone(),
        RunnerConfig {
            batch: 20,
            max_batch: 20,
            lag_every: Duration::from_millis(20),
            max_backlog: MAX_BACKLOG,
            ..RunnerConfig::default()
        },
    );
    projections.start();
    caught_up(&projections).await;
    // Measured caught up at least once: from here on, falling behind is
    // the writes outrunning the runner.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!projections.outrun(), "nothing written, nothing outrun");

    let gate = Arc::new(Paced {
        projections: projections.clone(),
        held: AtomicUsize::new(0),
    });
    assert!(engine.gate_appends(gate.clone()).is_ok());

    let watching = Arc::new(AtomicBool::new(true));
    let seen_outrun = {
        let projections = projections.clone();
        let watching = watching.clone();
        tokio::spawn(async move {
            let mut seen = false;
            while watching.load(Ordering::SeqCst) {
                seen |= projections.outrun();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    // Waves of concurrent openings, one after another: each wave is a few
    // group-commit transactions, and the later ones find the runner behind.
    for wave in 0..ACCOUNTS / WAVE {
        let mut openings = Vec::new();
        for i in wave * WAVE..(wave + 1) * WAVE {
            let engine = engine.clone();
            openings.push(tokio::spawn(async move {
                engine
                    .execute(Mutation {
                        account: AccountId::parse(format!("acct-{i}")).unwrap(),
                        idempotency_key: IdempotencyKey::parse("open").unwrap(),
                        fingerprint: b"open".to_vec(),
                        command: Command::OpenAccount(OpenAccount::default()),
                    })
                    .await
                    .expect("every account opens")
            }));
        }
        for opening in openings {
            opening.await.unwrap();
        }
    }
    caught_up(&projections).await;
    watching.store(false, Ordering::SeqCst);
    assert!(
        seen_outrun.await.unwrap(),
        "a burst of {ACCOUNTS} accounts left a 20-event-batch runner more than {MAX_BACKLOG} events behind"
    );
    assert!(
        gate.held.load(Ordering::SeqCst) > 0,
        "the engine held transactions back while the writes outran the runner"
    );

    // Caught up, and measured so: nothing is held back any more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!projections.outrun());
    let held = gate.held.load(Ordering::SeqCst);
    engine
        .execute(Mutation {
            account: AccountId::parse("acct-0").unwrap(),
            idempotency_key: IdempotencyKey::parse("open").unwrap(),
            fingerprint: b"open".to_vec(),
            command: Command::OpenAccount(OpenAccount::default()),
        })
        .await
        .expect("a retry answers");
    assert_eq!(gate.held.load(Ordering::SeqCst), held);

    // Held back, never lost: every account is in the balances, once.
    let rows = store
        .query_projection(vec![SqlStatement::new(
            "SELECT account_id, version FROM account_balances",
            Vec::new(),
        )])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(rows.len(), ACCOUNTS);
    // acct-0 was also retried: the retry appended nothing.
    let mut lengths = Vec::new();
    for i in [0, 1, ACCOUNTS / 2, ACCOUNTS - 1] {
        let account = format!("acct-{i}");
        let state = reads::balance_state(&store, &account).await.unwrap();
        assert!(state.is_some(), "{account} is folded");
        lengths.push(store.read_stream(&account, 0, 100).await.unwrap().len());
    }
    assert!(lengths[0] > 0);
    assert!(
        lengths.iter().all(|&n| n == lengths[0]),
        "every account opened once: {lengths:?}"
    );
    projections.shutdown().await;
}

fn run<H: Harness>(harness: H)
where
    H::Store: Clone,
{
    on_two_workers(Duration::from_secs(240), paced(harness));
}

#[test]
fn writes_are_paced_to_a_runner_they_outrun_on_sqlite() {
    run(SqliteHarness::default());
}

#[test]
fn writes_are_paced_to_a_runner_they_outrun_on_postgres() {
    run(PostgresHarness::new());
}
