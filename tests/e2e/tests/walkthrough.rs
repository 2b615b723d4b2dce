//! A workspace walked through grant → reserve → commit past the balance →
//! overage → a top-up that pays the overage, every figure asserted.

use tally_e2e::*;

fn draw(entry_draws: &[Draw]) -> Vec<(i32, i64)> {
    entry_draws
        .iter()
        .map(|d| (d.kind, d.amount_millicredits))
        .collect()
}

#[tokio::test]
async fn grant_reserve_overcommit_overage_and_top_up_repayment() {
    let server = TestServer::start().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open(&mut accounts, "acme").await;

    let monthly = grant(
        &mut accounts,
        "acme",
        "g-monthly",
        BucketKind::Monthly,
        10_000,
    )
    .await;
    let monthly_id = monthly.bucket.as_ref().unwrap().grant_id.clone();
    assert_eq!(
        monthly.balance.as_ref().unwrap().available_millicredits,
        10_000
    );

    let reserved = metering
        .reserve(ReserveRequest {
            ttl: Some(seconds(600)),
            ..reserve_request("acme", "r-1", 8_000)
        })
        .await
        .unwrap()
        .into_inner();
    let reservation = reserved.reservation.unwrap();
    assert_eq!(reservation.held_millicredits, 8_000);
    assert_eq!(
        draw(&reservation.draws),
        vec![(BucketKind::Monthly as i32, 8_000)]
    );
    assert_eq!(reserved.available_millicredits, 2_000);

    let refused = metering
        .reserve(reserve_request("acme", "r-2", 5_000))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&refused), "INSUFFICIENT_CREDITS");
    assert_eq!(
        metadata(&refused, "available_millicredits").as_deref(),
        Some("2000")
    );
    assert_eq!(
        metadata(&refused, "needed_millicredits").as_deref(),
        Some("5000")
    );

    // The task ran long: it costs more than the hold and the balance.
    let committed = metering
        .commit(CommitRequest {
            dimensions: None,
            idempotency_key: "c-1".into(),
            account_id: "acme".into(),
            reservation_id: reservation.reservation_id.clone(),
            amount_millicredits: Some(13_000),
        })
        .await
        .expect("a live reservation's commit never fails for lack of credits")
        .into_inner();
    let receipt = committed.receipt.unwrap();
    assert_eq!(receipt.charged_millicredits, 13_000);
    assert_eq!(
        draw(&receipt.draws),
        vec![(BucketKind::Monthly as i32, 10_000)]
    );
    assert_eq!(receipt.overage_millicredits, 3_000);
    assert_eq!(receipt.released_millicredits, 0);
    assert!(!receipt.late);
    assert_eq!(committed.available_millicredits, 0);

    let in_debt = balance(&mut accounts, "acme").await;
    assert_eq!(
        (
            in_debt.available_millicredits,
            in_debt.held_millicredits,
            in_debt.overage_millicredits,
            in_debt.granted_millicredits,
            in_debt.consumed_millicredits,
            in_debt.open_reservations,
        ),
        (0, 0, 3_000, 10_000, 13_000, 0)
    );
    assert!(
        in_debt.buckets.is_empty(),
        "the spent monthly bucket is gone"
    );

    // Nothing new starts while in debt.
    let refused = metering
        .reserve(reserve_request("acme", "r-3", 1))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "INSUFFICIENT_CREDITS");

    let top_up = grant(&mut accounts, "acme", "g-top-up", BucketKind::TopUp, 20_000).await;
    assert_eq!(top_up.overage_repaid_millicredits, 3_000);
    let after = top_up.balance.unwrap();
    assert_eq!(
        (
            after.available_millicredits,
            after.held_millicredits,
            after.overage_millicredits,
            after.granted_millicredits,
            after.consumed_millicredits,
        ),
        (17_000, 0, 0, 30_000, 13_000)
    );
    let bucket = top_up.bucket.unwrap();
    assert_eq!(
        (bucket.amount_millicredits, bucket.remaining_millicredits),
        (20_000, 17_000)
    );
    assert_eq!(bucket.source, GrantSource::Purchase as i32);
    assert_eq!(bucket.priority, 30);

    // Conservation: granted - consumed - expired - voided = available + upcoming + held - overage.
    assert_eq!(
        after.granted_millicredits
            - after.consumed_millicredits
            - after.expired_millicredits
            - after.voided_millicredits,
        after.available_millicredits + after.upcoming_millicredits + after.held_millicredits
            - after.overage_millicredits
    );

    let entries = ledger(&mut accounts, "acme").await;
    let summary: Vec<(i64, i32, i64, i64, i64)> = entries
        .iter()
        .map(|e| {
            (
                e.sequence,
                e.kind,
                e.amount_millicredits,
                e.available_before_millicredits,
                e.available_after_millicredits,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, LedgerEntryKind::AccountOpened as i32, 0, 0, 0),
            // An account without a plan still has cycles: its usage and
            // spending cap are counted per cycle.
            (2, LedgerEntryKind::CycleStarted as i32, 0, 0, 0),
            (3, LedgerEntryKind::Grant as i32, 10_000, 0, 10_000),
            (4, LedgerEntryKind::Hold as i32, 8_000, 10_000, 2_000),
            // The hold took the balance below the default 10 credits.
            (5, LedgerEntryKind::Alert as i32, 0, 2_000, 2_000),
            (6, LedgerEntryKind::Debit as i32, 13_000, 2_000, 0),
            // Nothing left, and overage began.
            (7, LedgerEntryKind::Alert as i32, 0, 0, 0),
            (8, LedgerEntryKind::Grant as i32, 20_000, 0, 20_000),
            (
                9,
                LedgerEntryKind::OverageRepaid as i32,
                3_000,
                20_000,
                17_000
            ),
        ],
        "refused reservations wrote nothing"
    );
    assert_eq!(entries[2].grant_id, monthly_id);
    assert_eq!(entries[3].reservation_id, reservation.reservation_id);
    assert_eq!(entries[3].member_id, "alice");
    let low = entries[4].alert.as_ref().unwrap();
    assert_eq!(
        (
            low.kind,
            low.threshold_millicredits,
            low.available_millicredits
        ),
        (AlertKind::LowBalance as i32, 10_000, 2_000)
    );
    assert_eq!(entries[4].idempotency_key, "r-1");
    assert_eq!(
        entries[5].receipt.as_ref().unwrap().overage_millicredits,
        3_000
    );
    assert_eq!(entries[5].idempotency_key, "c-1");
    let depleted = entries[6].alert.as_ref().unwrap();
    assert_eq!(
        (depleted.kind, depleted.overage_millicredits),
        (AlertKind::Depleted as i32, 3_000)
    );
    assert_eq!(
        draw(&entries[8].draws),
        vec![(BucketKind::TopUp as i32, 3_000)]
    );
}

