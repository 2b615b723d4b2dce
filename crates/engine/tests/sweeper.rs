//! SPEC §4 invariant 7 across replicas: two engines sweeping one store
//! (both backends) write each cycle start, day start, allowance expiry and
//! hold expiry exactly once, and the events are the ones the next command
//! would have written.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{daily_plans, events_of, mutation};
use tally_core::{
    Account, ActionKey, Clock, Command, Event, ManualClock, MemberId, Millicredits, OpenAccount,
    PlanName, RateCard, ReservationId, TimeZoneName, Timestamp, advance,
};
use tally_engine::{Engine, EngineConfig, Published};
use tally_store::EventStore;
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;

const DAY: i64 = 24 * 3_600_000;
/// 2026-03-27T12:00:00Z: the weekend Berlin moves to summer time.
const START: i64 = 1_774_612_800_000;

fn open(plan: &str) -> Command {
    Command::OpenAccount(OpenAccount {
        plan: Some(PlanName::parse(plan).unwrap()),
        time_zone: Some(TimeZoneName::parse("Europe/Berlin").unwrap()),
        ..Default::default()
    })
}

fn reserve(id: &str) -> Command {
    Command::Reserve {
        reservation_id: ReservationId::parse(id).unwrap(),
        member: MemberId::parse("m").unwrap(),
        action: ActionKey::parse("agent.task").unwrap(),
        model: None,
        amount: Some(Millicredits::from_credits(5)),
        dimensions: None,
        ttl_millis: 3 * 3_600_000,
    }
}

fn is_time_event(e: &Event) -> bool {
    matches!(
        e,
        Event::CycleStarted { .. }
            | Event::DayStarted { .. }
            | Event::BucketExpired { .. }
            | Event::HoldExpired { .. }
    ) || matches!(e, Event::CreditsGranted { grant_id, .. } if grant_id.as_str().starts_with("plan:"))
}

