//! Refund over gRPC, on both stores: credits of a debit, a commit or a
//! usage record go back whole or in part, to the buckets that paid while
//! they are live and into a refund bucket once they are gone, never more
//! than was charged (across restarts too), idempotently; refusals and bad
//! input write nothing; the ledger shows each refund as its own kind and
//! usage reports count it as negative usage.

use std::time::Duration;

use tally_e2e::*;

fn refund(key: &str, charge: &str, amount: Option<i64>, why: &str) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.into(),
        account_id: "acme".into(),
        charge_idempotency_key: charge.into(),
        amount_millicredits: amount,
        reason: why.into(),
    }
}

fn debit(key: &str, amount: i64) -> DebitRequest {
    DebitRequest {
        idempotency_key: key.into(),
        account_id: "acme".into(),
        member_id: "ann".into(),
        action: "article.draft".into(),
        amount_millicredits: Some(amount),
        ..Default::default()
    }
}

fn in_an_hour(server: &TestServer) -> prost_types::Timestamp {
    let at = tally_core::Clock::now(server.clock()).as_millis() + 3_600_000;
    prost_types::Timestamp {
        seconds: at / 1_000,
        nanos: 0,
    }
}

fn returned(receipt: &RefundReceipt) -> Vec<(String, i64)> {
    receipt
        .returned
        .iter()
        .map(|d| (d.grant_id.clone(), d.amount_millicredits))
        .collect()
}

