//! Test clocks over gRPC on both stores: SoPilot's plan (daily credits,
//! then monthly credits) played across three months on a clock, with every
//! boundary of those months in the ledger at its own time, while the
//! server's own clock does not move; and a deployment that refuses them.

use tally_core::Clock as _;
use tally_e2e::*;
use tonic::transport::Channel;

const SOPILOT_PLANS: &str = include_str!("../../../examples/sopilot/plans.toml");
const SOPILOT_RATE_CARD: &str = include_str!("../../../examples/sopilot/rate-card.toml");

const HOUR: i64 = 3_600;
const DAY: i64 = 24 * HOUR;
/// 2026-06-01T12:00:00Z (05:00 in Los Angeles): where the clock starts,
/// months after the server's own clock (2026-01-15).
const CLOCK_START: i64 = 1_780_315_200;
/// The cycles' starts: the 1st of each month at 05:00 Los Angeles time.
const JUL_1: i64 = CLOCK_START + 30 * DAY;
const AUG_1: i64 = JUL_1 + 31 * DAY;
const SEP_1: i64 = AUG_1 + 31 * DAY;

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

async fn advance(
    clocks: &mut TestClockServiceClient<Channel>,
    to: i64,
) -> AdvanceTestClockResponse {
    clocks
        .advance_test_clock(AdvanceTestClockRequest {
            test_clock_id: "sim".into(),
            frozen_time: at(to),
        })
        .await
        .expect("the clock advances")
        .into_inner()
}

/// The ledger's entries of one kind: when, and how much.
async fn entries(
    accounts: &mut AccountServiceClient<Channel>,
    account: &str,
    kind: LedgerEntryKind,
) -> Vec<(i64, i64)> {
    let page = accounts
        .list_ledger(ListLedgerRequest {
            account_id: account.into(),
            kinds: vec![kind.into()],
            page_size: 1_000,
            consistency: fully_consistent(),
            ..Default::default()
        })
        .await
        .expect("ledger")
        .into_inner();
    assert!(page.next_page_token.is_empty());
    assert_eq!(
        page.test_clock_id,
        if account == "maker" { "sim" } else { "" }
    );
    page.entries
        .iter()
        .map(|e| (e.occurred_at.unwrap().seconds, e.amount_millicredits))
        .collect()
}

#[tokio::test]
async fn sopilot_three_months_on_a_test_clock() {
    for backend in BOTH_BACKENDS {
        three_months(backend).await;
    }
}

