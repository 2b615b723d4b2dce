//! The read side over gRPC, on both stores: consistency tokens give
//! read-your-writes, GetUsage groups and estimates a runway, ListLedger
//! filters and pages, and WatchAccount resumes where a watcher left off.

use std::time::Duration;

use tally_e2e::*;
use tokio_stream::StreamExt;
use tonic::Request;

const DAY: Duration = Duration::from_secs(86_400);

const PLANS: &str = r#"
version = 1

[plans.pro]
monthly_allowance_millicredits = 100000
spending_cap_millicredits = 90000

[plans.pro.alerts]
low_balance_millicredits = [50000]
usage_percent = [80]
"#;

const CARD: &str = r#"
version = 1

[actions."article.draft"]
price_millicredits = 2000
capability = "writing"

[actions."article.edit"]
price_millicredits = 1000
capability = "writing"

[actions."image.render"]
price_millicredits = 3000
"#;

fn options(backend: Backend) -> Options {
    Options {
        backend,
        rate_card: CARD.into(),
        plans: Some(PLANS.into()),
        ..Options::default()
    }
}

fn at_least_as_fresh(token: &str) -> Option<ReadConsistency> {
    Some(ReadConsistency {
        requirement: Some(read_consistency::Requirement::AtLeastAsFresh(token.into())),
    })
}

async fn open_pro(
    accounts: &mut AccountServiceClient<tonic::transport::Channel>,
    id: &str,
) -> String {
    accounts
        .open_account(OpenAccountRequest {
            idempotency_key: "open".into(),
            account_id: id.into(),
            plan: "pro".into(),
            time_zone: "Europe/Berlin".into(),
            ..Default::default()
        })
        .await
        .expect("opens")
        .into_inner()
        .consistency_token
}