#[tokio::test]
async fn refunds_return_a_charge_in_parts_never_more_than_it_cost() {
    for backend in BOTH_BACKENDS {
        let mut server = TestServer::start_with(Options {
            backend,
            ..Default::default()
        })
        .await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        open(&mut accounts, "acme").await;
        let pack = grant(&mut accounts, "acme", "pack", BucketKind::TopUp, 10_000)
            .await
            .bucket
            .unwrap()
            .grant_id;
        let promo = accounts
            .grant(GrantRequest {
                idempotency_key: "promo".into(),
                account_id: "acme".into(),
                kind: BucketKind::Promotional.into(),
                amount_millicredits: 3_000,
                expires_at: Some(in_an_hour(&server)),
                ..Default::default()
            })
            .await
            .expect("grant")
            .into_inner()
            .bucket
            .unwrap()
            .grant_id;
        accounts
            .set_spending_cap(SetSpendingCapRequest {
                idempotency_key: "cap".into(),
                account_id: "acme".into(),
                spending_cap_millicredits: Some(12_000),
            })
            .await
            .expect("cap");

        // 12 credits: the pack (priority 30) pays 10, the promo (40) 2.
        metering.debit(debit("d1", 12_000)).await.expect("debit");
        let capped = metering.debit(debit("d2", 1_000)).await.unwrap_err();
        assert_eq!(reason(&capped), "SPENDING_CAP_REACHED", "{backend:?}");

        // Part of it: the last bucket to pay gets its credits back first,
        // and this cycle's spending drops, so the cap has room again.
        let first = metering
            .refund(refund("r1", "d1", Some(1_500), "draft failed"))
            .await
            .expect("refund")
            .into_inner();
        let receipt = first.refund.as_ref().unwrap();
        assert_eq!(
            returned(receipt),
            vec![(promo.clone(), 1_500)],
            "{backend:?}"
        );
        assert_eq!(
            (
                receipt.amount_millicredits,
                receipt.refunded_millicredits,
                receipt.refundable_millicredits,
                receipt.cycle_returned_millicredits,
            ),
            (1_500, 1_500, 10_500, 1_500)
        );
        assert_eq!(receipt.refund_bucket, None);
        assert_eq!(
            (receipt.member_id.as_str(), receipt.action.as_str()),
            ("ann", "article.draft")
        );
        assert_eq!(first.available_millicredits, 2_500);
        // A retry answers the same and gives back nothing more.
        let again = metering
            .refund(refund("r1", "d1", Some(1_500), "draft failed"))
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(again.consistency_token, first.consistency_token);
        assert_eq!(
            balance(&mut accounts, "acme").await.available_millicredits,
            2_500
        );
        metering
            .debit(debit("d2", 1_000))
            .await
            .expect("room under the cap again");

        // Never more than is left, and refusals write nothing.
        let before = ledger(&mut accounts, "acme").await.len();
        let too_much = metering
            .refund(refund("r-big", "d1", Some(10_501), "x"))
            .await
            .unwrap_err();
        assert_eq!(too_much.code(), tonic::Code::FailedPrecondition);
        assert_eq!(reason(&too_much), "REFUND_EXCEEDS_CHARGE");
        assert_eq!(
            metadata(&too_much, "refundable_millicredits").as_deref(),
            Some("10500")
        );
        for charge in ["no-such-key", "pack", "cap"] {
            let unknown = metering
                .refund(refund("r-unknown", charge, None, "x"))
                .await
                .unwrap_err();
            assert_eq!(
                unknown.code(),
                tonic::Code::NotFound,
                "{charge}: {unknown:?}"
            );
            assert_eq!(reason(&unknown), "CHARGE_NOT_FOUND");
        }
        let bad = metering
            .refund(RefundRequest {
                idempotency_key: "r-bad".into(),
                account_id: "acme".into(),
                charge_idempotency_key: String::new(),
                amount_millicredits: Some(0),
                reason: " ".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        let mut fields = violated_fields(&bad);
        fields.sort();
        assert_eq!(
            fields,
            vec!["amount_millicredits", "charge_idempotency_key", "reason"]
        );
        assert_eq!(ledger(&mut accounts, "acme").await.len(), before);

        // Across a restart the refunded part is remembered. The promo has
        // expired since and the pack was spent to nothing: the rest goes
        // into a refund bucket that never expires.
        server.advance(Duration::from_secs(2 * 3_600));
        server.restart().await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        let rest = metering
            .refund(refund("r2", "d1", None, "whole article lost"))
            .await
            .expect("refund the rest")
            .into_inner();
        let receipt = rest.refund.as_ref().unwrap();
        assert_eq!(receipt.amount_millicredits, 10_500, "{backend:?}");
        assert!(receipt.returned.is_empty());
        let bucket = receipt.refund_bucket.as_ref().expect("a refund bucket");
        assert_eq!(bucket.amount_millicredits, 10_500);
        assert_eq!(
            (
                receipt.refunded_millicredits,
                receipt.refundable_millicredits
            ),
            (12_000, 0)
        );
        let now = balance(&mut accounts, "acme").await;
        let refund_bucket = now
            .buckets
            .iter()
            .find(|b| b.grant_id == bucket.grant_id)
            .expect("the refund bucket is in the balance");
        assert_eq!(
            (
                refund_bucket.kind,
                refund_bucket.source,
                refund_bucket.expires_at.is_none()
            ),
            (
                BucketKind::Promotional as i32,
                GrantSource::Refund as i32,
                true
            )
        );
        assert!(!now.buckets.iter().any(|b| b.grant_id == pack));
        // Consumed is net of refunds: only d2 is left.
        assert_eq!(now.consumed_millicredits, 1_000);
        let done = metering
            .refund(refund("r3", "d1", None, "again"))
            .await
            .unwrap_err();
        assert_eq!(reason(&done), "REFUND_EXCEEDS_CHARGE");
        assert_eq!(
            metadata(&done, "refundable_millicredits").as_deref(),
            Some("0")
        );

        // The ledger shows each refund as its own kind, with the balance
        // before and after, the reason and the receipt.
        let entries = accounts
            .list_ledger(ListLedgerRequest {
                account_id: "acme".into(),
                kinds: vec![LedgerEntryKind::Refund.into()],
                consistency: fully_consistent(),
                ..Default::default()
            })
            .await
            .expect("ledger")
            .into_inner()
            .entries;
        let shown: Vec<(i64, i64, i64, String, String)> = entries
            .iter()
            .map(|e| {
                (
                    e.amount_millicredits,
                    e.available_before_millicredits,
                    e.available_after_millicredits,
                    e.note.clone(),
                    e.refund.as_ref().unwrap().charge_idempotency_key.clone(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (1_500, 1_000, 2_500, "draft failed".into(), "d1".into()),
                (10_500, 0, 10_500, "whole article lost".into(), "d1".into()),
            ],
            "{backend:?}"
        );

        // Usage: the refunds are negative usage of the action, so its
        // total is what was finally charged; the action still counts.
        let usage = accounts
            .get_usage(GetUsageRequest {
                account_id: "acme".into(),
                group_by: UsageGrouping::Action.into(),
                consistency: fully_consistent(),
                ..Default::default()
            })
            .await
            .expect("usage")
            .into_inner();
        let totals = usage.total.unwrap();
        assert_eq!(
            (totals.charged_millicredits, totals.actions),
            (1_000, 2),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn commits_and_usage_records_are_refunded_by_their_keys() {
    for backend in BOTH_BACKENDS {
        let server = TestServer::start_with(Options {
            backend,
            ..Default::default()
        })
        .await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        open(&mut accounts, "acme").await;
        grant(&mut accounts, "acme", "pack", BucketKind::TopUp, 5_000).await;

        // A commit past its hold runs into overage: its refund takes the
        // debt off first.
        let mut hold = reserve_request("acme", "hold", 1_000);
        hold.action = "article.draft".into();
        let held = metering.reserve(hold).await.expect("reserve").into_inner();
        let id = held.reservation.unwrap().reservation_id;
        let committed = metering
            .commit(CommitRequest {
                idempotency_key: "commit".into(),
                account_id: "acme".into(),
                reservation_id: id,
                amount_millicredits: Some(7_000),
                ..Default::default()
            })
            .await
            .expect("commit")
            .into_inner();
        assert_eq!(
            committed.receipt.as_ref().unwrap().overage_millicredits,
            2_000,
            "{backend:?}"
        );
        let refunded = metering
            .refund(refund("r-commit", "commit", Some(3_000), "overcharged"))
            .await
            .expect("refund a commit")
            .into_inner();
        let receipt = refunded.refund.unwrap();
        assert_eq!(receipt.overage_cancelled_millicredits, 2_000, "{backend:?}");
        // The pack paid its last credit: gone, so its part goes into a
        // refund bucket.
        assert!(receipt.returned.is_empty());
        assert_eq!(receipt.refund_bucket.unwrap().amount_millicredits, 1_000);
        let now = balance(&mut accounts, "acme").await;
        assert_eq!(
            (now.overage_millicredits, now.available_millicredits),
            (0, 1_000)
        );
        let more = grant(&mut accounts, "acme", "more", BucketKind::TopUp, 5_000)
            .await
            .bucket
            .unwrap()
            .grant_id;

        // A usage record is refunded by its own key.
        let reported = metering
            .report_usage(ReportUsageRequest {
                records: vec![UsageRecord {
                    idempotency_key: "usage-1".into(),
                    account_id: "acme".into(),
                    member_id: "bob".into(),
                    action: "article.draft".into(),
                    ..Default::default()
                }],
            })
            .await
            .expect("report")
            .into_inner();
        assert_eq!(reported.results.len(), 1);
        let refunded = metering
            .refund(refund("r-usage", "usage-1", None, "duplicate report"))
            .await
            .expect("refund a usage record")
            .into_inner();
        let receipt = refunded.refund.unwrap();
        assert_eq!(
            (receipt.amount_millicredits, receipt.member_id.as_str()),
            (2_000, "bob")
        );
        assert_eq!(returned(&receipt), vec![(more, 2_000)], "{backend:?}");
        assert_eq!(refunded.available_millicredits, 6_000);
    }
}
