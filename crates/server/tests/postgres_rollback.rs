//! Issue 16, rolling back after a migration: tallyd keeps serving a
//! database whose schema a newer release moved on by expand migrations
//! only (as that release's migration recorded), and `tallyd migrate` and
//! `tallyd verify` work there; once a contract migration follows, tallyd
//! waits for an upgrade instead, and says so.

mod support;

use std::time::{Duration, Instant};

use support::{
    migrated_database, open_funded_account, run_tallyd, spawn_tallyd_with_log, succeeded,
};
use tally_api::v1 as pb;
use tally_api::v1::metering_service_client::MeteringServiceClient;
use tally_store::postgres::SCHEMA_VERSION;
use tokio_postgres::NoTls;

async fn debit(channel: tonic::transport::Channel, key: &str) -> pb::DebitResponse {
    MeteringServiceClient::new(channel)
        .debit(pb::DebitRequest {
            idempotency_key: key.into(),
            account_id: "acme".into(),
            member_id: "m".into(),
            action: "agent.step".into(),
            amount_millicredits: Some(7),
            ..Default::default()
        })
        .await
        .expect("debit")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_build_serves_a_schema_expanded_after_it_and_waits_after_a_contraction() {
    let url = migrated_database().await;
    let (first, _log) = spawn_tallyd_with_log(&["--database-url", &url]);
    let channel = first.connect().await;
    open_funded_account(channel.clone(), "acme", pb::BucketKind::Monthly, 1_000).await;
    debit(channel, "before").await;
    drop(first);

    // The next release's expand migration: a nullable column, and the
    // record that builds from this schema version on still serve.
    let (admin, connection) = tokio_postgres::connect(&url, NoTls).await.expect("admin");
    tokio::spawn(connection);
    admin
        .batch_execute("ALTER TABLE events ADD COLUMN annotation text")
        .await
        .unwrap();
    let next = SCHEMA_VERSION as i32 + 1;
    admin
        .execute(
            "INSERT INTO tally_schema_migrations (version, name, serves_from) \
             VALUES ($1, 'next_expand', $2)",
            &[&next, &(SCHEMA_VERSION as i32)],
        )
        .await
        .unwrap();

    // Rolled back: this build serves, reads and writes, and says why.
    let (rolled_back, log) = spawn_tallyd_with_log(&["--database-url", &url]);
    let channel = rolled_back.connect().await;
    let answer = debit(channel.clone(), "after").await;
    assert_eq!(answer.available_millicredits, 1_000 - 14);
    let said = (0..200)
        .map_while(|_| log.recv_timeout(Duration::from_secs(10)).ok())
        .find(|line| line.contains("newer schema that serves this build"));
    assert!(
        said.is_some(),
        "tallyd did not log that it serves a newer schema"
    );
    // Its migration job and verify run as they would on its own schema.
    succeeded(
        "tallyd migrate",
        run_tallyd(&["migrate", "--database-url", &url]),
    );
    let verified = run_tallyd(&["verify", "--database-url", &url]);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    drop(rolled_back);

    // A contract migration after it: this build must not serve.
    admin
        .execute(
            "INSERT INTO tally_schema_migrations (version, name, serves_from) \
             VALUES ($1, 'next_contract', $1)",
            &[&(next + 1)],
        )
        .await
        .unwrap();
    let (refused, log) = spawn_tallyd_with_log(&["--database-url", &url]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("tallyd says why it does not serve");
        if line.contains("not serving until the schema is current") {
            assert!(line.contains("not declared compatible"), "{line}");
            assert!(line.contains("upgrade tallyd"), "{line}");
            break;
        }
    }
    drop(refused);
    let migrate = run_tallyd(&["migrate", "--database-url", &url]);
    assert!(!migrate.status.success());
    assert!(
        String::from_utf8_lossy(&migrate.stderr).contains("not declared compatible"),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
}
