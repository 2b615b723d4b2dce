//! Test clocks (issue 16) on both stores, with two replicas: an account on
//! a clock lives on the clock's time alone, and advancing the clock writes
//! exactly the boundaries that real time writes for a twin account on the
//! wall clock, each once, stamped at the boundary.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{daily_plans, events_of, mutation};
use tally_core::{
    AccountId, ActionKey, Clock, Command, Event, ManualClock, MemberId, Millicredits, OpenAccount,
    PlanName, Rejection, ReservationId, TestClockId, TimeZoneName, Timestamp,
};
use tally_engine::{Engine, EngineConfig, EngineError, MAX_ACCOUNTS_PER_TEST_CLOCK};
use tally_store::EventStore;
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-03-27T12:00:00Z: the weekend Berlin moves to summer time.
const START: i64 = 1_774_612_800_000;

fn open(clock: Option<&TestClockId>) -> Command {
    Command::OpenAccount(OpenAccount {
        plan: Some(PlanName::parse("daily").unwrap()),
        time_zone: Some(TimeZoneName::parse("Europe/Berlin").unwrap()),
        test_clock: clock.cloned(),
        ..Default::default()
    })
}

fn reserve(id: &str, ttl_millis: i64) -> Command {
    Command::Reserve {
        reservation_id: ReservationId::parse(id).unwrap(),
        member: MemberId::parse("m").unwrap(),
        action: ActionKey::parse("agent.task").unwrap(),
        model: None,
        amount: Some(Millicredits::from_credits(5)),
        dimensions: None,
        ttl_millis,
    }
}

fn debit(credits: i64) -> Command {
    Command::Debit {
        member: MemberId::parse("m").unwrap(),
        action: ActionKey::parse("agent.task").unwrap(),
        model: None,
        amount: Some(Millicredits::from_credits(credits)),
        dimensions: None,
        occurred_at: None,
    }
}

/// Everything but the opening, whose terms name the clock: the rest of the
/// two twins' streams must be equal, event for event.
fn after_opening(events: Vec<Event>) -> Vec<Event> {
    events
        .into_iter()
        .filter(|e| !matches!(e, Event::AccountOpened { .. }))
        .collect()
}

