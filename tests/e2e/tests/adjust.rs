//! Adjust over gRPC, on both stores: an operator's signed correction adds
//! a bucket or removes credits in deduction order, never more than is
//! available, is idempotent, refuses bad input writing nothing, and shows
//! in the ledger as its own kind with its reason and operator.

use tally_e2e::*;

fn adjust(key: &str, amount: i64, reason: &str, operator: &str) -> AdjustRequest {
    AdjustRequest {
        idempotency_key: key.into(),
        account_id: "acme".into(),
        amount_millicredits: amount,
        reason: reason.into(),
        operator: operator.into(),
    }
}

#[tokio::test]
async fn adjustments_add_or_remove_credits_and_show_as_their_own_kind() {
    for backend in BOTH_BACKENDS {
        let server = TestServer::start_with(Options {
            backend,
            ..Default::default()
        })
        .await;
        let mut accounts = server.accounts().await;
        open(&mut accounts, "acme").await;
        let top_up = grant(&mut accounts, "acme", "g", BucketKind::TopUp, 10_000).await;

        // +5 credits of goodwill: a promotional bucket of its own.
        let added = accounts
            .adjust(adjust(
                "goodwill",
                5_000,
                "outage on 2026-01-14",
                "ops:maria",
            ))
            .await
            .expect("adjust")
            .into_inner();
        assert_eq!(added.amount_millicredits, 5_000, "{backend:?}");
        assert!(!added.grant_id.is_empty());
        assert!(added.draws.is_empty());
        let balance = added.balance.as_ref().unwrap();
        assert_eq!(balance.available_millicredits, 15_000);
        assert_eq!(balance.granted_millicredits, 15_000);
        let bucket = balance
            .buckets
            .iter()
            .find(|b| b.grant_id == added.grant_id)
            .expect("the new bucket");
        assert_eq!(
            (bucket.kind, bucket.source, bucket.remaining_millicredits),
            (
                BucketKind::Promotional as i32,
                GrantSource::Adjustment as i32,
                5_000
            )
        );
        // A retry answers the same and writes nothing.
        let again = accounts
            .adjust(adjust(
                "goodwill",
                5_000,
                "outage on 2026-01-14",
                "ops:maria",
            ))
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(again.grant_id, added.grant_id);
        assert_eq!(again.consistency_token, added.consistency_token);

        // −12 credits: the top-up first (priority 30), then the bucket
        // just added (40); counted as voided.
        let removed = accounts
            .adjust(adjust("clawback", -12_000, "double grant", "ops:maria"))
            .await
            .expect("adjust")
            .into_inner();
        let draws: Vec<(String, i64)> = removed
            .draws
            .iter()
            .map(|d| (d.grant_id.clone(), d.amount_millicredits))
            .collect();
        assert_eq!(
            draws,
            vec![
                (top_up.bucket.unwrap().grant_id, 10_000),
                (added.grant_id.clone(), 2_000)
            ]
        );
        let balance = removed.balance.unwrap();
        assert_eq!(balance.available_millicredits, 3_000);
        assert_eq!(balance.voided_millicredits, 12_000);

        // Never more than is available, and bad input names its fields;
        // neither writes anything.
        let before = ledger(&mut accounts, "acme").await.len();
        let short = accounts
            .adjust(adjust("too-much", -5_000, "x", "ops"))
            .await
            .unwrap_err();
        assert_eq!(short.code(), tonic::Code::FailedPrecondition, "{short:?}");
        assert_eq!(reason(&short), "INSUFFICIENT_CREDITS");
        let bad = accounts
            .adjust(adjust("bad", 0, " ", ""))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        let mut fields = violated_fields(&bad);
        fields.sort();
        assert_eq!(fields, vec!["amount_millicredits", "operator", "reason"]);
        let huge = accounts
            .adjust(adjust("huge", i64::MIN, "x", "ops"))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&huge), vec!["amount_millicredits"]);
        assert_eq!(ledger(&mut accounts, "acme").await.len(), before);

        // The ledger: its own kind, signed amounts, reason and operator,
        // and the balance before and after each.
        let entries = accounts
            .list_ledger(ListLedgerRequest {
                account_id: "acme".into(),
                kinds: vec![LedgerEntryKind::Adjustment.into()],
                consistency: fully_consistent(),
                ..Default::default()
            })
            .await
            .expect("ledger")
            .into_inner()
            .entries;
        let shown: Vec<(i64, String, String, i64, i64)> = entries
            .iter()
            .map(|e| {
                (
                    e.amount_millicredits,
                    e.note.clone(),
                    e.operator.clone(),
                    e.available_before_millicredits,
                    e.available_after_millicredits,
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    5_000,
                    "outage on 2026-01-14".into(),
                    "ops:maria".into(),
                    10_000,
                    15_000
                ),
                (
                    -12_000,
                    "double grant".into(),
                    "ops:maria".into(),
                    15_000,
                    3_000
                ),
            ],
            "{backend:?}"
        );
    }
}