async fn three_months(backend: Backend) {
    let server = TestServer::start_with(Options {
        backend,
        rate_card: SOPILOT_RATE_CARD.into(),
        plans: Some(SOPILOT_PLANS.into()),
        ..Options::default()
    })
    .await;
    let wall_start = server.clock().now();
    let mut clocks = server.test_clocks().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;

    let created = clocks
        .create_test_clock(CreateTestClockRequest {
            test_clock_id: "sim".into(),
            frozen_time: at(CLOCK_START),
        })
        .await
        .expect("clock")
        .into_inner()
        .test_clock
        .unwrap();
    assert_eq!(created.frozen_time, at(CLOCK_START));
    for (account, clock) in [("maker", "sim"), ("real", "")] {
        accounts
            .open_account(OpenAccountRequest {
                idempotency_key: format!("open-{account}"),
                account_id: account.into(),
                plan: "standard".into(),
                time_zone: "America/Los_Angeles".into(),
                test_clock_id: clock.into(),
                ..Default::default()
            })
            .await
            .expect("opens");
    }
    let opened = balance(&mut accounts, "maker").await;
    assert_eq!(opened.test_clock_id, "sim");
    assert_eq!(
        opened.cycle_start,
        at(CLOCK_START),
        "opened at the clock's time"
    );
    assert_eq!(opened.cycle_end, at(JUL_1));

    // Every day at 11:00 in Los Angeles, twelve images: 120 credits, the
    // day's 100 first, then 20 of the month's. On each cycle's tenth day a
    // job holds credits and is abandoned: its hold lapses after an hour.
    let mut now = CLOCK_START + 6 * HOUR;
    advance(&mut clocks, now).await;
    let first_advance = balance(&mut accounts, "maker").await;
    let mut boundaries = 0;
    let mut abandoned = Vec::new();
    for day in 0..92 {
        let receipt = metering
            .debit(DebitRequest {
                idempotency_key: format!("images-{day}"),
                account_id: "maker".into(),
                member_id: "ops".into(),
                action: "image.generate".into(),
                dimensions: Some(Dimensions {
                    images: 12,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("debit")
            .into_inner()
            .receipt
            .unwrap();
        assert_eq!(receipt.charged_millicredits, 120_000, "day {day}");
        if [9, 39, 70].contains(&day) {
            metering
                .reserve(ReserveRequest {
                    ttl: Some(seconds(HOUR)),
                    action: "image.generate".into(),
                    ..reserve_request("maker", &format!("abandoned-{day}"), 10_000)
                })
                .await
                .expect("hold");
            abandoned.push(now + HOUR);
        }
        now += DAY;
        let advanced = advance(&mut clocks, now).await;
        assert_eq!(advanced.test_clock.unwrap().account_ids, vec!["maker"]);
        boundaries += advanced.events_written;
    }
    assert_eq!(now, SEP_1 + 6 * HOUR);

    // The cycles started at their anchors, and each took what was left of
    // the month before: 3,000 less 20 a day (30, 31 and 31 days).
    let cycles = [CLOCK_START, JUL_1, AUG_1, SEP_1];
    let started = entries(&mut accounts, "maker", LedgerEntryKind::CycleStarted).await;
    assert_eq!(started.iter().map(|(t, _)| *t).collect::<Vec<_>>(), cycles);
    let grants = entries(&mut accounts, "maker", LedgerEntryKind::Grant).await;
    let monthly: Vec<i64> = grants
        .iter()
        .filter(|(_, amount)| *amount == 3_000_000)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(monthly, cycles, "each cycle's allowance at its start");
    let expired = entries(&mut accounts, "maker", LedgerEntryKind::BucketExpired).await;
    assert_eq!(
        expired,
        vec![(JUL_1, 2_400_000), (AUG_1, 2_380_000), (SEP_1, 2_380_000)]
    );
    // A day started at every local midnight (07:00Z in summer).
    let days = entries(&mut accounts, "maker", LedgerEntryKind::DayStarted).await;
    assert_eq!(days.len(), 1 + 92);
    assert!(
        days[1..]
            .iter()
            .enumerate()
            .all(|(i, (t, _))| *t == CLOCK_START + 19 * HOUR + i as i64 * DAY),
        "{days:?}"
    );
    let daily: Vec<i64> = grants
        .iter()
        .filter(|(_, amount)| *amount == 100_000)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        daily,
        days.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        "each day's allowance at its midnight"
    );
    // The abandoned holds lapsed at their TTL, on the clock.
    let lapsed = entries(&mut accounts, "maker", LedgerEntryKind::HoldExpired).await;
    assert_eq!(
        lapsed,
        abandoned.iter().map(|t| (*t, 10_000)).collect::<Vec<_>>()
    );
    // The usage alert (80 % of the monthly allowance, 2,400 credits) fired
    // at each cycle's twentieth debit, re-armed by each new cycle.
    let alerts = entries(&mut accounts, "maker", LedgerEntryKind::Alert).await;
    let alert_times: Vec<i64> = alerts.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        alert_times,
        vec![
            CLOCK_START + 6 * HOUR + 19 * DAY,
            JUL_1 + 6 * HOUR + 19 * DAY,
            AUG_1 + 6 * HOUR + 19 * DAY
        ]
    );
    // The advances' counts add up: every event since the first advance
    // is theirs but the commands' (a debit a day, the three holds, and the
    // three alerts those debits raised).
    let end = balance(&mut accounts, "maker").await;
    assert_eq!(boundaries, end.version - first_advance.version - 92 - 3 - 3,);
    assert_eq!(
        boundaries,
        (3 + 3 + 92 + 92 + 3 + 3) as i64,
        "cycle starts and their allowances, days and theirs, expiries, lapsed holds"
    );

    // Usage of the last full cycle, on the clock.
    let usage = accounts
        .get_usage(GetUsageRequest {
            account_id: "maker".into(),
            group_by: UsageGrouping::Action.into(),
            period: Some(get_usage_request::Period::CyclesAgo(1)),
            consistency: fully_consistent(),
            ..Default::default()
        })
        .await
        .expect("usage")
        .into_inner();
    assert_eq!(usage.test_clock_id, "sim");
    assert_eq!(
        (usage.period_start, usage.period_end),
        (at(AUG_1), at(SEP_1))
    );
    let total = usage.total.unwrap();
    assert_eq!(
        (total.actions, total.charged_millicredits),
        (31, 31 * 120_000)
    );

    // The server's own clock did not move, and the real account on it
    // crossed nothing.
    assert_eq!(server.clock().now(), wall_start);
    let real = balance(&mut accounts, "real").await;
    assert_eq!(real.test_clock_id, "");
    assert_eq!(real.available_millicredits, 3_100_000);
    assert_eq!(
        entries(&mut accounts, "real", LedgerEntryKind::DayStarted)
            .await
            .len(),
        1
    );
    assert_eq!(end.cycle_start, at(SEP_1));
    assert_eq!(end.consumed_millicredits, 92 * 120_000);

    // Usage reported after the fact is judged by the account's clock, not
    // the server's (months behind it): an hour ago on the clock is fine,
    // ten minutes ahead of it is not, nor eight days before it.
    let record = |key: &str, occurred_at: i64| UsageRecord {
        idempotency_key: key.into(),
        account_id: "maker".into(),
        member_id: "ops".into(),
        action: "image.generate".into(),
        dimensions: Some(Dimensions {
            images: 1,
            ..Default::default()
        }),
        occurred_at: at(occurred_at),
        ..Default::default()
    };
    let reported = metering
        .report_usage(ReportUsageRequest {
            records: vec![
                record("late-1", now - HOUR),
                record("ahead-1", now + 10 * 60),
                record("stale-1", now - 8 * DAY),
            ],
        })
        .await
        .expect("report")
        .into_inner();
    assert!(
        matches!(
            reported.results[0].outcome,
            Some(usage_record_result::Outcome::Charged(_))
        ),
        "{:?}",
        reported.results[0]
    );
    let Some(usage_record_result::Outcome::Refused(ahead)) = &reported.results[1].outcome else {
        panic!("{:?}", reported.results[1]);
    };
    assert_eq!(ahead.fields, vec!["occurred_at"]);
    let Some(usage_record_result::Outcome::Refused(stale)) = &reported.results[2].outcome else {
        panic!("{:?}", reported.results[2]);
    };
    assert_eq!(
        (stale.reason.as_str(), stale.fields.clone()),
        ("INVALID_ARGUMENT", vec!["occurred_at".to_owned()])
    );
    assert_eq!(
        balance(&mut accounts, "maker").await.consumed_millicredits,
        92 * 120_000 + 10_000
    );
}

#[tokio::test]
async fn a_deployment_may_refuse_test_clocks() {
    let server = TestServer::start_with(Options {
        refuse_test_clocks: true,
        ..Options::default()
    })
    .await;
    let mut clocks = server.test_clocks().await;
    let mut accounts = server.accounts().await;
    let refused = clocks
        .create_test_clock(CreateTestClockRequest {
            test_clock_id: "sim".into(),
            frozen_time: at(CLOCK_START),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&refused), "TEST_CLOCKS_REFUSED");
    let refused = accounts
        .open_account(OpenAccountRequest {
            idempotency_key: "open".into(),
            account_id: "acme".into(),
            test_clock_id: "sim".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "TEST_CLOCKS_REFUSED");
    let unknown = accounts
        .get_balance(GetBalanceRequest {
            account_id: "acme".into(),
            consistency: fully_consistent(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "nothing was opened");
}
