//! `tallyd rebuild` beside a running `tallyd` resets the projection and
//! leaves the rebuild to the running runner. A busy runner learns of the
//! reset when its next commit fails on the generation; an idle one commits
//! nothing, so it must notice on its own (the store's signal of the reset,
//! or its own lag measurements), or the projection would stay empty until
//! the next event, and a rebuild waiting for it would wait as long.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{caught_up, debit, grant, on_two_workers};
use tally_core::{AccountId, Command, IdempotencyKey, ManualClock, OpenAccount, Timestamp};
use tally_engine::{Engine, EngineConfig, Mutation};
use tally_projections::rebuild::request_rebuild;
use tally_projections::{Projection, Projections, RunnerConfig};
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;
use tally_store::{EventStore, ProjectionStore, SqlRow, SqlStatement};
use tokio::time::Instant;

const START: i64 = 1_774_612_800_000;

async fn ledger<S: ProjectionStore>(store: &S) -> Vec<SqlRow> {
    store
        .query_projection(vec![SqlStatement::new(
            "SELECT account_id, seq, kind, amount, available_after \
             FROM ledger_entries ORDER BY account_id, seq",
            vec![],
        )])
        .await
        .expect("read the ledger")
        .remove(0)
}

/// `from_another_handle`: the reset goes through a second store opened on
/// the same database, as another process's would, and dropped at once, as
/// a one-off command exits after its commit. The embedded store signals
/// nothing across handles, and a PostgreSQL handle dropped that soon has
/// not sent its `NOTIFY` (its sender stops with it): the runner's lag
/// measurements must notice.
async fn reset_elsewhere<H: Harness>(harness: H, from_another_handle: bool)
where
    H::Store: Clone,
{
    let (store, location) = harness.create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let engine = Engine::new(store.clone(), clock.clone(), EngineConfig::default());
    let projections = Projections::new(store.clone(), clock.clone(), RunnerConfig::default());
    projections.start();
    let commands = [
        ("open", Command::OpenAccount(OpenAccount::default())),
        ("grant", grant(10_000)),
        ("debit-1", debit(700)),
        ("debit-2", debit(1_100)),
    ];
    for (key, command) in commands {
        engine
            .execute(Mutation {
                account: AccountId::parse("acme").unwrap(),
                idempotency_key: IdempotencyKey::parse(key).unwrap(),
                fingerprint: key.as_bytes().to_vec(),
                command,
            })
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    caught_up(&projections).await;
    let before = ledger(&store).await;
    let events = store.read_stream("acme", 1, 100).await.unwrap();
    assert_eq!(
        before.len(),
        events.len(),
        "one entry per event: {before:?}"
    );
    let head = store.log_head().await.unwrap();

    // What `tallyd rebuild --projection ledger` does when a running
    // `tallyd` holds the runner lock. No event follows it.
    if from_another_handle {
        let other = harness.reopen(&location).await;
        request_rebuild(&other, Projection::Ledger, START)
            .await
            .unwrap();
    } else {
        request_rebuild(&store, Projection::Ledger, START)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let checkpoint = store.projection_checkpoint("ledger").await.unwrap();
        if checkpoint.position == head {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle runner never rebuilt the reset ledger (checkpoint {checkpoint:?}, head {head:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ledger(&store).await, before, "the ledger rebuilt as it was");
    projections.shutdown().await;
    engine.shutdown().await;
}

#[test]
fn an_idle_runner_rebuilds_a_reset_made_elsewhere_on_sqlite() {
    on_two_workers(
        Duration::from_secs(120),
        reset_elsewhere(SqliteHarness::default(), false),
    );
}

#[test]
fn an_idle_runner_rebuilds_a_reset_made_by_another_process_on_sqlite() {
    on_two_workers(
        Duration::from_secs(120),
        reset_elsewhere(SqliteHarness::default(), true),
    );
}

#[test]
fn an_idle_runner_rebuilds_a_reset_made_elsewhere_on_postgres() {
    on_two_workers(
        Duration::from_secs(120),
        reset_elsewhere(PostgresHarness::new(), false),
    );
}

#[test]
fn an_idle_runner_rebuilds_a_reset_made_by_another_process_on_postgres() {
    on_two_workers(
        Duration::from_secs(120),
        reset_elsewhere(PostgresHarness::new(), true),
    );
}
