//! The five example configurations in `examples/`, each driven over gRPC
//! through the scenario its product's credit page describes, on both
//! stores. The files are included as shipped, so a change to an example
//! that breaks its page's promises fails here.

use std::time::Duration;

use tally_core::Timestamp;
use tally_e2e::*;
use tonic::transport::Channel;

struct Example {
    plans: &'static str,
    rate_card: &'static str,
}

const LOTSTECH: Example = Example {
    plans: include_str!("../../../examples/lotstech/plans.toml"),
    rate_card: include_str!("../../../examples/lotstech/rate-card.toml"),
};
const CAMPAIGNS: Example = Example {
    plans: include_str!("../../../examples/campaigns/plans.toml"),
    rate_card: include_str!("../../../examples/campaigns/rate-card.toml"),
};
const STOREFRONT: Example = Example {
    plans: include_str!("../../../examples/storefront/plans.toml"),
    rate_card: include_str!("../../../examples/storefront/rate-card.toml"),
};
const AGENCYPRO: Example = Example {
    plans: include_str!("../../../examples/agencypro/plans.toml"),
    rate_card: include_str!("../../../examples/agencypro/rate-card.toml"),
};
const SOPILOT: Example = Example {
    plans: include_str!("../../../examples/sopilot/plans.toml"),
    rate_card: include_str!("../../../examples/sopilot/rate-card.toml"),
};

const HOUR: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(86_400);

/// `START` (2026-01-15T00:00:00Z) in seconds.
const START_SECS: i64 = 1_768_435_200;

/// Midnight UTC `days` days after 2026-01-15 (negative: before).
fn day(days: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: START_SECS + days * 86_400,
        nanos: 0,
    })
}

fn days(n: u64) -> Duration {
    DAY * u32::try_from(n).unwrap()
}

async fn start(backend: Backend, example: &Example, start: Timestamp) -> TestServer {
    TestServer::start_with(Options {
        backend,
        rate_card: example.rate_card.into(),
        plans: Some(example.plans.into()),
        start,
        ..Options::default()
    })
    .await
}

fn kind(value: i32) -> BucketKind {
    BucketKind::try_from(value).unwrap()
}

/// Each bucket's kind and what is left in it, in deduction order.
fn buckets(balance: &Balance) -> Vec<(BucketKind, i64)> {
    balance
        .buckets
        .iter()
        .map(|b| (kind(b.kind), b.remaining_millicredits))
        .collect()
}

fn draws(draws: &[Draw]) -> Vec<(BucketKind, i64)> {
    draws
        .iter()
        .map(|d| (kind(d.kind), d.amount_millicredits))
        .collect()
}

fn tokens(input: i64, output: i64) -> Option<Dimensions> {
    Some(Dimensions {
        input_tokens: input,
        output_tokens: output,
        ..Default::default()
    })
}

fn images(n: i64) -> Option<Dimensions> {
    Some(Dimensions {
        images: n,
        ..Default::default()
    })
}

async fn open_on(
    accounts: &mut AccountServiceClient<Channel>,
    request: OpenAccountRequest,
) -> Balance {
    accounts
        .open_account(OpenAccountRequest {
            idempotency_key: format!("open-{}", request.account_id),
            ..request
        })
        .await
        .expect("account opens")
        .into_inner()
        .balance
        .expect("balance is set")
}

