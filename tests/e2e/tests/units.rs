//! A rate card's own units and base prices over gRPC, on both stores:
//! seed 000's "interlink pass: 2 + 0.5 per post scanned, rounded up",
//! priced on Debit, Quote and ReportUsage, refused when misspelt, and
//! summed by GetUsage.

use std::collections::BTreeMap;

use tally_e2e::*;

const CARD: &str = r#"
version = 1

[actions."interlink.pass"]
base_millicredits = 2000
rates = { per_unit = { posts_scanned = 500 } }
rounding = "up_to_credit"

[actions."rss.process"]
rates = { per_unit = { rss_items = 1000 } }

[actions."campaign.run"]
rates = { per_unit = { platforms = 1500, rss_items = 1000, pages = 100, audio_seconds = 10, posts_scanned = 500 } }
"#;

fn used(unit: &str, n: i64) -> Option<Dimensions> {
    Some(Dimensions {
        units: BTreeMap::from([(unit.to_owned(), n)]),
        ..Default::default()
    })
}

fn debit(key: &str, action: &str, dimensions: Option<Dimensions>) -> DebitRequest {
    DebitRequest {
        idempotency_key: key.into(),
        account_id: "blog".into(),
        member_id: "agent".into(),
        action: action.into(),
        dimensions,
        ..Default::default()
    }
}

#[tokio::test]
async fn units_of_the_cards_own_are_priced_refused_when_unknown_and_summed() {
    for backend in BOTH_BACKENDS {
        let server = TestServer::start_with(Options {
            backend,
            rate_card: CARD.into(),
            ..Default::default()
        })
        .await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        open(&mut accounts, "blog").await;
        grant(&mut accounts, "blog", "g", BucketKind::TopUp, 100_000).await;

        // 2 + 0.5 × 3 = 3.5 credits, rounded up to 4.
        let charged = metering
            .debit(debit("p1", "interlink.pass", used("posts_scanned", 3)))
            .await
            .expect("debit")
            .into_inner();
        let receipt = charged.receipt.unwrap();
        assert_eq!(receipt.charged_millicredits, 4_000, "{backend:?}");
        assert_eq!(receipt.dimensions, used("posts_scanned", 3));
        metering
            .debit(debit("p2", "interlink.pass", used("posts_scanned", 10)))
            .await
            .expect("debit");

        // A misspelt unit is refused, naming the field, and writes nothing.
        let before = balance(&mut accounts, "blog").await;
        let typo = metering
            .debit(debit("p3", "interlink.pass", used("post_scanned", 3)))
            .await
            .unwrap_err();
        assert_eq!(typo.code(), tonic::Code::InvalidArgument, "{typo:?}");
        assert_eq!(violated_fields(&typo), vec!["dimensions.units".to_string()]);
        assert!(typo.message().contains("posts_scanned"), "{typo:?}");
        let negative = metering
            .debit(debit("p4", "interlink.pass", used("posts_scanned", -1)))
            .await
            .unwrap_err();
        assert_eq!(
            violated_fields(&negative),
            vec!["dimensions.units.posts_scanned".to_string()]
        );
        let odd_name = metering
            .debit(debit("p5", "interlink.pass", used("Posts Scanned", 1)))
            .await
            .unwrap_err();
        assert_eq!(
            violated_fields(&odd_name),
            vec!["dimensions.units".to_string()]
        );
        let after = balance(&mut accounts, "blog").await;
        assert_eq!(after.available_millicredits, before.available_millicredits);
        assert_eq!(after.version, before.version);

        // Quote prices units the same way.
        let quote = metering
            .quote(QuoteRequest {
                account_id: "blog".into(),
                items: vec![QuoteItem {
                    action: "interlink.pass".into(),
                    model: String::new(),
                    count: 2,
                    dimensions: used("posts_scanned", 5),
                }],
            })
            .await
            .expect("quote")
            .into_inner();
        assert_eq!(quote.total_millicredits, 2 * 5_000);

        // So does ReportUsage, record by record.
        let reported = metering
            .report_usage(ReportUsageRequest {
                records: vec![
                    UsageRecord {
                        idempotency_key: "rss-1".into(),
                        account_id: "blog".into(),
                        member_id: "agent".into(),
                        action: "rss.process".into(),
                        dimensions: used("rss_items", 7),
                        ..Default::default()
                    },
                    UsageRecord {
                        idempotency_key: "rss-2".into(),
                        account_id: "blog".into(),
                        member_id: "agent".into(),
                        action: "rss.process".into(),
                        dimensions: used("posts_scanned", 7),
                        ..Default::default()
                    },
                ],
            })
            .await
            .expect("report usage")
            .into_inner();
        match &reported.results[0].outcome {
            Some(usage_record_result::Outcome::Charged(charged)) => assert_eq!(
                charged.receipt.as_ref().unwrap().charged_millicredits,
                7_000
            ),
            other => panic!("not charged: {other:?}"),
        }
        assert!(
            !matches!(
                reported.results[1].outcome,
                Some(usage_record_result::Outcome::Charged(_))
            ),
            "a unit rss.process does not price is refused: {:?}",
            reported.results[1]
        );

        // GetUsage sums each unit per group and in the total.
        let usage = accounts
            .get_usage(GetUsageRequest {
                account_id: "blog".into(),
                group_by: UsageGrouping::Action.into(),
                consistency: fully_consistent(),
                ..Default::default()
            })
            .await
            .expect("usage")
            .into_inner();
        let units: Vec<(String, BTreeMap<String, i64>)> = usage
            .groups
            .iter()
            .map(|g| (g.key.clone(), g.totals.as_ref().unwrap().units.clone()))
            .collect();
        assert_eq!(
            units,
            vec![
                (
                    "interlink.pass".into(),
                    BTreeMap::from([("posts_scanned".into(), 13)])
                ),
                (
                    "rss.process".into(),
                    BTreeMap::from([("rss_items".into(), 7)])
                ),
            ],
            "{backend:?}"
        );
        let total = usage.total.unwrap();
        assert_eq!(total.charged_millicredits, 4_000 + 7_000 + 7_000);
        assert_eq!(
            total.units,
            BTreeMap::from([("posts_scanned".into(), 13), ("rss_items".into(), 7)])
        );
    }
}