fn rejection(result: Result<impl std::fmt::Debug, EngineError>) -> Rejection {
    match result {
        Err(EngineError::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

async fn a_clock_writes_what_real_time_writes<H: Harness>(harness: H) {
    let (store_a, location) = harness.create().await;
    let store_b = harness.reopen(&location).await;
    let wall = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let a = Engine::new(store_a, wall.clone(), EngineConfig::default());
    let b = Engine::new(store_b, wall.clone(), EngineConfig::default());
    a.publish_plans(daily_plans()).await.unwrap();
    b.refresh_catalog().await.unwrap();
    let sim = TestClockId::parse("sim").unwrap();

    // A clock that starts where the wall clock is, so that its account and
    // a twin on the wall clock can be compared event for event.
    let created = a
        .create_test_clock(&sim, Timestamp::from_millis(START))
        .await
        .unwrap();
    assert_eq!(created.now, Timestamp::from_millis(START));
    // Created again at the same time: the same clock (a retry is safe);
    // at another time: refused.
    assert_eq!(
        b.create_test_clock(&sim, Timestamp::from_millis(START))
            .await
            .unwrap(),
        created
    );
    assert_eq!(
        rejection(b.create_test_clock(&sim, Timestamp::from_millis(0)).await),
        Rejection::TestClockExists { clock: sim.clone() }
    );

    for (account, clock) in [("twin", None), ("simulated", Some(&sim))] {
        a.execute(mutation(account, "open", open(clock)))
            .await
            .unwrap();
        a.execute(mutation(account, "hold", reserve("r1", 3 * HOUR)))
            .await
            .unwrap();
        a.execute(mutation(account, "spend", debit(150)))
            .await
            .unwrap();
    }
    // An account opened on a clock that does not exist: refused, not open.
    let nowhere = TestClockId::parse("nowhere").unwrap();
    assert_eq!(
        rejection(
            a.execute(mutation("lost", "open", open(Some(&nowhere))))
                .await
        ),
        Rejection::UnknownTestClock { clock: nowhere }
    );
    assert!(events_of(a.store(), "lost").await.is_empty());

    // Forty days of wall time, swept every few hours by both replicas: the
    // twin crosses days, a cycle, expiries; the simulated account, on a
    // clock nobody moved, crosses nothing and is never due.
    let simulated_before = events_of(a.store(), "simulated").await;
    for _ in 0..(40 * 24 / 7) {
        wall.advance_millis(7 * HOUR);
        loop {
            let (ra, rb) = tokio::join!(a.sweep_once(), b.sweep_once());
            if ra.unwrap().accounts == 0 && rb.unwrap().accounts == 0 {
                break;
            }
        }
    }
    let end = wall.now();
    assert_eq!(events_of(a.store(), "simulated").await, simulated_before);
    let due = a.store().due_wakeups(i64::MAX, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|w| w.stream_id.as_str()).collect::<Vec<_>>(),
        vec!["twin"],
        "only the wall-clock account has a wakeup"
    );
    // Reading the simulated account does not move it either: a read sees
    // it at its clock's time.
    let balance = b
        .balance(&AccountId::parse("simulated").unwrap())
        .await
        .unwrap();
    assert_eq!(
        balance.available,
        Millicredits::from_credits(3_100 - 150 - 5)
    );

    // The clock moved in uneven steps through the other replica, the last
    // one by both replicas at once.
    let mut written = 0;
    for to in [START + 2 * HOUR, START + 5 * DAY + 1, START + 33 * DAY] {
        let advanced = b
            .advance_test_clock(&sim, Timestamp::from_millis(to))
            .await
            .unwrap();
        assert_eq!(advanced.clock.now, Timestamp::from_millis(to));
        written += advanced.events_written;
    }
    let (last_a, last_b) = tokio::join!(
        a.advance_test_clock(&sim, end),
        b.advance_test_clock(&sim, end)
    );
    let (last_a, last_b) = (last_a.unwrap(), last_b.unwrap());
    written += last_a.events_written + last_b.events_written;
    assert_eq!(last_a.clock.now, end);
    assert_eq!(
        last_a.clock.accounts,
        vec![AccountId::parse("simulated").unwrap()]
    );

    let twin = after_opening(events_of(a.store(), "twin").await);
    let simulated_all = events_of(a.store(), "simulated").await;
    assert_eq!(
        written,
        simulated_all.len() - simulated_before.len(),
        "the advances' counts add up to what they wrote"
    );
    let simulated = after_opening(simulated_all);
    assert_eq!(simulated, twin, "the clock wrote what real time wrote");
    let cycles = simulated
        .iter()
        .filter(|e| matches!(e, Event::CycleStarted { .. }))
        .count();
    let days = simulated
        .iter()
        .filter(|e| matches!(e, Event::DayStarted { .. }))
        .count();
    assert_eq!(
        (cycles, days),
        (2, 41),
        "the opening's cycle and day, then one renewal and forty midnights"
    );

    // Backwards is refused; to the same time again writes nothing.
    assert_eq!(
        rejection(
            a.advance_test_clock(&sim, Timestamp::from_millis(end.as_millis() - 1))
                .await
        ),
        Rejection::InvalidField {
            field: "frozen_time",
            reason: format!(
                "is before the clock's time ({} ms since the epoch); a test clock moves forward only",
                end.as_millis()
            ),
        }
    );
    assert_eq!(
        a.advance_test_clock(&sim, end)
            .await
            .unwrap()
            .events_written,
        0
    );

    // A command on the simulated account happens at the clock's time, not
    // the wall clock's, which moves on without it.
    wall.advance_millis(10 * DAY);
    let clock_at = Timestamp::from_millis(end.as_millis() + HOUR);
    a.advance_test_clock(&sim, clock_at).await.unwrap();
    a.execute(mutation("simulated", "later", debit(1)))
        .await
        .unwrap();
    let last = events_of(b.store(), "simulated").await.pop().unwrap();
    assert!(
        matches!(&last, Event::CreditsDebited { at, .. } if *at == clock_at),
        "{last:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_clock_writes_what_real_time_writes_on_sqlite() {
    tokio::time::timeout(
        Duration::from_secs(120),
        a_clock_writes_what_real_time_writes(SqliteHarness::default()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_clock_writes_what_real_time_writes_on_postgres() {
    tokio::time::timeout(
        Duration::from_secs(120),
        a_clock_writes_what_real_time_writes(PostgresHarness::new()),
    )
    .await
    .unwrap();
}

/// A deployment that refuses test clocks refuses every way onto one, and
/// writes nothing; a clock holds at most its limit of accounts.
#[tokio::test]
async fn refused_by_configuration_and_bounded() {
    let (store, _location) = SqliteHarness::default().create().await;
    let wall = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let allowing = Engine::new(store.clone(), wall.clone(), EngineConfig::default());
    let sim = TestClockId::parse("sim").unwrap();
    allowing
        .create_test_clock(&sim, Timestamp::from_millis(START))
        .await
        .unwrap();
    let refusing = Engine::new(
        store,
        wall,
        EngineConfig {
            test_clocks_allowed: false,
            ..EngineConfig::default()
        },
    );
    let other = TestClockId::parse("other").unwrap();
    assert_eq!(
        rejection(
            refusing
                .create_test_clock(&other, Timestamp::from_millis(START))
                .await
        ),
        Rejection::TestClocksRefused
    );
    assert_eq!(
        rejection(
            refusing
                .advance_test_clock(&sim, Timestamp::from_millis(START + DAY))
                .await
        ),
        Rejection::TestClocksRefused
    );
    assert_eq!(
        rejection(
            refusing
                .execute(mutation("acct", "open", open(Some(&sim))))
                .await
        ),
        Rejection::TestClocksRefused
    );
    assert!(events_of(refusing.store(), "acct").await.is_empty());
    assert!(
        events_of(refusing.store(), "$test-clock/other")
            .await
            .is_empty()
    );
    let clock = refusing.test_clock(&sim).await.unwrap();
    assert_eq!(
        (clock.now, clock.accounts.len()),
        (Timestamp::from_millis(START), 0)
    );

    // Plan-less accounts open fast; the clock takes its limit and no more.
    let bare = || {
        Command::OpenAccount(OpenAccount {
            test_clock: Some(sim.clone()),
            ..Default::default()
        })
    };
    for i in 0..MAX_ACCOUNTS_PER_TEST_CLOCK {
        allowing
            .execute(mutation(&format!("acct-{i}"), "open", bare()))
            .await
            .unwrap();
    }
    // Opening one of them again (a retry) is still fine.
    allowing
        .execute(mutation("acct-0", "open", bare()))
        .await
        .unwrap();
    assert_eq!(
        rejection(allowing.execute(mutation("one-more", "open", bare())).await),
        Rejection::TestClockFull {
            clock: sim.clone(),
            limit: MAX_ACCOUNTS_PER_TEST_CLOCK
        }
    );
    assert!(events_of(allowing.store(), "one-more").await.is_empty());
    allowing.shutdown().await;
    refusing.shutdown().await;
}