fn debit(account: &str, key: &str, member: &str, action: &str, model: &str) -> DebitRequest {
    DebitRequest {
        idempotency_key: key.into(),
        account_id: account.into(),
        member_id: member.into(),
        action: action.into(),
        model: model.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn consistency_tokens_give_read_your_writes() {
    for backend in BOTH_BACKENDS {
        let server = TestServer::start_with(options(backend)).await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        open_pro(&mut accounts, "acme").await;
        for round in 0..20 {
            let charged = metering
                .debit(debit(
                    "acme",
                    &format!("d{round}"),
                    "alice",
                    "article.draft",
                    "",
                ))
                .await
                .expect("debit")
                .into_inner();
            // Straight after each write, on its token: never stale.
            let balance = accounts
                .get_balance(GetBalanceRequest {
                    account_id: "acme".into(),
                    consistency: at_least_as_fresh(&charged.consistency_token),
                })
                .await
                .expect("balance")
                .into_inner()
                .balance
                .unwrap();
            assert_eq!(
                balance.used_this_cycle_millicredits,
                2_000 * (round + 1),
                "{backend:?}"
            );
            let ledger = accounts
                .list_ledger(ListLedgerRequest {
                    account_id: "acme".into(),
                    kinds: vec![LedgerEntryKind::Debit.into()],
                    consistency: at_least_as_fresh(&charged.consistency_token),
                    ..Default::default()
                })
                .await
                .expect("ledger")
                .into_inner();
            assert_eq!(ledger.entries.len() as i64, round + 1, "{backend:?}");
        }

        // A token that is not one, and one from the future: refused, and
        // waited for no longer than the call's deadline.
        let forged = accounts
            .get_balance(GetBalanceRequest {
                account_id: "acme".into(),
                consistency: at_least_as_fresh("yesterday"),
            })
            .await
            .unwrap_err();
        assert_eq!(forged.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            violated_fields(&forged),
            vec!["consistency.at_least_as_fresh"]
        );
        let mut future = Request::new(GetBalanceRequest {
            account_id: "acme".into(),
            consistency: at_least_as_fresh("999999999999.999999999999"),
        });
        // Two seconds: the server answers 200 ms before the deadline, so
        // its answer beats the client's own timer even on a busy machine.
        future.set_timeout(Duration::from_secs(2));
        let late = accounts.get_balance(future).await.unwrap_err();
        assert_eq!(late.code(), tonic::Code::DeadlineExceeded, "{late:?}");

        // An account no one opened is unknown, also fully consistently.
        let unknown = accounts
            .get_balance(GetBalanceRequest {
                account_id: "nobody".into(),
                consistency: fully_consistent(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }
}

#[tokio::test]
async fn usage_is_grouped_every_way_with_a_runway() {
    for backend in BOTH_BACKENDS {
        usage(backend).await;
    }
}

async fn usage(backend: Backend) {
    let server = TestServer::start_with(options(backend)).await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open_pro(&mut accounts, "acme").await;
    // Day 1 (2026-01-15 in Berlin): alice drafts twice with gpt, bob renders.
    for (key, member, action, model) in [
        ("a1", "alice", "article.draft", "gpt"),
        ("a2", "alice", "article.draft", "gpt"),
        ("b1", "bob", "image.render", ""),
    ] {
        metering
            .debit(debit("acme", key, member, action, model))
            .await
            .expect("debit");
    }
    server.advance(DAY);
    // Day 2: bob edits.
    metering
        .debit(debit("acme", "b2", "bob", "article.edit", "claude"))
        .await
        .expect("debit");

    let usage = |group_by: UsageGrouping| GetUsageRequest {
        account_id: "acme".into(),
        group_by: group_by.into(),
        consistency: fully_consistent(),
        ..Default::default()
    };
    let groups = |response: &GetUsageResponse| -> Vec<(String, i64, i64)> {
        response
            .groups
            .iter()
            .map(|g| {
                let t = g.totals.as_ref().unwrap();
                (g.key.clone(), t.charged_millicredits, t.actions)
            })
            .collect()
    };
    let by_action = accounts
        .get_usage(usage(UsageGrouping::Action))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        groups(&by_action),
        vec![
            ("article.draft".into(), 4_000, 2),
            ("article.edit".into(), 1_000, 1),
            ("image.render".into(), 3_000, 1),
        ],
        "{backend:?}"
    );
    assert_eq!(
        by_action.total.as_ref().unwrap().charged_millicredits,
        8_000
    );
    let by_capability = accounts
        .get_usage(usage(UsageGrouping::Capability))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        groups(&by_capability),
        vec![("image".into(), 3_000, 1), ("writing".into(), 5_000, 3)]
    );
    let by_member = accounts
        .get_usage(usage(UsageGrouping::Member))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        groups(&by_member),
        vec![("alice".into(), 4_000, 2), ("bob".into(), 4_000, 2)]
    );
    let by_model = accounts
        .get_usage(usage(UsageGrouping::Model))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        groups(&by_model),
        vec![
            ("".into(), 3_000, 1),
            ("claude".into(), 1_000, 1),
            ("gpt".into(), 4_000, 2)
        ]
    );
    let by_day = accounts
        .get_usage(usage(UsageGrouping::Day))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        groups(&by_day),
        vec![
            ("2026-01-15".into(), 7_000, 3),
            ("2026-01-16".into(), 1_000, 1)
        ]
    );
    // The cycle opened at the start: it is the period.
    let opened = START.as_millis() / 1_000;
    assert_eq!(by_day.period_start.as_ref().unwrap().seconds, opened);

    // A range of days: the second only.
    let mut one_day = usage(UsageGrouping::Member);
    one_day.period = Some(get_usage_request::Period::Days(DayRange {
        first_day: "2026-01-16".into(),
        last_day: "2026-01-16".into(),
    }));
    let second = accounts.get_usage(one_day).await.unwrap().into_inner();
    assert_eq!(groups(&second), vec![("bob".into(), 1_000, 1)]);

    // Runway at the pace of the last 7 days: 8 credits / 7 per day.
    let runway = by_day.runway.unwrap();
    assert_eq!(runway.window_days, 7);
    assert_eq!(runway.pace_millicredits_per_day, 8_000 / 7);
    let now_ms = START.as_millis() + DAY.as_millis() as i64;
    let available = 100_000 - 8_000;
    let expected_out = now_ms + (available as i128 * 86_400_000 / (8_000 / 7) as i128) as i64;
    let runs_out = runway.runs_out_at.unwrap();
    assert_eq!(
        runs_out.seconds * 1_000 + i64::from(runs_out.nanos) / 1_000_000,
        expected_out
    );
    // The cap (90 credits) is 82 credits away: ~72 days, after the cycle ends.
    assert_eq!(runway.hits_cap_at, None);

    // The next cycle: the previous one keeps its usage.
    server.advance(35 * DAY);
    metering
        .debit(debit("acme", "c1", "carol", "image.render", ""))
        .await
        .expect("debit");
    let current = accounts
        .get_usage(usage(UsageGrouping::Member))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(groups(&current), vec![("carol".into(), 3_000, 1)]);
    let mut previous = usage(UsageGrouping::Member);
    previous.period = Some(get_usage_request::Period::CyclesAgo(1));
    let previous = accounts.get_usage(previous).await.unwrap().into_inner();
    assert_eq!(
        groups(&previous),
        vec![("alice".into(), 4_000, 2), ("bob".into(), 4_000, 2)]
    );
    assert_eq!(previous.period_start.as_ref().unwrap().seconds, opened);
    assert_eq!(previous.period_end, current.period_start);

    // Bad input names its fields and reads nothing.
    let mut bad = usage(UsageGrouping::Unspecified);
    bad.runway_days = 91;
    bad.period = Some(get_usage_request::Period::Days(DayRange {
        first_day: "2026-02-30".into(),
        last_day: "2026-03-01".into(),
    }));
    let refused = accounts.get_usage(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let mut fields = violated_fields(&refused);
    fields.sort();
    assert_eq!(fields, vec!["days.first_day", "group_by", "runway_days"]);
    let mut far_back = usage(UsageGrouping::Day);
    far_back.period = Some(get_usage_request::Period::CyclesAgo(5));
    let refused = accounts.get_usage(far_back).await.unwrap_err();
    assert_eq!(violated_fields(&refused), vec!["cycles_ago"]);
}

#[tokio::test]
async fn a_watcher_that_disconnects_resumes_in_order() {
    for backend in BOTH_BACKENDS {
        watch(backend).await;
    }
}

async fn next(stream: &mut tonic::Streaming<WatchAccountResponse>) -> WatchAccountResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message in time")
        .expect("the stream is open")
        .expect("a message, not an error")
}