/// A request's encoding is its idempotency fingerprint: a retry that
/// reports several units must replay, whatever order they travel in.
#[tokio::test]
async fn a_retry_reporting_several_units_replays_its_first_answer() {
    for backend in BOTH_BACKENDS {
        let server = TestServer::start_with(Options {
            backend,
            rate_card: CARD.into(),
            ..Default::default()
        })
        .await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        open(&mut accounts, "blog").await;
        grant(&mut accounts, "blog", "g", BucketKind::TopUp, 100_000).await;
        let units = BTreeMap::from([
            ("platforms".to_string(), 2),
            ("rss_items".to_string(), 3),
            ("pages".to_string(), 10),
            ("audio_seconds".to_string(), 60),
            ("posts_scanned".to_string(), 4),
        ]);
        let request = debit(
            "campaign-1",
            "campaign.run",
            Some(Dimensions {
                units,
                ..Default::default()
            }),
        );
        // 3,000 + 3,000 + 1,000 + 600 + 2,000.
        let first = metering
            .debit(request.clone())
            .await
            .expect("debit")
            .into_inner();
        assert_eq!(first.receipt.as_ref().unwrap().charged_millicredits, 9_600);
        for _ in 0..5 {
            let again = metering
                .debit(request.clone())
                .await
                .unwrap_or_else(|status| panic!("{backend:?}: a retry was refused: {status:?}"))
                .into_inner();
            assert_eq!(again.receipt, first.receipt);
        }
        assert_eq!(
            balance(&mut accounts, "blog").await.consumed_millicredits,
            9_600
        );
    }
}