async fn two_replicas_sweep_each_boundary_once<H: Harness>(harness: H) {
    let (store_a, location) = harness.create().await;
    let store_b = harness.reopen(&location).await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let config = EngineConfig {
        sweep_batch: 2,
        ..EngineConfig::default()
    };
    let a = Engine::new(store_a, clock.clone(), config.clone());
    let b = Engine::new(store_b, clock.clone(), config);
    assert_eq!(
        a.publish_plans(daily_plans()).await.unwrap(),
        Published::New { version: 1 }
    );
    b.refresh_catalog().await.unwrap();

    // Three idle accounts with an open hold each, and one that only the
    // next command will advance.
    for account in ["idle-1", "idle-2", "idle-3", "lazy"] {
        a.execute(mutation(account, "open", open("daily")))
            .await
            .unwrap();
        a.execute(mutation(account, "hold", reserve("r1")))
            .await
            .unwrap();
    }
    let opened: Account = Account::replay(&events_of(a.store(), "lazy").await).unwrap();

    // Four days, through the DST change, noticed every few hours by both
    // replicas at once (the lazy account is swept too, then compared).
    for _ in 0..(4 * 24 / 5) {
        clock.advance_millis(5 * 3_600_000);
        let (ra, rb) = tokio::join!(a.sweep_once(), b.sweep_once());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.failed + rb.failed, 0);
        // Batches are small: keep sweeping until nothing is due.
        for _ in 0..4 {
            let (ra, rb) = tokio::join!(a.sweep_once(), b.sweep_once());
            if ra.unwrap().accounts == 0 && rb.unwrap().accounts == 0 {
                break;
            }
        }
    }
    let now = clock.now().as_millis();

    // What a single lazy evaluation at the end produces from the opened
    // state: the reference the sweeps must match exactly.
    let mut reference = opened.clone();
    let expected = advance(&mut reference, Timestamp::from_millis(now));
    let days = expected
        .iter()
        .filter(|e| matches!(e, Event::DayStarted { .. }))
        .count();
    assert_eq!(days, 4, "four local midnights passed: {expected:?}");
    assert_eq!(
        expected
            .iter()
            .filter(|e| matches!(e, Event::HoldExpired { .. }))
            .count(),
        1
    );
    let reference: Vec<Event> = events_of(a.store(), "lazy")
        .await
        .into_iter()
        .take(opened.version as usize)
        .chain(expected)
        .filter(is_time_event)
        .collect();
    for account in ["idle-1", "idle-2", "idle-3", "lazy"] {
        let written: Vec<Event> = events_of(a.store(), account)
            .await
            .into_iter()
            .filter(is_time_event)
            .collect();
        assert_eq!(written, reference, "{account}");
    }
    // Nothing is left due, and the wakeups point at the next midnight.
    assert_eq!(a.sweep_once().await.unwrap().events, 0);
    let next = a.store().due_wakeups(i64::MAX, 10).await.unwrap();
    assert_eq!(next.len(), 4);
    assert!(next.iter().all(|w| w.at_ms > now && w.at_ms - now <= DAY));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn two_replicas_sweep_each_boundary_once_on_sqlite() {
    tokio::time::timeout(
        Duration::from_secs(120),
        two_replicas_sweep_each_boundary_once(SqliteHarness::default()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn two_replicas_sweep_each_boundary_once_on_postgres() {
    tokio::time::timeout(
        Duration::from_secs(120),
        two_replicas_sweep_each_boundary_once(PostgresHarness::new()),
    )
    .await
    .unwrap();
}

async fn catalog_versions_are_shared_and_monotonic<H: Harness>(harness: H) {
    let (store_a, location) = harness.create().await;
    let store_b = harness.reopen(&location).await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let a = Engine::new(store_a, clock.clone(), EngineConfig::default());
    let b = Engine::new(store_b, clock, EngineConfig::default());
    let card = |version: u64, price: i64| {
        RateCard::from_toml_str(&format!(
            "version = {version}\n[actions.\"a.b\"]\nprice_millicredits = {price}\n"
        ))
        .unwrap()
    };
    assert_eq!(
        a.publish_rate_card(card(1, 1_000)).await.unwrap(),
        Published::New { version: 1 }
    );
    // Another replica sees it after a refresh, and a retry is a no-op.
    assert!(b.refresh_catalog().await.unwrap());
    assert_eq!(b.catalog().rate_cards.current(), &card(1, 1_000));
    assert_eq!(
        b.publish_rate_card(card(1, 1_000)).await.unwrap(),
        Published::AlreadyPublished { version: 1 }
    );
    // The same version with other content, or an older one, is refused.
    assert!(b.publish_rate_card(card(1, 2_000)).await.is_err());
    assert_eq!(
        b.publish_rate_card(card(2, 2_000)).await.unwrap(),
        Published::New { version: 2 }
    );
    assert!(a.publish_rate_card(card(2, 3_000)).await.is_err());
    assert_eq!(a.catalog().rate_cards.current().version, 2);
    // Old versions stay readable: holds settle on the card they were priced on.
    assert_eq!(a.catalog().rate_cards.version(1), Some(&card(1, 1_000)));
    // Two replicas racing to publish the same next version: one wins, and
    // the other sees it as already published.
    let (ra, rb) = tokio::join!(
        a.publish_rate_card(card(3, 4_000)),
        b.publish_rate_card(card(3, 4_000))
    );
    let mut outcomes = [ra.unwrap(), rb.unwrap()];
    outcomes.sort_by_key(|p| matches!(p, Published::AlreadyPublished { .. }));
    assert_eq!(
        outcomes,
        [
            Published::New { version: 3 },
            Published::AlreadyPublished { version: 3 }
        ]
    );
    // A fresh engine over the store reads everything back.
    let c = Engine::new(
        harness.reopen(&location).await,
        Arc::new(ManualClock::new(Timestamp::from_millis(START))),
        EngineConfig::default(),
    );
    c.refresh_catalog().await.unwrap();
    assert_eq!(c.catalog().rate_cards.current(), &card(3, 4_000));
}

#[tokio::test]
async fn catalog_versions_are_shared_and_monotonic_on_sqlite() {
    catalog_versions_are_shared_and_monotonic(SqliteHarness::default()).await;
}

#[tokio::test]
async fn catalog_versions_are_shared_and_monotonic_on_postgres() {
    catalog_versions_are_shared_and_monotonic(PostgresHarness::new()).await;
}