async fn watch(backend: Backend) {
    let server = TestServer::start_with(options(backend)).await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open_pro(&mut accounts, "acme").await;

    let mut stream = accounts
        .watch_account(WatchAccountRequest {
            account_id: "acme".into(),
            after_sequence: None,
        })
        .await
        .expect("watch")
        .into_inner();
    // From now: the balance first, with no entry.
    let first = next(&mut stream).await;
    assert!(first.entry.is_none());
    assert_eq!(
        first.balance.as_ref().unwrap().available_millicredits,
        100_000
    );
    let mut last = first.sequence;

    metering
        .debit(debit("acme", "d1", "alice", "image.render", ""))
        .await
        .unwrap();
    let seen = next(&mut stream).await;
    assert_eq!(seen.sequence, last + 1);
    assert_eq!(
        seen.entry.as_ref().unwrap().kind,
        LedgerEntryKind::Debit as i32
    );
    assert_eq!(
        seen.balance.as_ref().unwrap().available_millicredits,
        97_000
    );
    last = seen.sequence;
    drop(stream);

    // While nobody watches: debits that cross the low-balance level (50
    // credits) and 80 % of the allowance (81 of 100 credits used), then a
    // new cycle.
    for i in 0..26 {
        metering
            .debit(debit(
                "acme",
                &format!("gone{i}"),
                "bob",
                "image.render",
                "",
            ))
            .await
            .unwrap();
    }
    server.advance(35 * DAY);
    metering
        .debit(debit("acme", "after", "bob", "article.edit", ""))
        .await
        .unwrap();
    let history = ledger(&mut accounts, "acme").await;
    let missed: Vec<i64> = history
        .iter()
        .map(|e| e.sequence)
        .filter(|s| *s > last)
        .collect();

    // Resuming after the last sequence seen: exactly what was missed, in
    // order, then what happens next.
    let mut stream = accounts
        .watch_account(WatchAccountRequest {
            account_id: "acme".into(),
            after_sequence: Some(last),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut received = Vec::new();
    let mut alerts = Vec::new();
    for _ in 0..missed.len() {
        let message = next(&mut stream).await;
        let entry = message.entry.as_ref().expect("an entry");
        assert_eq!(entry.sequence, message.sequence);
        let expected = history
            .iter()
            .find(|e| e.sequence == message.sequence)
            .unwrap();
        assert_eq!(entry, expected, "the entry the ledger shows");
        assert_eq!(
            message.balance.as_ref().unwrap().available_millicredits,
            expected.available_after_millicredits
        );
        if let Some(alert) = message.alert {
            alerts.push(AlertKind::try_from(alert.kind).unwrap());
        }
        received.push(message.sequence);
    }
    assert_eq!(received, missed, "{backend:?}");
    assert!(alerts.contains(&AlertKind::LowBalance), "{alerts:?}");
    assert!(alerts.contains(&AlertKind::UsageThreshold), "{alerts:?}");
    assert!(alerts.contains(&AlertKind::CycleReset), "{alerts:?}");

    metering
        .debit(debit("acme", "live", "carol", "article.edit", ""))
        .await
        .unwrap();
    let live = next(&mut stream).await;
    assert_eq!(live.sequence, received.last().unwrap() + 1);
    assert_eq!(live.entry.unwrap().member_id, "carol");

    // A sequence the account has not reached is refused, naming the field.
    let ahead = accounts
        .watch_account(WatchAccountRequest {
            account_id: "acme".into(),
            after_sequence: Some(1_000_000),
        })
        .await
        .unwrap_err();
    assert_eq!(ahead.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&ahead), vec!["after_sequence"]);

    // An unknown account cannot be watched.
    let unknown = accounts
        .watch_account(WatchAccountRequest {
            account_id: "nobody".into(),
            after_sequence: None,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn ledger_filters_and_pages_are_stable_under_appends() {
    let server = TestServer::start_with(options(Backend::Embedded)).await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open_pro(&mut accounts, "acme").await;
    let mut reservation = None;
    for i in 0..6 {
        let member = if i % 2 == 0 { "alice" } else { "bob" };
        metering
            .debit(debit("acme", &format!("d{i}"), member, "article.edit", ""))
            .await
            .unwrap();
        if i == 3 {
            let held = metering
                .reserve(ReserveRequest {
                    idempotency_key: "hold".into(),
                    account_id: "acme".into(),
                    member_id: "bob".into(),
                    action: "image.render".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            reservation = held.reservation.map(|r| r.reservation_id);
        }
    }
    metering
        .release(ReleaseRequest {
            idempotency_key: "release".into(),
            account_id: "acme".into(),
            reservation_id: reservation.unwrap(),
        })
        .await
        .unwrap();

    // Bob's entries, two per page: his debits, his hold and its release
    // (the release names only the reservation, the ledger knows whose).
    let page = |token: String| ListLedgerRequest {
        account_id: "acme".into(),
        member_id: "bob".into(),
        page_size: 2,
        page_token: token,
        consistency: fully_consistent(),
        ..Default::default()
    };
    let mut kinds = Vec::new();
    let mut token = String::new();
    loop {
        let response = accounts
            .list_ledger(page(token))
            .await
            .unwrap()
            .into_inner();
        kinds.extend(
            response
                .entries
                .iter()
                .map(|e| LedgerEntryKind::try_from(e.kind).unwrap()),
        );
        if kinds.len() == 2 {
            // Appends between pages do not shift what comes next.
            metering
                .debit(debit("acme", "between", "bob", "article.edit", ""))
                .await
                .unwrap();
        }
        if response.next_page_token.is_empty() {
            break;
        }
        token = response.next_page_token;
    }
    assert_eq!(
        kinds,
        vec![
            LedgerEntryKind::Debit,
            LedgerEntryKind::Debit,
            LedgerEntryKind::Hold,
            LedgerEntryKind::Debit,
            LedgerEntryKind::HoldReleased,
            LedgerEntryKind::Debit,
        ]
    );
}

/// An expiry's ledger entry shows the credits it took away: "before" is the
/// balance the previous entry left, "after" that less what expired; the
/// watch says the same. Two buckets expiring in one instant chain.
#[tokio::test]
async fn expiry_entries_show_what_expired() {
    for backend in BOTH_BACKENDS {
        expiries(backend).await;
    }
}

async fn expiries(backend: Backend) {
    let server = TestServer::start_with(options(backend)).await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open(&mut accounts, "acme").await;
    grant(&mut accounts, "acme", "g1", BucketKind::TopUp, 10_000).await;
    let expiry = tally_core::Clock::now(server.clock()).as_millis() + 3_000;
    for key in ["g2", "g3"] {
        accounts
            .grant(GrantRequest {
                idempotency_key: key.into(),
                account_id: "acme".into(),
                kind: BucketKind::TopUp.into(),
                amount_millicredits: 5_000,
                expires_at: Some(prost_types::Timestamp {
                    seconds: expiry / 1_000,
                    nanos: ((expiry % 1_000) * 1_000_000) as i32,
                }),
                ..Default::default()
            })
            .await
            .expect("grant");
    }
    let mut stream = accounts
        .watch_account(WatchAccountRequest {
            account_id: "acme".into(),
            after_sequence: None,
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        next(&mut stream)
            .await
            .balance
            .unwrap()
            .available_millicredits,
        20_000
    );

    server.advance(Duration::from_secs(5));
    metering
        .debit(debit("acme", "after", "alice", "article.edit", ""))
        .await
        .unwrap();

    let entries = ledger(&mut accounts, "acme").await;
    for pair in entries.windows(2) {
        assert_eq!(
            pair[1].available_before_millicredits, pair[0].available_after_millicredits,
            "entry {} does not start where {} ended: {entries:#?}",
            pair[1].sequence, pair[0].sequence
        );
    }
    let expired: Vec<&LedgerEntry> = entries
        .iter()
        .filter(|e| e.kind == LedgerEntryKind::BucketExpired as i32)
        .collect();
    assert_eq!(expired.len(), 2, "{entries:#?}");
    assert_eq!(
        (
            expired[0].available_before_millicredits,
            expired[0].available_after_millicredits
        ),
        (20_000, 15_000)
    );
    assert_eq!(
        (
            expired[1].available_before_millicredits,
            expired[1].available_after_millicredits
        ),
        (15_000, 10_000)
    );
    for entry in &expired {
        assert_eq!(entry.amount_millicredits, 5_000);
    }
    assert_eq!(entries.last().unwrap().available_after_millicredits, 9_000);

    // The watch carries the same entries.
    for want in expired {
        let seen = next(&mut stream).await.entry.expect("an entry");
        assert_eq!(seen.sequence, want.sequence);
        assert_eq!(
            seen.available_before_millicredits,
            want.available_before_millicredits
        );
        assert_eq!(
            seen.available_after_millicredits,
            want.available_after_millicredits
        );
    }
}

/// A balance shows the last action charged (seed 001's "last
/// transaction"): a grant or an expiry does not move it, a debit does.
#[tokio::test]
async fn a_balance_shows_the_last_debit() {
    for backend in BOTH_BACKENDS {
        let server = TestServer::start_with(options(backend)).await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        open_pro(&mut accounts, "acme").await;
        assert_eq!(balance(&mut accounts, "acme").await.last_debit, None);

        // (member, action, model, amount) of the balance's last debit.
        async fn last(
            accounts: &mut AccountServiceClient<tonic::transport::Channel>,
        ) -> (LastDebit, (String, String, String, i64)) {
            let last = balance(accounts, "acme").await.last_debit.expect("set");
            let what = (
                last.member_id.clone(),
                last.action.clone(),
                last.model.clone(),
                last.amount_millicredits,
            );
            (last, what)
        }
        let seconds = |last: &LastDebit| last.charged_at.as_ref().expect("charged_at").seconds;

        metering
            .debit(debit("acme", "d1", "alice", "image.render", ""))
            .await
            .unwrap();
        let (first, what) = last(&mut accounts).await;
        assert_eq!(
            what,
            ("alice".into(), "image.render".into(), "".into(), 3_000)
        );

        server.advance(Duration::from_secs(60));
        grant(&mut accounts, "acme", "g1", BucketKind::TopUp, 5_000).await;
        assert_eq!(last(&mut accounts).await.0, first, "a grant is no debit");

        metering
            .debit(debit("acme", "d2", "bob", "article.draft", "claude"))
            .await
            .unwrap();
        let (second, what) = last(&mut accounts).await;
        assert_eq!(
            what,
            ("bob".into(), "article.draft".into(), "claude".into(), 2_000)
        );
        assert_eq!(seconds(&second), seconds(&first) + 60);
    }
}

/// A ledger entry lists every bucket it drew from, so a page of entries
/// that drew from hundreds of buckets can pass the 4 MiB a gRPC client
/// accepts by default long before its thousand entries: the page ends
/// early (at 2 MiB) with a token, and paging still yields every entry once.
#[tokio::test]
async fn list_ledger_pages_are_bounded_by_bytes() {
    use prost::Message as _;
    const BUCKETS: i64 = 400;
    const CYCLES: usize = 130;
    const MAX_PAGE_BYTES: usize = 2 << 20;
    for backend in BOTH_BACKENDS {
        let server = TestServer::start_with(options(backend)).await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        open(&mut accounts, "wide").await;
        for i in 0..BUCKETS {
            grant(
                &mut accounts,
                "wide",
                &format!("g-{i}"),
                BucketKind::TopUp,
                10,
            )
            .await;
        }
        // Each hold draws from every bucket, and its release returns to each.
        for cycle in 0..CYCLES {
            let held = metering
                .reserve(reserve_request("wide", &format!("r-{cycle}"), BUCKETS * 10))
                .await
                .expect("reserve")
                .into_inner()
                .reservation
                .expect("reservation");
            assert_eq!(held.draws.len(), BUCKETS as usize);
            metering
                .release(ReleaseRequest {
                    idempotency_key: format!("x-{cycle}"),
                    account_id: "wide".into(),
                    reservation_id: held.reservation_id,
                })
                .await
                .expect("release");
        }

        // Small pages: each fits anyway.
        let mut expected = Vec::new();
        let mut total_bytes = 0;
        let mut token = String::new();
        loop {
            let page = accounts
                .list_ledger(ListLedgerRequest {
                    account_id: "wide".into(),
                    page_size: 20,
                    page_token: token,
                    consistency: fully_consistent(),
                    ..Default::default()
                })
                .await
                .expect("small page")
                .into_inner();
            total_bytes += page.encoded_len();
            expected.extend(page.entries.iter().map(|e| e.sequence));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert!(expected.len() > 2 * CYCLES + BUCKETS as usize);
        assert!(
            total_bytes > 4 << 20,
            "the whole ledger must not fit one default message: {total_bytes}"
        );

        // Pages of up to a thousand entries stop at the byte bound.
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut token = String::new();
        loop {
            let page = accounts
                .list_ledger(ListLedgerRequest {
                    account_id: "wide".into(),
                    page_size: 1_000,
                    page_token: token,
                    consistency: fully_consistent(),
                    ..Default::default()
                })
                .await
                .expect("a page a default client can read")
                .into_inner();
            assert!(
                page.encoded_len() <= MAX_PAGE_BYTES,
                "page of {} bytes",
                page.encoded_len()
            );
            pages += 1;
            seen.extend(page.entries.iter().map(|e| e.sequence));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert!(pages >= 3, "{pages} pages");
        assert_eq!(seen, expected, "{backend:?}");
    }
}
