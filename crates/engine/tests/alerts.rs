//! Alerts through the engine, on both stores: a boundary's alert is
//! written once, stamped with the boundary and under no idempotency key,
//! whether the sweep or a later command notices the boundary.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tally_core::{
    AccountId, ActionKey, Alert, BucketKind, Command, Event, GrantCommand, GrantId, IdempotencyKey,
    ManualClock, MemberId, Millicredits, OpenAccount, Severity, Timestamp,
};
use tally_engine::{Engine, EngineConfig, Mutation, decode_event};
use tally_store::EventStore;
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;

const HOUR: i64 = 3_600_000;
/// 2026-01-15T00:00:00Z.
const START: i64 = 1_768_435_200_000;

fn mutation(account: &str, key: &str, command: Command) -> Mutation {
    Mutation {
        account: AccountId::parse(account).unwrap(),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: key.as_bytes().to_vec(),
        command,
    }
}

fn grant(id: &str, credits: i64, expires_at: Option<Timestamp>) -> Command {
    Command::Grant(GrantCommand {
        expires_at,
        ..support::grant(
            GrantId::parse(id).unwrap(),
            BucketKind::TopUp,
            Millicredits::from_credits(credits),
        )
    })
}

/// The account's events with the key each was written under.
async fn stream<S: EventStore>(store: &S, account: &str) -> Vec<(Event, Option<String>)> {
    store
        .read_stream(account, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let decoded = decode_event(r).unwrap();
            (decoded.event, decoded.idempotency_key)
        })
        .collect()
}

async fn a_boundary_alerts_once_whoever_notices_it<H: Harness>(harness: H) {
    let (store, _location) = harness.create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let engine = Engine::new(store, clock.clone(), EngineConfig::default());
    let expiry = Timestamp::from_millis(START + HOUR);
    for account in ["swept", "lazy"] {
        for (key, command) in [
            ("open", Command::OpenAccount(OpenAccount::default())),
            ("g-expiring", grant("g-expiring", 100, Some(expiry))),
            ("g-lasting", grant("g-lasting", 50, None)),
        ] {
            engine
                .execute(mutation(account, key, command))
                .await
                .unwrap();
        }
    }
    let granted = stream(engine.store(), "swept").await.len();

    // Two hours on, a command notices the expiry of one account's bucket
    // before the sweep does; the sweep writes the other's.
    clock.advance_millis(2 * HOUR);
    engine
        .execute(mutation(
            "lazy",
            "d-1",
            Command::Debit {
                occurred_at: None,
                member: MemberId::parse("m").unwrap(),
                action: ActionKey::parse("a").unwrap(),
                model: None,
                amount: Some(Millicredits::from_credits(1)),
                dimensions: None,
            },
        ))
        .await
        .unwrap();
    let swept = engine.sweep_once().await.unwrap();
    assert!(swept.events > 0, "{swept:?}");

    let low = Alert::LowBalance {
        threshold: Millicredits::from_credits(100),
        available: Millicredits::from_credits(50),
        severity: Severity::Warning,
    };
    let boundary = [
        (
            Event::BucketExpired {
                at: expiry,
                grant_id: GrantId::parse("g-expiring").unwrap(),
                amount: Millicredits::from_credits(100),
            },
            None,
        ),
        (
            Event::AlertRaised {
                at: expiry,
                alert: low,
            },
            None,
        ),
    ];
    let swept = stream(engine.store(), "swept").await;
    assert_eq!(swept[granted..], boundary[..]);
    let lazy = stream(engine.store(), "lazy").await;
    assert_eq!(lazy[granted..granted + 2], boundary[..]);
    assert!(matches!(
        &lazy[granted + 2..],
        [(Event::CreditsDebited { .. }, Some(key))] if key == "d-1"
    ));

    // Written once: nothing is due any more, and nothing alerts again.
    clock.advance_millis(HOUR);
    assert_eq!(engine.sweep_once().await.unwrap().events, 0);
    assert_eq!(stream(engine.store(), "swept").await.len(), granted + 2);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_boundary_alerts_once_whoever_notices_it_on_sqlite() {
    tokio::time::timeout(
        Duration::from_secs(60),
        a_boundary_alerts_once_whoever_notices_it(SqliteHarness::default()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_boundary_alerts_once_whoever_notices_it_on_postgres() {
    tokio::time::timeout(
        Duration::from_secs(60),
        a_boundary_alerts_once_whoever_notices_it(PostgresHarness::new()),
    )
    .await
    .unwrap();
}
