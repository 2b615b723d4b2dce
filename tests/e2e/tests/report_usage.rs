//! ReportUsage: many records in one call, each charged as a Debit would be,
//! each idempotent on its own key and answered on its own.

use std::time::Duration;

use tally_e2e::*;
use usage_record_result::Outcome;

fn record(account: &str, key: &str, amount: Option<i64>) -> UsageRecord {
    UsageRecord {
        idempotency_key: key.into(),
        account_id: account.into(),
        member_id: "alice".into(),
        action: "article.draft".into(),
        amount_millicredits: amount,
        ..Default::default()
    }
}

fn charged(result: &UsageRecordResult) -> &DebitResponse {
    match &result.outcome {
        Some(Outcome::Charged(charged)) => charged,
        other => panic!("not charged: {other:?}"),
    }
}

fn refused(result: &UsageRecordResult) -> &RecordError {
    match &result.outcome {
        Some(Outcome::Refused(refused)) => refused,
        other => panic!("not refused: {other:?}"),
    }
}

fn timestamp(at: tally_core::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_millis() / 1000,
        nanos: 0,
    }
}

async fn report(
    metering: &mut MeteringServiceClient<tonic::transport::Channel>,
    records: Vec<UsageRecord>,
) -> ReportUsageResponse {
    metering
        .report_usage(ReportUsageRequest { records })
        .await
        .expect("report usage")
        .into_inner()
}

#[tokio::test]
async fn each_record_is_charged_or_refused_alone_and_retries_are_safe() {
    for backend in BOTH_BACKENDS {
        let server = TestServer::start_with(Options {
            backend,
            ..Default::default()
        })
        .await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        open(&mut accounts, "big").await;
        open(&mut accounts, "small").await;
        grant(&mut accounts, "big", "g-big", BucketKind::Monthly, 10_000).await;
        grant(
            &mut accounts,
            "small",
            "g-small",
            BucketKind::Monthly,
            1_500,
        )
        .await;

        let future = START.as_millis() + 3_600_000;
        let records = vec![
            // Priced from the rate card: 2,000.
            record("big", "r-0", None),
            UsageRecord {
                idempotency_key: String::new(),
                account_id: "has space".into(),
                action: "Not An Action".into(),
                ..record("big", "x", None)
            },
            record("small", "r-2", Some(1_000)),
            // Charged after r-2, in the order sent: 500 left.
            record("small", "r-3", Some(1_000)),
            UsageRecord {
                action: "no.such.action".into(),
                ..record("big", "r-4", None)
            },
            // r-0 again, in the same call: the first answer.
            record("big", "r-0", None),
            UsageRecord {
                occurred_at: Some(timestamp(tally_core::Timestamp::from_millis(future))),
                ..record("big", "r-6", Some(100))
            },
        ];
        let response = report(&mut metering, records.clone()).await;
        assert_eq!(response.results.len(), records.len(), "{backend:?}");
        assert_eq!((response.charged, response.refused), (3, 4), "{backend:?}");

        let first = charged(&response.results[0]);
        assert_eq!(first.receipt.as_ref().unwrap().charged_millicredits, 2_000);
        assert_eq!(first.available_millicredits, 8_000);
        let invalid = refused(&response.results[1]);
        assert_eq!(invalid.code, tonic::Code::InvalidArgument as i32);
        assert_eq!(invalid.reason, "INVALID_ARGUMENT");
        assert_eq!(
            invalid.fields,
            vec!["idempotency_key", "account_id", "action"]
        );
        assert_eq!(charged(&response.results[2]).available_millicredits, 500);
        let poor = refused(&response.results[3]);
        assert_eq!(poor.reason, "INSUFFICIENT_CREDITS", "{poor:?}");
        assert_eq!(poor.code, tonic::Code::FailedPrecondition as i32);
        assert_eq!(refused(&response.results[4]).reason, "UNKNOWN_ACTION");
        assert_eq!(
            charged(&response.results[5]),
            first,
            "a retried key answers the same"
        );
        let ahead = refused(&response.results[6]);
        assert_eq!(ahead.fields, vec!["occurred_at"], "{ahead:?}");

        assert_eq!(
            balance(&mut accounts, "big").await.available_millicredits,
            8_000
        );
        assert_eq!(
            balance(&mut accounts, "small").await.available_millicredits,
            500
        );

        // The whole call again: every record answers as before, nothing is
        // charged twice.
        let again = report(&mut metering, records).await;
        for (i, (before, after)) in response.results.iter().zip(&again.results).enumerate() {
            match (&before.outcome, &after.outcome) {
                (Some(Outcome::Charged(a)), Some(Outcome::Charged(b))) => {
                    assert_eq!(a, b, "record {i}")
                }
                (Some(Outcome::Refused(_)), Some(Outcome::Refused(_))) => {}
                other => panic!("record {i} answered differently: {other:?}"),
            }
        }
        assert_eq!(
            balance(&mut accounts, "big").await.available_millicredits,
            8_000
        );
        assert_eq!(
            balance(&mut accounts, "small").await.available_millicredits,
            500
        );

        // A key reused for another record is refused, not charged.
        let reused = report(&mut metering, vec![record("small", "r-2", Some(200))]).await;
        assert_eq!(refused(&reused.results[0]).reason, "IDEMPOTENCY_KEY_REUSED");
        assert_eq!(
            balance(&mut accounts, "small").await.available_millicredits,
            500
        );
    }
}