#[tokio::test]
async fn commit_below_the_hold_releases_the_rest_and_prices_come_from_the_rate_card() {
    let server = TestServer::start().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open(&mut accounts, "shop").await;
    grant(&mut accounts, "shop", "g-1", BucketKind::Monthly, 10_000).await;

    // Priced from the rate card: article.draft costs 2 credits.
    let reserved = metering
        .reserve(ReserveRequest {
            amount_millicredits: None,
            ..reserve_request("shop", "r-1", 0)
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(
        (reserved.held_millicredits, reserved.rate_card_version),
        (2_000, 3)
    );

    let receipt = metering
        .commit(CommitRequest {
            dimensions: None,
            idempotency_key: "c-1".into(),
            account_id: "shop".into(),
            reservation_id: reserved.reservation_id,
            amount_millicredits: Some(500),
        })
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(
        (receipt.charged_millicredits, receipt.released_millicredits),
        (500, 1_500)
    );

    // A higher-cost model costs more; a free action costs nothing and is recorded.
    let premium = metering
        .debit(DebitRequest {
            dimensions: None,
            idempotency_key: "d-1".into(),
            account_id: "shop".into(),
            member_id: "bob".into(),
            action: "x.engage".into(),
            model: "premium".into(),
            amount_millicredits: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        premium.receipt.as_ref().unwrap().charged_millicredits,
        2_000
    );
    assert_eq!(premium.available_millicredits, 10_000 - 500 - 2_000);
    let free = metering
        .debit(DebitRequest {
            idempotency_key: "d-2".into(),
            account_id: "shop".into(),
            member_id: "bob".into(),
            action: "topic.research".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(free.receipt.as_ref().unwrap().charged_millicredits, 0);

    let quote = metering
        .quote(QuoteRequest {
            account_id: "shop".into(),
            items: vec![
                QuoteItem {
                    dimensions: None,
                    action: "article.draft".into(),
                    model: String::new(),
                    count: 3,
                },
                QuoteItem {
                    dimensions: None,
                    action: "x.engage".into(),
                    model: "premium".into(),
                    count: 0,
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quote.total_millicredits, 3 * 2_000 + 2_000);
    assert_eq!(quote.available_millicredits, 7_500);
    assert!(!quote.affordable);
    assert_eq!(quote.rate_card_version, 3);

    let entries = ledger(&mut accounts, "shop").await;
    let debits: Vec<(String, i64)> = entries
        .iter()
        .filter(|e| e.kind == LedgerEntryKind::Debit as i32)
        .map(|e| (e.action.clone(), e.amount_millicredits))
        .collect();
    assert_eq!(
        debits,
        vec![
            ("article.draft".to_owned(), 500),
            ("x.engage".to_owned(), 2_000),
            ("topic.research".to_owned(), 0),
        ]
    );
    let bobs = accounts
        .list_ledger(ListLedgerRequest {
            account_id: "shop".into(),
            member_id: "bob".into(),
            page_size: 1,
            consistency: fully_consistent(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bobs.entries.len(), 1);
    assert_eq!(bobs.entries[0].action, "x.engage");
    let next = accounts
        .list_ledger(ListLedgerRequest {
            account_id: "shop".into(),
            member_id: "bob".into(),
            page_size: 1,
            page_token: bobs.next_page_token,
            consistency: fully_consistent(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.entries.len(), 1);
    assert_eq!(next.entries[0].action, "topic.research");
    assert!(next.next_page_token.is_empty(), "bob has two entries");
}
