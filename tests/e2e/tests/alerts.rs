//! Alerts over gRPC, on both stores: SetAlertThresholds (and its refusals,
//! which write nothing), alerts in the ledger as ALERT entries, the
//! auto-top-up flow, and the capability on receipts.

use tally_e2e::*;

const PLANS: &str = r#"
version = 1

[plans.pro]
monthly_allowance_millicredits = 1000000

[plans.pro.alerts]
low_balance_millicredits = [100000]
usage_percent = [80]

[packs.popular]
credits_millicredits = 500000
"#;

const CARD: &str = r#"
version = 1

[actions."article.draft"]
price_millicredits = 2000
capability = "writing"
"#;

#[tokio::test]
async fn alert_thresholds_and_alerts_over_grpc_on_both_stores() {
    for backend in BOTH_BACKENDS {
        alerts(backend).await;
    }
}

fn debit(key: &str, amount: Option<i64>) -> DebitRequest {
    DebitRequest {
        idempotency_key: key.into(),
        account_id: "acme".into(),
        member_id: "alice".into(),
        action: "article.draft".into(),
        amount_millicredits: amount,
        ..Default::default()
    }
}

fn set(key: &str, thresholds: Option<AlertThresholds>) -> SetAlertThresholdsRequest {
    SetAlertThresholdsRequest {
        idempotency_key: key.into(),
        account_id: "acme".into(),
        thresholds,
    }
}

fn alert_entries(entries: &[LedgerEntry]) -> Vec<(i32, Alert)> {
    entries
        .iter()
        .filter(|e| e.kind == LedgerEntryKind::Alert as i32)
        .map(|e| {
            let alert = e.alert.clone().expect("an ALERT entry carries its alert");
            assert_eq!(
                alert.sequence, e.sequence,
                "the alert's sequence is its entry's"
            );
            assert_eq!(alert.raised_at, e.occurred_at);
            (alert.kind, alert)
        })
        .collect()
}