#[tokio::test]
async fn too_many_records_fail_the_call_and_charge_nothing() {
    let server = TestServer::start().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open(&mut accounts, "acme").await;
    grant(&mut accounts, "acme", "g", BucketKind::Monthly, 5_000_000).await;
    let records: Vec<UsageRecord> = (0..1_001)
        .map(|i| record("acme", &format!("k{i}"), Some(1)))
        .collect();
    let status = metering
        .report_usage(ReportUsageRequest { records })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["records"]);
    assert_eq!(
        balance(&mut accounts, "acme").await.available_millicredits,
        5_000_000
    );
}

#[tokio::test]
async fn the_stream_answers_every_record_in_order() {
    for backend in BOTH_BACKENDS {
        let server = TestServer::start_with(Options {
            backend,
            ..Default::default()
        })
        .await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        open(&mut accounts, "hot").await;
        open(&mut accounts, "cold").await;
        grant(
            &mut accounts,
            "hot",
            "g-hot",
            BucketKind::Monthly,
            2_000_000,
        )
        .await;
        grant(&mut accounts, "cold", "g-cold", BucketKind::Monthly, 3_000).await;

        // Three messages of 400; every tenth record is for `cold`, which
        // can pay for three of its twelve.
        let messages: Vec<ReportUsageStreamRequest> = (0..3)
            .map(|m| ReportUsageStreamRequest {
                records: (0..400)
                    .map(|i| {
                        let n = m * 400 + i;
                        let account = if n % 10 == 0 { "cold" } else { "hot" };
                        record(account, &format!("s{n}"), Some(1_000))
                    })
                    .collect(),
            })
            .collect();
        let response = metering
            .report_usage_stream(tokio_stream::iter(messages))
            .await
            .expect("stream")
            .into_inner();
        assert_eq!(response.results.len(), 1_200, "{backend:?}");
        assert_eq!((response.charged, response.refused), (1_083, 117));
        let mut hot_available = 2_000_000;
        let mut cold_paid = 0;
        for (n, result) in response.results.iter().enumerate() {
            if n % 10 == 0 {
                // The first three records of `cold`, in the order sent.
                if cold_paid < 3 {
                    charged(result);
                    cold_paid += 1;
                } else {
                    assert_eq!(refused(result).reason, "INSUFFICIENT_CREDITS", "record {n}");
                }
            } else {
                hot_available -= 1_000;
                assert_eq!(
                    charged(result).available_millicredits,
                    hot_available,
                    "record {n} of hot, in order"
                );
            }
        }
        assert_eq!(
            balance(&mut accounts, "hot").await.available_millicredits,
            hot_available
        );
        assert_eq!(
            balance(&mut accounts, "cold").await.available_millicredits,
            0
        );
    }
}

#[tokio::test]
async fn reported_usage_counts_on_the_day_it_happened() {
    const DAY: Duration = Duration::from_secs(86_400);
    let server = TestServer::start().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open(&mut accounts, "acme").await;
    grant(&mut accounts, "acme", "g", BucketKind::Monthly, 100_000).await;
    server.advance(3 * DAY);
    // 2026-01-16T01:00Z, two days before the server's now.
    let happened = tally_core::Timestamp::from_millis(START.as_millis() + 25 * 3_600_000);
    let response = report(
        &mut metering,
        vec![
            UsageRecord {
                occurred_at: Some(timestamp(happened)),
                ..record("acme", "late", Some(700))
            },
            record("acme", "now", Some(300)),
            UsageRecord {
                occurred_at: Some(timestamp(tally_core::Timestamp::from_millis(
                    START.as_millis() - 5 * 86_400_000,
                ))),
                ..record("acme", "too-late", Some(1))
            },
        ],
    )
    .await;
    assert_eq!((response.charged, response.refused), (2, 1));
    assert_eq!(refused(&response.results[2]).fields, vec!["occurred_at"]);

    let usage = accounts
        .get_usage(GetUsageRequest {
            account_id: "acme".into(),
            group_by: UsageGrouping::Day.into(),
            period: Some(get_usage_request::Period::Days(DayRange {
                first_day: "2026-01-14".into(),
                last_day: "2026-01-18".into(),
            })),
            consistency: fully_consistent(),
            ..Default::default()
        })
        .await
        .expect("usage")
        .into_inner();
    let days: Vec<(String, i64)> = usage
        .groups
        .iter()
        .map(|g| {
            (
                g.key.clone(),
                g.totals.as_ref().unwrap().charged_millicredits,
            )
        })
        .filter(|(_, charged)| *charged > 0)
        .collect();
    assert_eq!(
        days,
        vec![
            ("2026-01-16".to_owned(), 700),
            ("2026-01-18".to_owned(), 300)
        ]
    );
    // The charge itself happened now.
    assert_eq!(
        balance(&mut accounts, "acme").await.available_millicredits,
        99_000
    );
}
