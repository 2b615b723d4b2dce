//! Issue 3's proof under faults, part one: replicas over one PostgreSQL,
//! and `kill -9` while acknowledged debits stream in.

mod support;

use futures::future::join_all;
use support::{Tallyd, migrated_database};
use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tally_api::v1::metering_service_client::MeteringServiceClient;

/// SPEC §4 invariant 2 across processes: the store's concurrency control,
/// not an in-process lock, keeps two replicas from overselling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_hold_more_than_granted() {
    let url = migrated_database().await;
    let a = Tallyd::spawn(&["--database-url", &url]);
    let b = Tallyd::spawn(&["--database-url", &url]);
    let (channel_a, channel_b) = (a.connect().await, b.connect().await);

    support::open_funded_account(
        channel_a.clone(),
        "shared",
        pb::BucketKind::Monthly,
        100_000,
    )
    .await;

    // 64 reservers, half on each replica, 4 holds of 1.5 credits each:
    // 256 attempts for 100 credits.
    let tasks = (0..64).map(|caller| {
        let channel = if caller % 2 == 0 {
            channel_a.clone()
        } else {
            channel_b.clone()
        };
        tokio::spawn(async move {
            let mut metering = MeteringServiceClient::new(channel);
            let mut held = Vec::new();
            for attempt in 0..4 {
                let request = pb::ReserveRequest {
                    idempotency_key: format!("r-{caller}-{attempt}"),
                    account_id: "shared".into(),
                    member_id: format!("m{caller}"),
                    action: "agent.step".into(),
                    amount_millicredits: Some(1_500),
                    ..Default::default()
                };
                match metering.reserve(request).await {
                    Ok(r) => held.push(r.into_inner().reservation.unwrap().held_millicredits),
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}")
                    }
                }
            }
            held
        })
    });
    let held: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|t| t.unwrap())
        .collect();
    let total: i64 = held.iter().sum();
    assert!(total <= 100_000, "held {total} of 100000");
    assert_eq!(
        held.len(),
        100_000 / 1_500,
        "every hold that fits is granted, no more"
    );

    // Both replicas agree on what is held.
    for channel in [channel_a, channel_b] {
        let balance = AccountServiceClient::new(channel)
            .get_balance(pb::GetBalanceRequest {
                account_id: "shared".into(),
                consistency: Some(pb::ReadConsistency {
                    requirement: Some(pb::read_consistency::Requirement::FullyConsistent(true)),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .balance
            .unwrap();
        assert_eq!(balance.held_millicredits, total);
        assert_eq!(balance.available_millicredits, 100_000 - total);
        assert_eq!(balance.open_reservations as usize, held.len());
    }
}

/// Refunds racing on two replicas for one charge: the store's version
/// check and the refunded-charge record written in the same append keep
/// their sum at what the charge cost, however they interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_refund_more_than_was_charged() {
    let url = migrated_database().await;
    let a = Tallyd::spawn(&["--database-url", &url]);
    let b = Tallyd::spawn(&["--database-url", &url]);
    let (channel_a, channel_b) = (a.connect().await, b.connect().await);
    support::open_funded_account(channel_a.clone(), "shared", pb::BucketKind::TopUp, 50_000).await;
    MeteringServiceClient::new(channel_a.clone())
        .debit(pb::DebitRequest {
            idempotency_key: "charge".into(),
            account_id: "shared".into(),
            member_id: "ann".into(),
            action: "agent.step".into(),
            amount_millicredits: Some(20_000),
            ..Default::default()
        })
        .await
        .expect("debit");

    // 32 callers, half on each replica, 3 refunds of 0.7 credits each: 96
    // attempts at 67.2 credits for a 20-credit charge.
    let tasks = (0..32).map(|caller| {
        let channel = if caller % 2 == 0 {
            channel_a.clone()
        } else {
            channel_b.clone()
        };
        tokio::spawn(async move {
            let mut metering = MeteringServiceClient::new(channel);
            let mut refunded = Vec::new();
            for attempt in 0..3 {
                let request = pb::RefundRequest {
                    idempotency_key: format!("refund-{caller}-{attempt}"),
                    account_id: "shared".into(),
                    charge_idempotency_key: "charge".into(),
                    amount_millicredits: Some(700),
                    reason: "race".into(),
                };
                match metering.refund(request).await {
                    Ok(r) => refunded.push(r.into_inner().refund.unwrap().amount_millicredits),
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}")
                    }
                }
            }
            refunded
        })
    });
    let refunded: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|t| t.unwrap())
        .collect();
    assert_eq!(
        refunded.len(),
        20_000 / 700,
        "every refund that fits is made, no more"
    );
    let total: i64 = refunded.iter().sum();
    for channel in [channel_a, channel_b] {
        let balance = AccountServiceClient::new(channel)
            .get_balance(pb::GetBalanceRequest {
                account_id: "shared".into(),
                consistency: Some(pb::ReadConsistency {
                    requirement: Some(pb::read_consistency::Requirement::FullyConsistent(true)),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .balance
            .unwrap();
        assert_eq!(balance.consumed_millicredits, 20_000 - total);
        assert_eq!(balance.available_millicredits, 30_000 + total);
    }
}

/// SPEC §4 invariant 5 on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_debit() {
    let url = migrated_database().await;
    support::kill_9_loses_no_acknowledged_debit(&["--database-url", &url], 3).await;
}

/// ReportUsage retried whole after `kill -9`, on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_charges_each_reported_record_once() {
    let url = migrated_database().await;
    support::kill_9_charges_each_reported_record_once(&["--database-url", &url], 2).await;
}

/// Serving waits for the schema: NOT_SERVING until `tallyd migrate` ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_waits_for_migration() {
    let url = support::fresh_database().await;
    let tallyd = Tallyd::spawn(&["--database-url", &url]);
    let channel = tonic::transport::Channel::from_shared(tallyd.uri.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, 2, "NOT_SERVING before the schema exists");
    let refused = AccountServiceClient::new(channel)
        .get_balance(pb::GetBalanceRequest {
            account_id: "a".into(),
            consistency: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);

    let migrated = support::run_tallyd(&["migrate", "--database-url", &url]);
    assert!(migrated.status.success());
    // Health flips to SERVING on its own once the schema is current.
    tallyd.connect().await;
}
