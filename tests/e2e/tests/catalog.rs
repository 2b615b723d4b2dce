//! CatalogService over gRPC: publishing and reading rate cards and plan
//! catalogues, refusals, and holds that settle on the card they were
//! priced on.

use tally_e2e::*;

const METERED_V4: &str = r#"
version = 4

[actions."content.generate"]
rounding = "up_to_credit"
min_millicredits = 1000
hold_millicredits = 5000

[actions."content.generate".rates]
per_1k_output_tokens = 1500
"#;

const METERED_V5: &str = r#"
version = 5

[actions."content.generate"]
rounding = "up_to_credit"
min_millicredits = 1000

[actions."content.generate".rates]
per_1k_output_tokens = 3000
"#;

#[tokio::test]
async fn rate_cards_are_published_read_and_settled_on_their_version() {
    let server = TestServer::start().await;
    let mut catalog = server.catalog().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;

    // The file given at start is version 3.
    let current = catalog
        .get_rate_card(GetRateCardRequest { version: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.version, 3);
    assert!(current.toml.contains("article.draft"));

    let published = catalog
        .publish_rate_card(PublishRateCardRequest {
            toml: METERED_V4.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((published.version, published.already_published), (4, false));
    let again = catalog
        .publish_rate_card(PublishRateCardRequest {
            toml: METERED_V4.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.version, again.already_published), (4, true));

    // Refusals name the field and write nothing.
    let bad = catalog
        .publish_rate_card(PublishRateCardRequest {
            toml: "version = 9\n[actions.\"x\"]\nprice_millicredits = -1\n".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&bad), vec!["toml".to_string()]);
    let stale = catalog
        .publish_rate_card(PublishRateCardRequest {
            toml: METERED_V4.replace("version = 4", "version = 2"),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&stale), vec!["version".to_string()]);
    let missing = catalog
        .get_rate_card(GetRateCardRequest { version: Some(42) })
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code(), reason(&missing)),
        (tonic::Code::NotFound, "UNKNOWN_VERSION".into())
    );

    // A hold priced on version 4 settles on version 4, even once 5 doubles
    // the rate.
    open(&mut accounts, "ws").await;
    grant(&mut accounts, "ws", "g", BucketKind::TopUp, 100_000).await;
    let held = metering
        .reserve(ReserveRequest {
            idempotency_key: "r".into(),
            account_id: "ws".into(),
            member_id: "ann".into(),
            action: "content.generate".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!((held.held_millicredits, held.rate_card_version), (5_000, 4));
    catalog
        .publish_rate_card(PublishRateCardRequest {
            toml: METERED_V5.into(),
        })
        .await
        .unwrap();
    let actual = Dimensions {
        output_tokens: 2_500,
        ..Default::default()
    };
    let receipt = metering
        .commit(CommitRequest {
            idempotency_key: "c".into(),
            account_id: "ws".into(),
            reservation_id: held.reservation_id,
            amount_millicredits: None,
            dimensions: Some(actual.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    // 2.5k tokens x 1.5 credits per 1k = 3.75, rounded up to 4 credits.
    assert_eq!(receipt.charged_millicredits, 4_000);
    assert_eq!(receipt.rate_card_version, 4);
    assert_eq!(receipt.dimensions, Some(actual.clone()));
    // A new debit uses version 5: 2.5k x 3 = 7.5, rounded up to 8.
    let debit = metering
        .debit(DebitRequest {
            idempotency_key: "d".into(),
            account_id: "ws".into(),
            member_id: "ann".into(),
            action: "content.generate".into(),
            dimensions: Some(actual.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(
        (debit.charged_millicredits, debit.rate_card_version),
        (8_000, 5)
    );
    // Amount and dimensions together are refused.
    let both = metering
        .debit(DebitRequest {
            idempotency_key: "d2".into(),
            account_id: "ws".into(),
            member_id: "ann".into(),
            action: "content.generate".into(),
            amount_millicredits: Some(1_000),
            dimensions: Some(actual.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&both), vec!["dimensions".to_string()]);
}

#[tokio::test]
async fn plan_catalogues_are_published_and_used_by_new_accounts() {
    let server = TestServer::start().await;
    let mut catalog = server.catalog().await;
    let mut accounts = server.accounts().await;
    let empty = catalog
        .get_plan_catalogue(GetPlanCatalogueRequest { version: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.version, 0);
    let unknown = accounts
        .open_account(OpenAccountRequest {
            idempotency_key: "o".into(),
            account_id: "ws".into(),
            plan: "pro".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&unknown), "UNKNOWN_PLAN");
    catalog
        .publish_plan_catalogue(PublishPlanCatalogueRequest {
            toml: "version = 1\n[plans.pro]\nmonthly_allowance_millicredits = 2500000\nspending_cap_millicredits = 2000000\n".into(),
        })
        .await
        .unwrap();
    let opened = accounts
        .open_account(OpenAccountRequest {
            idempotency_key: "o".into(),
            account_id: "ws".into(),
            plan: "pro".into(),
            time_zone: "Asia/Kolkata".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .balance
        .unwrap();
    assert_eq!(opened.available_millicredits, 2_500_000);
    assert_eq!(opened.plan, "pro");
    assert_eq!(opened.spending_cap_millicredits, Some(2_000_000));
    assert_eq!(opened.time_zone, "Asia/Kolkata");
    let bad_zone = accounts
        .open_account(OpenAccountRequest {
            idempotency_key: "o2".into(),
            account_id: "ws2".into(),
            time_zone: "Mars/Olympus".into(),
            billing_anchor: Some(BillingAnchor {
                day: 32,
                hour: 0,
                minute: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad_zone),
        vec!["time_zone".to_string(), "billing_anchor".to_string()]
    );
}
