//! Issue 3's proof under faults, part two: PostgreSQL restarts while
//! tallyd serves. Calls fail with UNAVAILABLE (never INTERNAL, never a hang
//! past their deadline) and the service recovers on its own.
//!
//! This restarts the machine's PostgreSQL, so it is the only test in this
//! binary: cargo runs test binaries one after another.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Tallyd, migrated_database};
use tally_api::v1 as pb;
use tally_api::v1::metering_service_client::MeteringServiceClient;

fn pg_ctlcluster(action: &str) {
    let versions = std::fs::read_dir("/etc/postgresql").expect("a Debian PostgreSQL cluster");
    for version in versions {
        let version = version.unwrap().file_name();
        let status = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                version.to_str().unwrap(),
                "main",
                action,
            ])
            .status()
            .expect("pg_ctlcluster runs");
        assert!(status.success(), "pg_ctlcluster {action} failed");
    }
}

/// PostgreSQL stopped until this is dropped, even by a failing assertion,
/// so a failure here never leaves the other tests without a database.
struct PostgresDown;

impl PostgresDown {
    fn stop() -> PostgresDown {
        pg_ctlcluster("stop");
        PostgresDown
    }
}

impl Drop for PostgresDown {
    fn drop(&mut self) {
        pg_ctlcluster("start");
    }
}

fn debit(key: String) -> tonic::Request<pb::DebitRequest> {
    let mut request = tonic::Request::new(pb::DebitRequest {
        idempotency_key: key,
        account_id: "a".into(),
        member_id: "m".into(),
        action: "agent.step".into(),
        amount_millicredits: Some(5),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(3));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_gives_unavailable_then_recovers() {
    let url = migrated_database().await;
    let tallyd = Tallyd::spawn(&["--database-url", &url]);
    let channel = tallyd.connect().await;
    support::open_funded_account(channel.clone(), "a", pb::BucketKind::TopUp, 1_000_000).await;
    let mut metering = MeteringServiceClient::new(channel);
    metering
        .debit(debit("before".into()))
        .await
        .expect("works before");

    let down = PostgresDown::stop();
    let mut outage = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let result = metering.debit(debit(format!("during-{i}"))).await;
        outage.push((started.elapsed(), result.map(|_| ()).map_err(|s| s.code())));
    }
    drop(down);
    for (elapsed, code) in &outage {
        assert!(
            *elapsed < Duration::from_secs(4),
            "a call hung past its deadline"
        );
        let code = code
            .as_ref()
            .expect_err("no debit can succeed while PostgreSQL is down");
        assert_eq!(
            *code,
            tonic::Code::Unavailable,
            "answered before the deadline, as UNAVAILABLE"
        );
    }

    // It recovers on its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match metering.debit(debit("after".into())).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "tallyd did not recover");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
