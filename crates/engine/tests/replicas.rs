//! Two engines over one store (both backends), as two `tallyd` replicas
//! share one database: a refusal writes nothing, so no append's version
//! check stands between it and a state that the other replica has moved
//! on. The engine checks the stream before it refuses.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{debit, mutation};
use tally_core::{
    BucketKind, Command, GrantId, ManualClock, Millicredits, Outcome, Rejection, Timestamp,
};
use tally_engine::{Engine, EngineConfig, EngineError};
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;

fn grant(credits: i64) -> Command {
    Command::Grant(support::grant(
        GrantId::parse("g-other-replica").unwrap(),
        BucketKind::Promotional,
        Millicredits::from_credits(credits),
    ))
}

fn is_insufficient(result: &Result<tally_engine::Applied, EngineError>) -> bool {
    matches!(
        result,
        Err(EngineError::Rejected(Rejection::InsufficientCredits { .. }))
    )
}

async fn a_refusal_counts_the_other_replicas_writes<H: Harness>(harness: H) {
    let (store_a, location) = harness.create().await;
    let store_b = harness.reopen(&location).await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let a = Engine::new(store_a, clock.clone(), EngineConfig::default());
    let b = Engine::new(store_b, clock.clone(), EngineConfig::default());

    a.execute(mutation(
        "acme",
        "open",
        Command::OpenAccount(Default::default()),
    ))
    .await
    .unwrap();
    // Replica a holds the account with nothing granted, and says so.
    assert!(is_insufficient(
        &a.execute(mutation("acme", "d1", debit(Millicredits::from_credits(5))))
            .await
    ));

    // Replica b grants; a's copy of the account is now one event behind.
    b.execute(mutation("acme", "grant", grant(10)))
        .await
        .unwrap();

    let applied = a
        .execute(mutation("acme", "d2", debit(Millicredits::from_credits(5))))
        .await
        .expect("the credits granted on the other replica pay for the debit");
    assert!(
        matches!(applied.reply.outcome, Outcome::Charged { .. }),
        "{:?}",
        applied.reply.outcome
    );
    assert_eq!(applied.reply.available, Millicredits::from_credits(5));

    // A refusal the store's state agrees with still stands, and a retry of
    // the first refused key, now affordable, is decided afresh.
    assert!(is_insufficient(
        &a.execute(mutation("acme", "d3", debit(Millicredits::from_credits(6))))
            .await
    ));
    let retried = a
        .execute(mutation("acme", "d1", debit(Millicredits::from_credits(5))))
        .await
        .expect("a refusal stores no answer: the retry is a new decision");
    assert_eq!(retried.reply.available, Millicredits::ZERO);

    // b, which has not seen a's debits, refuses only after looking too.
    assert!(is_insufficient(
        &b.execute(mutation("acme", "d4", debit(Millicredits::from_credits(1))))
            .await
    ));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_refusal_counts_the_other_replicas_writes_on_sqlite() {
    tokio::time::timeout(
        Duration::from_secs(60),
        a_refusal_counts_the_other_replicas_writes(SqliteHarness::default()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_refusal_counts_the_other_replicas_writes_on_postgres() {
    tokio::time::timeout(
        Duration::from_secs(60),
        a_refusal_counts_the_other_replicas_writes(PostgresHarness::new()),
    )
    .await
    .unwrap();
}