async fn alerts(backend: Backend) {
    let server = TestServer::start_with(Options {
        backend,
        rate_card: CARD.into(),
        plans: Some(PLANS.into()),
        ..Options::default()
    })
    .await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    accounts
        .open_account(OpenAccountRequest {
            idempotency_key: "open".into(),
            account_id: "acme".into(),
            plan: "pro".into(),
            ..Default::default()
        })
        .await
        .expect("opens on pro");
    // The plan leaves the critical level at its default, 10 credits.
    let plans_own = AlertThresholds {
        low_balance_millicredits: vec![100_000],
        critical_level_millicredits: 10_000,
        usage_percent: vec![80],
        auto_top_up: None,
    };
    assert_eq!(
        balance(&mut accounts, "acme").await.alert_thresholds,
        Some(plans_own.clone()),
        "the plan's thresholds are in effect"
    );

    // Bad input: INVALID_ARGUMENT naming each field, and nothing written.
    let written = ledger(&mut accounts, "acme").await.len();
    let refused = accounts
        .set_alert_thresholds(set(
            "bad",
            Some(AlertThresholds {
                low_balance_millicredits: vec![0],
                critical_level_millicredits: -1,
                usage_percent: vec![150],
                auto_top_up: Some(AutoTopUp {
                    below_millicredits: 1_000,
                    pack: String::new(),
                }),
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let mut fields = violated_fields(&refused);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "thresholds.auto_top_up.pack",
            "thresholds.critical_level_millicredits",
            "thresholds.low_balance_millicredits",
            "thresholds.usage_percent",
        ],
        "{refused:?}"
    );
    let refused = accounts
        .set_alert_thresholds(set(
            "bad-2",
            Some(AlertThresholds {
                low_balance_millicredits: vec![5_000, 5_000],
                critical_level_millicredits: 0,
                usage_percent: vec![],
                auto_top_up: None,
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        violated_fields(&refused),
        vec!["thresholds.low_balance_millicredits"]
    );
    let refused = accounts
        .set_alert_thresholds(set(
            "bad-3",
            Some(AlertThresholds {
                low_balance_millicredits: vec![],
                critical_level_millicredits: 0,
                usage_percent: vec![101],
                auto_top_up: None,
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), vec!["thresholds.usage_percent"]);
    let unknown = accounts
        .set_alert_thresholds(set(
            "bad-4",
            Some(AlertThresholds {
                auto_top_up: Some(AutoTopUp {
                    below_millicredits: 1_000,
                    pack: "mystery".into(),
                }),
                ..plans_own.clone()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(reason(&unknown), "UNKNOWN_PACK");
    assert_eq!(ledger(&mut accounts, "acme").await.len(), written);
    assert_eq!(
        balance(&mut accounts, "acme").await.alert_thresholds,
        Some(plans_own.clone())
    );

    // The account's own thresholds, with an automatic top-up.
    // Seed 001's shape: a warning at one level, critical at the other.
    let own = AlertThresholds {
        low_balance_millicredits: vec![500_000, 100_000],
        critical_level_millicredits: 100_000,
        usage_percent: vec![50],
        auto_top_up: Some(AutoTopUp {
            below_millicredits: 200_000,
            pack: "popular".into(),
        }),
    };
    let answer = accounts
        .set_alert_thresholds(set("own", Some(own.clone())))
        .await
        .expect("valid thresholds are set")
        .into_inner();
    assert_eq!(
        answer.balance.as_ref().unwrap().alert_thresholds,
        Some(own.clone())
    );
    let retried = accounts
        .set_alert_thresholds(set("own", Some(own.clone())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, answer, "a retry gets the first answer");
    let entries = ledger(&mut accounts, "acme").await;
    assert_eq!(entries.len(), written + 1, "one event, retry or not");
    let set_entry = entries.last().unwrap();
    assert_eq!(set_entry.kind, LedgerEntryKind::AlertThresholdsSet as i32);
    assert_eq!(set_entry.idempotency_key, "own");

    // A card-priced debit records the capability; 998 credits left.
    let charged = metering
        .debit(debit("d-card", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(charged.receipt.as_ref().unwrap().capability, "writing");
    let priced_by_caller = metering
        .debit(debit("d-own", Some(1_000)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(priced_by_caller.receipt.unwrap().capability, "");

    // 997 → 397 credits: below 500, and 60.3 % of the allowance used.
    metering.debit(debit("d-1", Some(600_000))).await.unwrap();
    // 397 → 147: below the auto-top-up level of 200, not yet below 100.
    metering.debit(debit("d-2", Some(250_000))).await.unwrap();

    let entries = accounts
        .list_ledger(ListLedgerRequest {
            account_id: "acme".into(),
            kinds: vec![LedgerEntryKind::Alert.into()],
            page_size: 100,
            consistency: fully_consistent(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let raised = alert_entries(&entries);
    let kinds: Vec<i32> = raised.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(
        kinds,
        vec![
            AlertKind::LowBalance as i32,
            AlertKind::UsageThreshold as i32,
            AlertKind::AutoTopUpRequested as i32,
        ]
    );
    let low = &raised[0].1;
    assert_eq!(
        (low.threshold_millicredits, low.available_millicredits),
        (500_000, 397_000)
    );
    let usage = &raised[1].1;
    assert_eq!(
        (
            usage.usage_percent,
            usage.used_this_cycle_millicredits,
            usage.allowance_millicredits
        ),
        (50, 603_000, 1_000_000)
    );
    let severities: Vec<i32> = raised.iter().map(|(_, alert)| alert.severity).collect();
    assert_eq!(
        severities,
        vec![
            AlertSeverity::Warning as i32,
            AlertSeverity::Warning as i32,
            AlertSeverity::Info as i32,
        ],
        "a low balance above the critical level warns; a top-up request is routine"
    );
    let top_up = &raised[2].1;
    assert_eq!(top_up.pack, "popular");
    assert_eq!(
        (top_up.threshold_millicredits, top_up.available_millicredits),
        (200_000, 147_000)
    );
    assert_eq!(
        entries
            .iter()
            .map(|e| e.idempotency_key.as_str())
            .collect::<Vec<_>>(),
        vec!["d-1", "d-1", "d-2"],
        "written with the command that crossed"
    );

    // The billing system buys the pack, keyed by the alert's sequence: a
    // second delivery of the same alert buys nothing more.
    let key = format!("auto-top-up-{}", top_up.sequence);
    let grant = GrantRequest {
        idempotency_key: key,
        account_id: "acme".into(),
        pack: "popular".into(),
        ..Default::default()
    };
    let bought = accounts.grant(grant.clone()).await.unwrap().into_inner();
    let again = accounts.grant(grant).await.unwrap().into_inner();
    assert_eq!(bought, again);
    assert_eq!(
        bought.balance.as_ref().unwrap().available_millicredits,
        647_000
    );
    // Re-armed by the pack: the next drop below 200 asks again.
    metering.debit(debit("d-3", Some(500_000))).await.unwrap();
    let all = ledger(&mut accounts, "acme").await;
    let top_ups = alert_entries(&all)
        .into_iter()
        .filter(|(kind, _)| *kind == AlertKind::AutoTopUpRequested as i32)
        .count();
    assert_eq!(top_ups, 2);
    // 147 → 47 credits: below 100, the critical level.
    metering.debit(debit("d-4", Some(100_000))).await.unwrap();
    let all = ledger(&mut accounts, "acme").await;
    let last = alert_entries(&all).pop().expect("an alert").1;
    assert_eq!(
        (last.kind, last.threshold_millicredits, last.severity),
        (
            AlertKind::LowBalance as i32,
            100_000,
            AlertSeverity::Critical as i32
        )
    );

    // Unset goes back to the plan's.
    let reset = accounts
        .set_alert_thresholds(set("reset", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reset.balance.unwrap().alert_thresholds,
        Some(plans_own.clone())
    );
    assert_eq!(
        balance(&mut accounts, "acme").await.alert_thresholds,
        Some(plans_own)
    );
}