async fn try_debit(
    metering: &mut MeteringServiceClient<Channel>,
    account: &str,
    key: &str,
    action: &str,
    model: &str,
    dimensions: Option<Dimensions>,
) -> Result<DebitResponse, tonic::Status> {
    metering
        .debit(DebitRequest {
            idempotency_key: key.into(),
            account_id: account.into(),
            member_id: "ops".into(),
            action: action.into(),
            model: model.into(),
            amount_millicredits: None,
            dimensions,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Debits `action` priced by the rate card; returns the receipt and the
/// available balance after it.
async fn debit(
    metering: &mut MeteringServiceClient<Channel>,
    account: &str,
    key: &str,
    action: &str,
    model: &str,
    dimensions: Option<Dimensions>,
) -> (Receipt, i64) {
    let response = try_debit(metering, account, key, action, model, dimensions)
        .await
        .unwrap_or_else(|status| panic!("debit {key} ({action}): {status:?}"));
    (response.receipt.unwrap(), response.available_millicredits)
}

async fn try_reserve(
    metering: &mut MeteringServiceClient<Channel>,
    account: &str,
    key: &str,
    action: &str,
) -> Result<Reservation, tonic::Status> {
    metering
        .reserve(ReserveRequest {
            idempotency_key: key.into(),
            account_id: account.into(),
            member_id: "agent".into(),
            action: action.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().reservation.unwrap())
}

async fn commit(
    metering: &mut MeteringServiceClient<Channel>,
    account: &str,
    key: &str,
    reservation: &Reservation,
    dimensions: Option<Dimensions>,
) -> (Receipt, i64) {
    let response = metering
        .commit(CommitRequest {
            idempotency_key: key.into(),
            account_id: account.into(),
            reservation_id: reservation.reservation_id.clone(),
            amount_millicredits: None,
            dimensions,
        })
        .await
        .expect("a live reservation's commit succeeds")
        .into_inner();
    (response.receipt.unwrap(), response.available_millicredits)
}

async fn quote(
    metering: &mut MeteringServiceClient<Channel>,
    account: &str,
    items: &[(&str, i64, Option<Dimensions>)],
) -> QuoteResponse {
    metering
        .quote(QuoteRequest {
            account_id: account.into(),
            items: items
                .iter()
                .map(|(action, count, dimensions)| QuoteItem {
                    action: (*action).into(),
                    model: String::new(),
                    count: *count,
                    dimensions: dimensions.clone(),
                })
                .collect(),
        })
        .await
        .expect("quote")
        .into_inner()
}

async fn buy_pack(
    accounts: &mut AccountServiceClient<Channel>,
    account: &str,
    key: &str,
    pack: &str,
) -> GrantResponse {
    accounts
        .grant(GrantRequest {
            idempotency_key: key.into(),
            account_id: account.into(),
            pack: pack.into(),
            ..Default::default()
        })
        .await
        .expect("pack granted")
        .into_inner()
}

fn usd(micros_per_credit: i64) -> Option<CostBasis> {
    Some(CostBasis {
        currency_code: "USD".into(),
        micros_per_credit,
    })
}

fn assert_refused(result: Result<impl std::fmt::Debug, tonic::Status>, expected: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status), expected, "{status:?}");
}

/// Conservation, as SPEC §4.1 states it, on a balance read.
fn assert_conserved(b: &Balance) {
    assert_eq!(
        b.granted_millicredits
            - b.consumed_millicredits
            - b.expired_millicredits
            - b.voided_millicredits,
        b.available_millicredits + b.upcoming_millicredits + b.held_millicredits
            - b.overage_millicredits,
        "{b:?}"
    );
}

#[test]
fn every_example_file_parses() {
    for example in [&LOTSTECH, &CAMPAIGNS, &STOREFRONT, &AGENCYPRO, &SOPILOT] {
        tally_core::PlanCatalogue::from_toml_str(example.plans).unwrap();
        tally_core::RateCard::from_toml_str(example.rate_card).unwrap();
    }
}

/// SoPilot (seed 004): daily credits first, monthly second, permanent
/// (referral) credits last; unused daily credits are gone the next day; a
/// higher-cost model costs 2 instead of 1; an image on a higher model
/// costs more; a web search costs 1 per call.
#[tokio::test]
async fn sopilot_spends_daily_then_monthly_then_permanent_credits() {
    for backend in BOTH_BACKENDS {
        sopilot(backend).await;
    }
}

async fn sopilot(backend: Backend) {
    let server = start(backend, &SOPILOT, START).await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    let ws = "maker";

    // 2026-01-15T00:00Z is 16:00 on the 14th in Los Angeles: today ends at
    // local midnight, 08:00 UTC; the month at the same local time in February.
    let opened = open_on(
        &mut accounts,
        OpenAccountRequest {
            account_id: ws.into(),
            plan: "standard".into(),
            time_zone: "America/Los_Angeles".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        buckets(&opened),
        vec![
            (BucketKind::Daily, 100_000),
            (BucketKind::Monthly, 3_000_000)
        ]
    );
    let eight_am_utc = Some(prost_types::Timestamp {
        seconds: START_SECS + 8 * 3_600,
        nanos: 0,
    });
    assert_eq!(opened.buckets[0].expires_at, eight_am_utc);
    assert_eq!(opened.buckets[1].expires_at, day(31));
    assert_eq!(
        (
            opened.daily_allowance_millicredits,
            opened.monthly_allowance_millicredits
        ),
        (100_000, 3_000_000)
    );

    // A referral reward: permanent credits, no expiry.
    let referral = accounts
        .grant(GrantRequest {
            idempotency_key: "referral-1".into(),
            account_id: ws.into(),
            kind: BucketKind::Promotional.into(),
            source: GrantSource::Referral.into(),
            amount_millicredits: 50_000,
            reference: "referral reward".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bucket = referral.bucket.unwrap();
    assert_eq!(bucket.source, GrantSource::Referral as i32);
    assert_eq!(bucket.expires_at, None);
    let funded = referral.balance.unwrap();
    assert_eq!(
        buckets(&funded),
        vec![
            (BucketKind::Daily, 100_000),
            (BucketKind::Monthly, 3_000_000),
            (BucketKind::Promotional, 50_000),
        ]
    );
    assert_eq!(funded.available_millicredits, 3_150_000);

    // Day one: everyday work, all paid from the daily credits.
    let runs: [(&str, &str, Option<Dimensions>, i64); 7] = [
        ("x.engage", "", None, 1_000),
        // "If you use a higher-cost model, the same action may rise to: 2 credits"
        ("x.engage", "premium", None, 2_000),
        ("image.generate", "", images(1), 10_000),
        // An image on the higher image model costs more.
        ("image.generate", "pro", images(1), 20_000),
        // "web search ... 1 credit per call"
        ("tool.web-search", "", None, 1_000),
        // An AI call priced by input, output and context: 1 + 3 + 1 credits.
        (
            "content.generate",
            "",
            Some(Dimensions {
                input_tokens: 2_000,
                output_tokens: 1_500,
                context_tokens: 4_000,
                ..Default::default()
            }),
            5_000,
        ),
        (
            "content.generate",
            "premium",
            Some(Dimensions {
                input_tokens: 2_000,
                output_tokens: 1_500,
                context_tokens: 4_000,
                ..Default::default()
            }),
            10_000,
        ),
    ];
    for (i, (action, model, dimensions, cost)) in runs.into_iter().enumerate() {
        let (receipt, _) = debit(
            &mut metering,
            ws,
            &format!("day1-{i}"),
            action,
            model,
            dimensions.clone(),
        )
        .await;
        assert_eq!(receipt.charged_millicredits, cost, "{action} {model}");
        assert_eq!(draws(&receipt.draws), vec![(BucketKind::Daily, cost)]);
        assert_eq!(receipt.rate_card_version, 1);
        assert_eq!(receipt.dimensions, dimensions);
    }
    let day1 = balance(&mut accounts, ws).await;
    assert_eq!(
        buckets(&day1),
        vec![
            (BucketKind::Daily, 51_000),
            (BucketKind::Monthly, 3_000_000),
            (BucketKind::Promotional, 50_000),
        ]
    );

    // Local midnight: the 51 daily credits left are gone, 100 new ones came.
    server.advance(8 * HOUR);
    let next_day = balance(&mut accounts, ws).await;
    assert_eq!(
        buckets(&next_day),
        vec![
            (BucketKind::Daily, 100_000),
            (BucketKind::Monthly, 3_000_000),
            (BucketKind::Promotional, 50_000),
        ]
    );
    assert_eq!(next_day.expired_millicredits, 51_000);
    assert_eq!(
        next_day.buckets[0].expires_at,
        Some(prost_types::Timestamp {
            seconds: START_SECS + 32 * 3_600,
            nanos: 0,
        })
    );

    // Day two: a batch of 150 images on the higher model (20 credits each)
    // empties the daily credits, then draws on the monthly ones.
    let (receipt, _) = debit(
        &mut metering,
        ws,
        "day2-0",
        "image.generate",
        "pro",
        images(150),
    )
    .await;
    assert_eq!(receipt.charged_millicredits, 3_000_000);
    assert_eq!(
        draws(&receipt.draws),
        vec![
            (BucketKind::Daily, 100_000),
            (BucketKind::Monthly, 2_900_000)
        ]
    );
    // A long-context session on the premium model: (10 + 20 + 25) x 2 = 110
    // credits; the monthly credits run out, the permanent ones pay the rest.
    let (receipt, _) = debit(
        &mut metering,
        ws,
        "day2-1",
        "content.generate",
        "premium",
        Some(Dimensions {
            input_tokens: 20_000,
            output_tokens: 10_000,
            context_tokens: 100_000,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(receipt.charged_millicredits, 110_000);
    assert_eq!(
        draws(&receipt.draws),
        vec![
            (BucketKind::Monthly, 100_000),
            (BucketKind::Promotional, 10_000)
        ]
    );
    let (receipt, available) =
        debit(&mut metering, ws, "day2-2", "tool.web-search", "", None).await;
    assert_eq!(
        draws(&receipt.draws),
        vec![(BucketKind::Promotional, 1_000)]
    );
    assert_eq!(available, 39_000);
    let after = balance(&mut accounts, ws).await;
    assert_eq!(buckets(&after), vec![(BucketKind::Promotional, 39_000)]);
    assert_eq!(after.used_this_cycle_millicredits, 3_160_000);
    assert_eq!(after.consumed_millicredits, 3_160_000);
    assert_conserved(&after);

    // The next day brings fresh daily credits; the permanent ones stay.
    server.advance(DAY);
    let day3 = balance(&mut accounts, ws).await;
    assert_eq!(
        buckets(&day3),
        vec![
            (BucketKind::Daily, 100_000),
            (BucketKind::Promotional, 39_000)
        ]
    );
    assert_eq!(
        day3.expired_millicredits, 51_000,
        "day two's daily was spent"
    );

    // The billing anchor (16:00 on the 14th, Los Angeles) renews the monthly
    // credits; permanent credits do not reset on any schedule.
    server.advance(Duration::from_secs(
        u64::try_from(31 * 86_400 - 32 * 3_600).unwrap(),
    ));
    let renewed = balance(&mut accounts, ws).await;
    assert_eq!(renewed.cycle_start, day(31));
    assert_eq!(
        buckets(&renewed),
        vec![
            (BucketKind::Daily, 100_000),
            (BucketKind::Monthly, 3_000_000),
            (BucketKind::Promotional, 39_000),
        ]
    );
    assert_eq!(renewed.used_this_cycle_millicredits, 0);
    assert_conserved(&renewed);

    // The ledger explains the reset of day one.
    debit(&mut metering, ws, "day33-0", "x.engage", "", None).await;
    let entries = ledger(&mut accounts, ws).await;
    let first_expiry = entries
        .iter()
        .find(|e| e.kind == LedgerEntryKind::BucketExpired as i32)
        .expect("day one's daily credits expired");
    assert_eq!(first_expiry.amount_millicredits, 51_000);
    assert_eq!(first_expiry.occurred_at, eight_am_utc);
}

/// AgencyPro (seed 003): a 100-credit trial, then 500 / 2,000 / 10,000 a
/// month renewed on the billing date (the 15th) with no rollover; a task
/// running when the pool empties finishes past it, nothing new starts, and
/// the $10 pack of 1,000 credits pays the overage first.
#[tokio::test]
async fn agencypro_trial_monthly_refresh_overage_and_top_up() {
    for backend in BOTH_BACKENDS {
        agencypro(backend).await;
    }
}

async fn agencypro(backend: Backend) {
    // 2026-01-01T00:00Z: the trial ends on the 15th, the billing date.
    let jan_1 = Timestamp::from_millis(START.as_millis() - 14 * 86_400_000);
    let server = start(backend, &AGENCYPRO, jan_1).await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;

    // "500 / 2,000 / 10,000 on Basic / Pro / Plus"
    for (account, plan, allowance) in [
        ("light", "basic", 500_000),
        ("growing", "pro", 2_000_000),
        ("heavy", "plus", 10_000_000),
    ] {
        let opened = open_on(
            &mut accounts,
            OpenAccountRequest {
                account_id: account.into(),
                plan: plan.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(opened.plan, plan);
        assert_eq!(opened.monthly_allowance_millicredits, allowance);
        assert_eq!(buckets(&opened), vec![(BucketKind::Monthly, allowance)]);
    }

    // "The trial includes 100 credits."
    let ws = "studio";
    let opened = open_on(
        &mut accounts,
        OpenAccountRequest {
            account_id: ws.into(),
            plan: "basic".into(),
            trial: true,
            billing_anchor: Some(BillingAnchor {
                day: 15,
                hour: 0,
                minute: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(buckets(&opened), vec![(BucketKind::Trial, 100_000)]);
    assert_eq!(opened.buckets[0].expires_at, day(0));
    assert_eq!(opened.cycle_start, None, "the plan begins after the trial");
    assert_eq!(opened.monthly_allowance_millicredits, 500_000);

    // Trying all three capabilities on the trial credits.
    let trial_runs = [
        ("assistant.question", None, 1_000),
        // 0.4 + 1.2 credits, rounded up to 2.
        ("chatbot.exchange", tokens(2_000, 1_200), 2_000),
        // 3 steps + 0.5 credit of output, rounded up to 4.
        (
            "agent.task",
            Some(Dimensions {
                tool_calls: 3,
                output_tokens: 500,
                ..Default::default()
            }),
            4_000,
        ),
    ];
    for (i, (action, dimensions, cost)) in trial_runs.into_iter().enumerate() {
        let (receipt, _) = debit(
            &mut metering,
            ws,
            &format!("trial-{i}"),
            action,
            "",
            dimensions,
        )
        .await;
        assert_eq!(receipt.charged_millicredits, cost, "{action}");
        assert_eq!(draws(&receipt.draws), vec![(BucketKind::Trial, cost)]);
    }

    // The 15th: the trial's 93 credits left expire, the Basic allocation
    // begins and renews on the 15th of each month.
    server.advance(days(14));
    let cycle1 = balance(&mut accounts, ws).await;
    assert_eq!(buckets(&cycle1), vec![(BucketKind::Monthly, 500_000)]);
    assert_eq!((cycle1.cycle_start, cycle1.cycle_end), (day(0), day(31)));
    assert_eq!(cycle1.expired_millicredits, 93_000);
    assert_eq!(cycle1.used_this_cycle_millicredits, 0);

    // A month of work: 5 + 5 + 2 + 48 x 8 + 4 x 1 = 400 credits.
    let agent_task = Some(Dimensions {
        tool_calls: 6,
        output_tokens: 2_000,
        ..Default::default()
    });
    let month: [(&str, Option<Dimensions>, i64, usize); 5] = [
        ("agent.seo-audit", tokens(10_000, 3_000), 5_000, 1),
        // 6.4 credits, clamped to the page's 2-5.
        ("assistant.copywriting", tokens(2_000, 6_000), 5_000, 1),
        ("agent.summarize", tokens(8_000, 400), 2_000, 1),
        ("agent.task", agent_task.clone(), 8_000, 48),
        ("assistant.question", None, 1_000, 4),
    ];
    for (action, dimensions, cost, times) in month {
        for i in 0..times {
            let (receipt, _) = debit(
                &mut metering,
                ws,
                &format!("jan-{action}-{i}"),
                action,
                "",
                dimensions.clone(),
            )
            .await;
            assert_eq!(receipt.charged_millicredits, cost, "{action}");
        }
    }
    // "Total used this cycle (e.g., 1,247 / 2,000)"; "notify the admin at 80% usage".
    let used = balance(&mut accounts, ws).await;
    assert_eq!(
        (
            used.used_this_cycle_millicredits,
            used.monthly_allowance_millicredits
        ),
        (400_000, 500_000)
    );
    assert_eq!(
        used.used_this_cycle_millicredits * 100 / used.monthly_allowance_millicredits,
        80
    );
    assert_eq!(used.available_millicredits, 100_000);

    // "Credits refresh on your billing date each month" and "do not roll
    // over": on 15 February the 100 left expire and a fresh 500 arrive.
    server.advance(days(31));
    let cycle2 = balance(&mut accounts, ws).await;
    assert_eq!(buckets(&cycle2), vec![(BucketKind::Monthly, 500_000)]);
    assert_eq!((cycle2.cycle_start, cycle2.cycle_end), (day(31), day(59)));
    assert_eq!(cycle2.expired_millicredits, 93_000 + 100_000);
    assert_eq!(cycle2.used_this_cycle_millicredits, 0);

    // A heavy month: 60 agent tasks and 3 SEO audits leave 5 credits.
    for i in 0..60 {
        debit(
            &mut metering,
            ws,
            &format!("feb-task-{i}"),
            "agent.task",
            "",
            agent_task.clone(),
        )
        .await;
    }
    for i in 0..3 {
        debit(
            &mut metering,
            ws,
            &format!("feb-audit-{i}"),
            "agent.seo-audit",
            "",
            tokens(10_000, 3_000),
        )
        .await;
    }
    // A multi-step agent task starts, holding its minimum of 3 credits...
    let running = try_reserve(&mut metering, ws, "feb-long-task", "agent.task")
        .await
        .unwrap();
    assert_eq!(running.held_millicredits, 3_000);
    assert_eq!(draws(&running.draws), vec![(BucketKind::Monthly, 3_000)]);
    // ...while the chatbot spends the last 2.
    let (_, available) = debit(
        &mut metering,
        ws,
        "feb-chat",
        "chatbot.exchange",
        "",
        tokens(1_000, 1_500),
    )
    .await;
    assert_eq!(available, 0);

    // "you cannot start new AI tasks until topped up"
    let refused = try_reserve(&mut metering, ws, "feb-new-task", "agent.task").await;
    let status = refused.as_ref().unwrap_err().clone();
    assert_refused(refused, "INSUFFICIENT_CREDITS");
    assert_eq!(
        metadata(&status, "available_millicredits").as_deref(),
        Some("0")
    );
    assert_eq!(
        metadata(&status, "needed_millicredits").as_deref(),
        Some("3000")
    );
    assert_refused(
        try_debit(
            &mut metering,
            ws,
            "feb-question",
            "assistant.question",
            "",
            None,
        )
        .await,
        "INSUFFICIENT_CREDITS",
    );

    // "In-progress tasks complete": 12 steps + 3 credits of output = 15,
    // clamped to 8; the hold pays 3 and 5 become overage.
    let (receipt, available) = commit(
        &mut metering,
        ws,
        "feb-long-task-done",
        &running,
        Some(Dimensions {
            tool_calls: 12,
            output_tokens: 3_000,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(
        (
            receipt.charged_millicredits,
            receipt.overage_millicredits,
            receipt.released_millicredits
        ),
        (8_000, 5_000, 0)
    );
    assert_eq!(draws(&receipt.draws), vec![(BucketKind::Monthly, 3_000)]);
    assert_eq!(available, 0);
    let in_debt = balance(&mut accounts, ws).await;
    assert_eq!(
        (
            in_debt.available_millicredits,
            in_debt.held_millicredits,
            in_debt.overage_millicredits
        ),
        (0, 0, 5_000)
    );
    // Usage share past the allocation: 480 + 15 + 2 + 8 = 505 of 500.
    assert_eq!(
        (
            in_debt.used_this_cycle_millicredits,
            in_debt.monthly_allowance_millicredits
        ),
        (505_000, 500_000)
    );

    // "buy a 1,000-credit pack for $10": the overage is paid first.
    let pack = buy_pack(&mut accounts, ws, "feb-pack", "credits-1000").await;
    assert_eq!(pack.overage_repaid_millicredits, 5_000);
    let bucket = pack.bucket.unwrap();
    assert_eq!(
        (
            kind(bucket.kind),
            bucket.amount_millicredits,
            bucket.remaining_millicredits
        ),
        (BucketKind::TopUp, 1_000_000, 995_000)
    );
    assert_eq!(bucket.source, GrantSource::Purchase as i32);
    assert_eq!(bucket.cost_basis, usd(10_000));
    assert_eq!(bucket.expires_at, None);
    let topped_up = pack.balance.unwrap();
    assert_eq!(
        (
            topped_up.available_millicredits,
            topped_up.overage_millicredits
        ),
        (995_000, 0)
    );
    assert_conserved(&topped_up);

    // "Credits are available within seconds": new tasks start again.
    let next = try_reserve(&mut metering, ws, "feb-new-task", "agent.task")
        .await
        .expect("the refused reservation succeeds once topped up");
    assert_eq!(draws(&next.draws), vec![(BucketKind::TopUp, 3_000)]);

    let entries = ledger(&mut accounts, ws).await;
    let repaid = entries
        .iter()
        .find(|e| e.kind == LedgerEntryKind::OverageRepaid as i32)
        .expect("the overage repayment is in the ledger");
    assert_eq!(repaid.amount_millicredits, 5_000);
    assert_eq!(draws(&repaid.draws), vec![(BucketKind::TopUp, 5_000)]);
}

/// LotsTech (seed 000): Starter / Pro / Business with a 7-day trial and the
/// page's recommended caps as plan defaults; at the Pro cap drafting stops
/// while publishing and reviewing (free) go on; raising the cap resumes
/// drafting; nothing rolls over into the next cycle.
#[tokio::test]
async fn lotstech_monthly_cap_stops_drafting_not_publishing() {
    for backend in BOTH_BACKENDS {
        lotstech(backend).await;
    }
}

async fn lotstech(backend: Backend) {
    let server = start(backend, &LOTSTECH, START).await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;

    // "Starter ... 1,000 credits per month" capped at "800"; "Business ...
    // 7,000" capped at "5,500".
    for (account, plan, allowance, cap) in [
        ("solo", "starter", 1_000_000, 800_000),
        ("network", "business", 7_000_000, 5_500_000),
    ] {
        let opened = open_on(
            &mut accounts,
            OpenAccountRequest {
                account_id: account.into(),
                plan: plan.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(buckets(&opened), vec![(BucketKind::Monthly, allowance)]);
        assert_eq!(opened.spending_cap_millicredits, Some(cap));
    }

    // Pro with its 7-day free trial: the trial gets the Pro pool.
    let ws = "blog";
    let opened = open_on(
        &mut accounts,
        OpenAccountRequest {
            account_id: ws.into(),
            plan: "pro".into(),
            trial: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(buckets(&opened), vec![(BucketKind::Trial, 2_500_000)]);
    assert_eq!(opened.buckets[0].expires_at, day(7));
    assert_eq!(opened.spending_cap_millicredits, Some(2_000_000));
    assert_eq!(opened.monthly_allowance_millicredits, 2_500_000);

    // Three article drafts in the trial: 40, 45 and 50 credits.
    for (i, (dimensions, cost)) in [
        (tokens(20_000, 4_000), 40_000),
        (tokens(22_000, 4_600), 45_000),
        (tokens(25_000, 5_000), 50_000),
    ]
    .into_iter()
    .enumerate()
    {
        let (receipt, _) = debit(
            &mut metering,
            ws,
            &format!("trial-draft-{i}"),
            "article.draft",
            "",
            dimensions,
        )
        .await;
        assert_eq!(receipt.charged_millicredits, cost);
        assert_eq!(draws(&receipt.draws), vec![(BucketKind::Trial, cost)]);
    }

    // "Interlinking pass — low to medium depending on how many posts the
    // agent scans": 2 + 0.5 per post, rounded up, at most 15 (on the
    // Starter account, so the trial's figures below stay the page's).
    for (posts, cost) in [(3, 4_000), (12, 8_000), (40, 15_000)] {
        let scanned = Some(Dimensions {
            units: [("posts_scanned".to_string(), posts)].into(),
            ..Default::default()
        });
        let (receipt, _) = debit(
            &mut metering,
            "solo",
            &format!("interlink-{posts}"),
            "interlink.pass",
            "",
            scanned,
        )
        .await;
        assert_eq!(receipt.charged_millicredits, cost, "{posts} posts scanned");
    }

    // The trial ends; the paid cycle begins with the 2,500-credit pool and
    // renews on the same day each month.
    server.advance(days(7));
    let cycle = balance(&mut accounts, ws).await;
    assert_eq!(buckets(&cycle), vec![(BucketKind::Monthly, 2_500_000)]);
    assert_eq!((cycle.cycle_start, cycle.cycle_end), (day(7), day(38)));
    assert_eq!(cycle.expired_millicredits, 2_500_000 - 135_000);
    assert_eq!(cycle.used_this_cycle_millicredits, 0);
    assert_eq!(cycle.billing_anchor.unwrap().day, 22);

    // A content push: 39 full articles (50 each) and a list post (30).
    for i in 0..39 {
        let (receipt, _) = debit(
            &mut metering,
            ws,
            &format!("draft-{i}"),
            "article.draft",
            "",
            tokens(25_000, 5_000),
        )
        .await;
        assert_eq!(receipt.charged_millicredits, 50_000);
    }
    let (receipt, available) = debit(
        &mut metering,
        ws,
        "list-0",
        "list-post.draft",
        "",
        tokens(10_000, 4_000),
    )
    .await;
    assert_eq!(receipt.charged_millicredits, 30_000);
    assert_eq!(available, 520_000);

    // 1,980 used of a 2,000 cap: a new draft (held at its 50-credit top, or
    // debited at 40) would pass the cap, though the pool has 520 left.
    let refused = try_reserve(&mut metering, ws, "draft-39", "article.draft").await;
    let status = refused.as_ref().unwrap_err().clone();
    assert_refused(refused, "SPENDING_CAP_REACHED");
    for (key, value) in [
        ("spending_cap_millicredits", "2000000"),
        ("used_this_cycle_millicredits", "1980000"),
        ("needed_millicredits", "50000"),
    ] {
        assert_eq!(metadata(&status, key).as_deref(), Some(value), "{key}");
    }
    assert_refused(
        try_debit(
            &mut metering,
            ws,
            "draft-39",
            "article.draft",
            "",
            tokens(20_000, 4_000),
        )
        .await,
        "SPENDING_CAP_REACHED",
    );
    let estimate = quote(
        &mut metering,
        ws,
        &[("article.draft", 1, tokens(20_000, 4_000))],
    )
    .await;
    assert_eq!(
        (
            estimate.total_millicredits,
            estimate.affordable,
            estimate.within_cap
        ),
        (40_000, true, false)
    );

    // "Publishing from existing drafts is not blocked"; "Reviewing a draft
    // ... does not spend credits". Both are recorded at 0.
    for (key, action) in [("publish-0", "post.publish"), ("review-0", "draft.review")] {
        let (receipt, available) = debit(&mut metering, ws, key, action, "", None).await;
        assert_eq!(receipt.charged_millicredits, 0, "{action}");
        assert!(receipt.draws.is_empty());
        assert_eq!(available, 520_000);
    }
    // A small brief still fits under the cap (1,985 of 2,000).
    let (receipt, _) = debit(
        &mut metering,
        ws,
        "brief-0",
        "brief.create",
        "",
        tokens(5_000, 0),
    )
    .await;
    assert_eq!(receipt.charged_millicredits, 5_000);

    // "The cap is adjustable any time, so you can raise it during a
    // content push": drafting resumes.
    let raised = accounts
        .set_spending_cap(SetSpendingCapRequest {
            idempotency_key: "cap-2500".into(),
            account_id: ws.into(),
            spending_cap_millicredits: Some(2_500_000),
        })
        .await
        .unwrap()
        .into_inner()
        .balance
        .unwrap();
    assert_eq!(raised.spending_cap_millicredits, Some(2_500_000));
    let draft = try_reserve(&mut metering, ws, "draft-39", "article.draft")
        .await
        .expect("the refused draft starts once the cap is raised");
    assert_eq!(draft.held_millicredits, 50_000);
    let (receipt, available) = commit(
        &mut metering,
        ws,
        "draft-39-done",
        &draft,
        tokens(22_000, 4_600),
    )
    .await;
    assert_eq!(
        (receipt.charged_millicredits, receipt.released_millicredits),
        (45_000, 5_000)
    );
    assert_eq!(available, 470_000);
    let end_of_cycle = balance(&mut accounts, ws).await;
    assert_eq!(end_of_cycle.used_this_cycle_millicredits, 2_030_000);

    // "Unused credits from the previous month do not carry over."
    server.advance(days(31));
    let next = balance(&mut accounts, ws).await;
    assert_eq!(buckets(&next), vec![(BucketKind::Monthly, 2_500_000)]);
    assert_eq!(next.cycle_start, day(38));
    assert_eq!(next.expired_millicredits, 2_365_000 + 470_000);
    assert_eq!(next.used_this_cycle_millicredits, 0);
    assert_eq!(
        next.spending_cap_millicredits,
        Some(2_500_000),
        "the workspace's own cap stays until it changes it"
    );
    assert_conserved(&next);
}

/// The social-campaign platform (seed 001): no subscription, credit
/// packages with a cost basis that expire after 12 months; a campaign
/// estimate says whether the balance covers it; an operation without
/// enough credits is blocked and goes through once a package is bought.
#[tokio::test]
async fn campaigns_packages_estimates_and_expiry() {
    for backend in BOTH_BACKENDS {
        campaigns(backend).await;
    }
}

async fn campaigns(backend: Backend) {
    let server = start(backend, &CAMPAIGNS, START).await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    let ws = "agency";

    let opened = open_on(
        &mut accounts,
        OpenAccountRequest {
            account_id: ws.into(),
            plan: "pay-as-you-go".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (
            opened.available_millicredits,
            opened.monthly_allowance_millicredits
        ),
        (0, 0)
    );
    assert!(opened.buckets.is_empty());

    // "Single platform, 1 week | 10-20 credits": an AI strategy, seven
    // posts and two optimization passes.
    let campaign: [(&str, i64, Option<Dimensions>); 3] = [
        ("campaign.create", 1, tokens(8_000, 6_000)),
        ("content.post", 7, None),
        ("content.optimize", 2, tokens(2_000, 500)),
    ];
    let estimate = quote(&mut metering, ws, &campaign).await;
    let lines: Vec<(i64, i64)> = estimate
        .lines
        .iter()
        .map(|l| (l.unit_price_millicredits, l.total_millicredits))
        .collect();
    assert_eq!(lines, vec![(8_000, 8_000), (1_000, 7_000), (1_000, 2_000)]);
    assert_eq!(estimate.total_millicredits, 17_000);
    assert!(!estimate.affordable);

    // "If you try an operation without enough credits: ... Operation is blocked"
    let blocked = try_debit(&mut metering, ws, "post-0", "content.post", "", None).await;
    let status = blocked.as_ref().unwrap_err().clone();
    assert_refused(blocked, "INSUFFICIENT_CREDITS");
    assert_eq!(
        metadata(&status, "needed_millicredits").as_deref(),
        Some("1000")
    );

    // "Prompt to purchase more credits": the Starter package, 100 credits
    // for $10, valid for 12 months.
    let starter = buy_pack(&mut accounts, ws, "buy-starter", "starter").await;
    let starter_bucket = starter.bucket.unwrap();
    assert_eq!(
        (
            kind(starter_bucket.kind),
            starter_bucket.amount_millicredits
        ),
        (BucketKind::TopUp, 100_000)
    );
    assert_eq!(starter_bucket.cost_basis, usd(100_000));
    assert_eq!(starter_bucket.expires_at, day(365));
    assert_eq!(starter_bucket.reference, "pack starter");

    // "Option to continue when balance is added": the same request again.
    let estimate = quote(&mut metering, ws, &campaign).await;
    assert!(estimate.affordable);
    let (receipt, available) = debit(&mut metering, ws, "post-0", "content.post", "", None).await;
    assert_eq!(receipt.charged_millicredits, 1_000);
    assert_eq!(available, 99_000);

    // The rest of the campaign costs what the estimate said.
    debit(
        &mut metering,
        ws,
        "strategy",
        "campaign.create",
        "",
        tokens(8_000, 6_000),
    )
    .await;
    for i in 1..7 {
        debit(
            &mut metering,
            ws,
            &format!("post-{i}"),
            "content.post",
            "",
            None,
        )
        .await;
    }
    for i in 0..2 {
        debit(
            &mut metering,
            ws,
            &format!("optimize-{i}"),
            "content.optimize",
            "",
            tokens(2_000, 500),
        )
        .await;
    }
    // "Simple questions | 0-1 credits": a short one is free, a longer one 1.
    let (short, _) = debit(
        &mut metering,
        ws,
        "ask-0",
        "assistant.question",
        "",
        tokens(500, 300),
    )
    .await;
    let (longer, available) = debit(
        &mut metering,
        ws,
        "ask-1",
        "assistant.question",
        "",
        tokens(1_000, 400),
    )
    .await;
    assert_eq!(
        (short.charged_millicredits, longer.charged_millicredits),
        (0, 1_000)
    );
    assert_eq!(available, 100_000 - 17_000 - 1_000);

    // Four months later the Max package: 2,350 credits for $200.
    server.advance(days(120));
    let max = buy_pack(&mut accounts, ws, "buy-max", "max").await;
    let max_bucket = max.bucket.unwrap();
    assert_eq!(max_bucket.amount_millicredits, 2_350_000);
    assert_eq!(max_bucket.cost_basis, usd(85_106));
    assert_eq!(max_bucket.expires_at, day(485));
    // The package that expires first is spent first.
    let (receipt, _) = debit(&mut metering, ws, "rss-0", "content.rss-item", "", None).await;
    assert_eq!(receipt.draws.len(), 1);
    assert_eq!(receipt.draws[0].grant_id, starter_bucket.grant_id);

    // "Purchased credits are valid for 12 months": the 81 Starter credits
    // left expire on 2027-01-15; the Max package is untouched.
    server.advance(days(245));
    let year_on = balance(&mut accounts, ws).await;
    assert_eq!(buckets(&year_on), vec![(BucketKind::TopUp, 2_350_000)]);
    assert_eq!(year_on.expired_millicredits, 81_000);
    // "Lifetime Used".
    assert_eq!(year_on.consumed_millicredits, 19_000);
    assert_conserved(&year_on);

    let (receipt, _) = debit(&mut metering, ws, "rss-1", "content.rss-item", "", None).await;
    assert_eq!(receipt.draws[0].grant_id, max_bucket.grant_id);
    let expiries = accounts
        .list_ledger(ListLedgerRequest {
            account_id: ws.into(),
            kinds: vec![LedgerEntryKind::BucketExpired.into()],
            consistency: fully_consistent(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let expiries: Vec<(String, i64, Option<prost_types::Timestamp>)> = expiries
        .into_iter()
        .map(|e| (e.grant_id, e.amount_millicredits, e.occurred_at))
        .collect();
    assert_eq!(
        expiries,
        vec![(starter_bucket.grant_id.clone(), 81_000, day(365))]
    );

    // "The system warns you when: Balance drops below 100 credits /
    // Balance reaches critical low (10 credits)": one drop from 100 to 5
    // crosses both, a warning and a critical alert.
    let low = "campaigns-low";
    open_on(
        &mut accounts,
        OpenAccountRequest {
            account_id: low.into(),
            plan: "pay-as-you-go".into(),
            ..Default::default()
        },
    )
    .await;
    grant(&mut accounts, low, "pack", BucketKind::TopUp, 100_000).await;
    metering
        .debit(DebitRequest {
            idempotency_key: "big-campaign".into(),
            account_id: low.into(),
            member_id: "agent".into(),
            action: "content.post".into(),
            amount_millicredits: Some(95_000),
            ..Default::default()
        })
        .await
        .expect("debit");
    let alerts: Vec<(i64, i32)> = accounts
        .list_ledger(ListLedgerRequest {
            account_id: low.into(),
            kinds: vec![LedgerEntryKind::Alert.into()],
            consistency: fully_consistent(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .filter_map(|e| e.alert)
        .map(|a| (a.threshold_millicredits, a.severity))
        .collect();
    assert_eq!(
        alerts,
        vec![
            (100_000, AlertSeverity::Warning as i32),
            (10_000, AlertSeverity::Critical as i32),
        ]
    );
}

/// The store/drafts app (seed 002): the Free plan's 10 monthly credits;
/// draft 2, regenerate 2, cover 1, rewrite 1, research 0; content + cover
/// = 3; top-ups add headroom on top of the monthly allowance; the ledger
/// shows grants and debits.
#[tokio::test]
async fn storefront_free_plan_prices_top_ups_and_ledger() {
    for backend in BOTH_BACKENDS {
        storefront(backend).await;
    }
}

async fn storefront(backend: Backend) {
    let server = start(backend, &STOREFRONT, START).await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    let ws = "store";

    let opened = open_on(
        &mut accounts,
        OpenAccountRequest {
            account_id: ws.into(),
            plan: "free".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(buckets(&opened), vec![(BucketKind::Monthly, 10_000)]);
    assert_eq!(opened.cycle_end, day(31));

    // "Topic research does not use credits"
    let (receipt, available) =
        debit(&mut metering, ws, "research-0", "topic.research", "", None).await;
    assert_eq!(receipt.charged_millicredits, 0);
    assert!(receipt.draws.is_empty());
    assert_eq!(available, 10_000);

    // "If you generate content together with a cover image, budget 3 credits total."
    let content_and_cover: [(&str, i64, Option<Dimensions>); 2] =
        [("draft.generate", 1, None), ("cover.generate", 1, None)];
    let estimate = quote(&mut metering, ws, &content_and_cover).await;
    assert_eq!(
        (estimate.total_millicredits, estimate.affordable),
        (3_000, true)
    );

    for (key, action, cost, left) in [
        ("draft-0", "draft.generate", 2_000, 8_000),
        ("cover-0", "cover.generate", 1_000, 7_000),
        ("regen-0", "draft.regenerate", 2_000, 5_000),
        ("rewrite-0", "content.rewrite", 1_000, 4_000),
    ] {
        let (receipt, available) = debit(&mut metering, ws, key, action, "", None).await;
        assert_eq!(
            (receipt.charged_millicredits, available),
            (cost, left),
            "{action}"
        );
    }

    // "A successful automation run that saves a draft uses 2 credits too":
    // a run that saves is committed, a run that fails is released.
    let saved = try_reserve(&mut metering, ws, "auto-0", "automation.run")
        .await
        .unwrap();
    assert_eq!(saved.held_millicredits, 2_000);
    let (receipt, available) = commit(&mut metering, ws, "auto-0-saved", &saved, None).await;
    assert_eq!((receipt.charged_millicredits, available), (2_000, 2_000));
    let failed = try_reserve(&mut metering, ws, "auto-1", "automation.run")
        .await
        .unwrap();
    let released = metering
        .release(ReleaseRequest {
            idempotency_key: "auto-1-failed".into(),
            account_id: ws.into(),
            reservation_id: failed.reservation_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            released.released_millicredits,
            released.available_millicredits
        ),
        (2_000, 2_000)
    );

    // 2 credits left: content + cover no longer fits.
    let estimate = quote(&mut metering, ws, &content_and_cover).await;
    assert_eq!(
        (estimate.available_millicredits, estimate.affordable),
        (2_000, false)
    );

    // "Top-up packs are one-time credits added on top of the monthly allowance."
    let top_up = buy_pack(&mut accounts, ws, "top-up-0", "top-up-50").await;
    assert_eq!(
        buckets(top_up.balance.as_ref().unwrap()),
        vec![(BucketKind::Monthly, 2_000), (BucketKind::TopUp, 50_000)]
    );
    let (draft, _) = debit(&mut metering, ws, "draft-1", "draft.generate", "", None).await;
    let (cover, available) = debit(&mut metering, ws, "cover-1", "cover.generate", "", None).await;
    assert_eq!(draws(&draft.draws), vec![(BucketKind::Monthly, 2_000)]);
    assert_eq!(draws(&cover.draws), vec![(BucketKind::TopUp, 1_000)]);
    assert_eq!(available, 49_000);

    // Next month the allowance is back, and the top-up is still there.
    server.advance(days(31));
    let next = balance(&mut accounts, ws).await;
    assert_eq!(
        buckets(&next),
        vec![(BucketKind::Monthly, 10_000), (BucketKind::TopUp, 49_000)]
    );
    assert_eq!(next.available_millicredits, 59_000);
    assert_eq!(
        next.expired_millicredits, 0,
        "the monthly credits were all spent"
    );
    debit(&mut metering, ws, "research-1", "topic.research", "", None).await;

    // "The Activity Ledger in Billing shows both usage debits and credit grants"
    let entries = accounts
        .list_ledger(ListLedgerRequest {
            account_id: ws.into(),
            kinds: vec![LedgerEntryKind::Grant.into(), LedgerEntryKind::Debit.into()],
            consistency: fully_consistent(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let activity: Vec<(LedgerEntryKind, String, i64)> = entries
        .iter()
        .map(|e| {
            let what = if e.kind == LedgerEntryKind::Grant as i32 {
                kind(e.bucket_kind).as_str_name().to_owned()
            } else {
                e.action.clone()
            };
            (
                LedgerEntryKind::try_from(e.kind).unwrap(),
                what,
                e.amount_millicredits,
            )
        })
        .collect();
    let grant = |what: &str, amount| (LedgerEntryKind::Grant, what.to_owned(), amount);
    let debit = |what: &str, amount| (LedgerEntryKind::Debit, what.to_owned(), amount);
    assert_eq!(
        activity,
        vec![
            grant("BUCKET_KIND_MONTHLY", 10_000),
            debit("topic.research", 0),
            debit("draft.generate", 2_000),
            debit("cover.generate", 1_000),
            debit("draft.regenerate", 2_000),
            debit("content.rewrite", 1_000),
            debit("automation.run", 2_000),
            grant("BUCKET_KIND_TOP_UP", 50_000),
            debit("draft.generate", 2_000),
            debit("cover.generate", 1_000),
            grant("BUCKET_KIND_MONTHLY", 10_000),
            debit("topic.research", 0),
        ]
    );
}
