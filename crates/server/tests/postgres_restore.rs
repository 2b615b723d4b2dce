//! Issue 14, the log's order. A `pg_dump` of a database tallyd has been
//! writing, restored into a new cluster (made here with `initdb`, on a port
//! of its own) whose transaction ids are behind the source's: before
//! `tallyd migrate` the server does not serve and `tallyd verify` says the
//! log is out of order; after it, new writes reach the projections and
//! verify is clean. And `tallyd verify` on a log whose rows were put out of
//! order behind the store's back.

mod support;

use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use support::{
    Tallyd, migrated_database, open_funded_account, run_tallyd, spawn_tallyd_with_log, succeeded,
};
use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tally_api::v1::metering_service_client::MeteringServiceClient;
use tally_store::LogPosition;
use tally_store::postgres::{PostgresOptions, PostgresStore, SchemaStatus, TempCluster};
use tokio_postgres::NoTls;
use tonic::transport::Channel;

const DEBIT: i64 = 7;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

async fn current_xid(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .await
        .unwrap()
        .get(0)
}

/// Moves the server's transaction ids to at least `target`, one short
/// transaction each (not waiting for the WAL: nothing is written).
async fn burn_xids_until(url: &str, target: i64) {
    let client = connect(url).await;
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .unwrap();
    while current_xid(&client).await < target {}
}

fn debit(account: &str, key: String) -> pb::DebitRequest {
    pb::DebitRequest {
        idempotency_key: key,
        account_id: account.into(),
        member_id: "m".into(),
        action: "agent.step".into(),
        amount_millicredits: Some(DEBIT),
        ..Default::default()
    }
}

/// `count` debits of `account`; the last one's consistency token.
async fn debits(channel: &Channel, account: &str, prefix: &str, count: usize) -> LogPosition {
    let mut metering = MeteringServiceClient::new(channel.clone());
    let mut token = String::new();
    for i in 0..count {
        token = metering
            .debit(debit(account, format!("{prefix}-{i}")))
            .await
            .expect("debit")
            .into_inner()
            .consistency_token;
    }
    LogPosition::from_str(&token).expect("a log position")
}

/// `account`'s balance and the idempotency keys of its debits in the
/// ledger, at least as fresh as `token`.
async fn balance_and_ledger(
    channel: &Channel,
    account: &str,
    token: LogPosition,
) -> (pb::Balance, Vec<String>) {
    let mut accounts = AccountServiceClient::new(channel.clone());
    let fresh = || {
        Some(pb::ReadConsistency {
            requirement: Some(pb::read_consistency::Requirement::AtLeastAsFresh(
                token.to_string(),
            )),
        })
    };
    let balance = accounts
        .get_balance(pb::GetBalanceRequest {
            account_id: account.into(),
            consistency: fresh(),
        })
        .await
        .expect("get_balance")
        .into_inner()
        .balance
        .expect("a balance");
    let ledger = accounts
        .list_ledger(pb::ListLedgerRequest {
            account_id: account.into(),
            page_size: 1000,
            kinds: vec![pb::LedgerEntryKind::Debit.into()],
            consistency: fresh(),
            ..Default::default()
        })
        .await
        .expect("list_ledger")
        .into_inner();
    assert!(ledger.next_page_token.is_empty());
    let keys = ledger
        .entries
        .into_iter()
        .map(|e| e.idempotency_key)
        .collect();
    (balance, keys)
}

fn keys(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_dump_restored_into_a_new_cluster_keeps_its_log_in_order() {
    let work = tempfile::tempdir().unwrap();
    // Made first, so that the source can be taken past its transaction ids,
    // as any cluster that has served a while is past a new one's.
    let cluster = TempCluster::start();
    let bindir = cluster.bindir().to_owned();
    let new_cluster_xid = current_xid(&connect(&cluster.url("postgres")).await).await;

    let source = migrated_database().await;
    burn_xids_until(&source, new_cluster_xid + 2_000).await;
    let before_dump = {
        let tallyd = Tallyd::spawn(&["--database-url", &source]);
        let channel = tallyd.connect().await;
        open_funded_account(channel.clone(), "a", pb::BucketKind::TopUp, 1_000_000).await;
        let token = debits(&channel, "a", "before", 10).await;
        let (balance, ledger) = balance_and_ledger(&channel, "a", token).await;
        assert_eq!(balance.consumed_millicredits, 10 * DEBIT);
        assert_eq!(ledger, keys("before", 10));
        token
    };

    // Dump, and restore into the new cluster: the roles first (they belong
    // to the cluster, not to the dump), then the database.
    let dump = work.path().join("tally.dump");
    succeeded(
        "pg_dump",
        Command::new(bindir.join("pg_dump"))
            .args(["-Fc", "-f", dump.to_str().unwrap(), "--dbname", &*source])
            .output()
            .expect("pg_dump runs"),
    );
    let admin = connect(&cluster.url("postgres")).await;
    for statement in ["CREATE ROLE tally_app NOLOGIN", "CREATE DATABASE tally"] {
        admin.batch_execute(statement).await.expect(statement);
    }
    let restored = cluster.url("tally");
    succeeded(
        "pg_restore",
        Command::new(bindir.join("pg_restore"))
            .args(["--exit-on-error", "--no-owner", "--dbname", &restored])
            .arg(&dump)
            .output()
            .expect("pg_restore runs"),
    );

    // The case this is about: the log's newest transaction is ahead of the
    // new cluster's.
    let client = connect(&restored).await;
    let newest: i64 = client
        .query_one("SELECT max(tx::text::bigint) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    let xid = current_xid(&client).await;
    assert!(
        xid < newest,
        "the new cluster (at {xid}) is not behind the restored log (at {newest})"
    );

    let store = PostgresStore::connect(&restored, PostgresOptions::default())
        .await
        .expect("connect");
    let status = store.schema_status().await.expect("status");
    assert!(
        matches!(status, SchemaStatus::LogNeedsRenumbering { .. }),
        "{status:?}"
    );

    // tallyd waits, and says why.
    let (tallyd, log) = spawn_tallyd_with_log(&["--database-url", &restored]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("tallyd says it will not serve");
        if line.contains("not serving until the schema is current") {
            assert!(line.contains("run the migration"), "{line}");
            assert!(line.contains("newest event"), "{line}");
            break;
        }
    }
    // So does verify, with an exit code of its own.
    let verified = run_tallyd(&["verify", "--database-url", &restored]);
    let out = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(3), "{out}");
    assert!(out.contains("log: OUT OF ORDER"), "{out}");
    assert!(out.contains("tallyd migrate"), "{out}");

    succeeded(
        "tallyd migrate",
        run_tallyd(&["migrate", "--database-url", &restored]),
    );
    assert_eq!(
        store.schema_status().await.expect("status"),
        SchemaStatus::Current
    );

    // The waiting tallyd serves now; writes go on, on the restored account
    // and a new one, and reach the projections.
    let channel = tallyd.connect().await;
    let token = debits(&channel, "a", "after", 10).await;
    assert!(
        token > before_dump,
        "a new write ({token}) sorts before the dump's ({before_dump})"
    );
    let (balance, ledger) = balance_and_ledger(&channel, "a", token).await;
    assert_eq!(balance.consumed_millicredits, 20 * DEBIT);
    assert_eq!(
        balance.available_millicredits,
        1_000_000 - balance.consumed_millicredits
    );
    assert_eq!(ledger, [keys("before", 10), keys("after", 10)].concat());
    open_funded_account(channel.clone(), "b", pb::BucketKind::TopUp, 1_000).await;
    let token = debits(&channel, "b", "new", 3).await;
    let (balance, ledger) = balance_and_ledger(&channel, "b", token).await;
    assert_eq!(balance.consumed_millicredits, 3 * DEBIT);
    assert_eq!(ledger, keys("new", 3));

    let verified = run_tallyd(&["verify", "--database-url", &restored]);
    let out = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{out}");
    assert!(out.contains("log: ok"), "{out}");
    for projection in ["balances", "ledger", "usage"] {
        assert!(out.contains(&format!("{projection}: ok")), "{out}");
    }
    drop(tallyd);
    drop(store);
}

/// An event written as the restore bug writes them (a stream's next
/// version, with a transaction id below its first) is what `tallyd verify`
/// reports, naming the stream, with exit code 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_stream_out_of_order() {
    let url = migrated_database().await;
    {
        let tallyd = Tallyd::spawn(&["--database-url", &url]);
        let channel = tallyd.connect().await;
        open_funded_account(channel.clone(), "a", pb::BucketKind::TopUp, 1_000).await;
        debits(&channel, "a", "d", 3).await;
    }
    let verified = run_tallyd(&["verify", "--database-url", &url]);
    let out = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{out}");
    assert!(out.contains("log: ok"), "{out}");

    let owner = connect(&url).await;
    let version: i64 = owner
        .query_one(
            "INSERT INTO events (stream_id, version, tx, event_type, payload, recorded_at_ms)
             SELECT 'a', max(version) + 1, '3'::xid8, 'test', '\\x00', 0
             FROM events WHERE stream_id = 'a'
             RETURNING version",
            &[],
        )
        .await
        .expect("an event out of order")
        .get(0);
    let verified = run_tallyd(&["verify", "--database-url", &url]);
    let out = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(3), "{out}");
    assert!(out.contains("log: OUT OF ORDER"), "{out}");
    assert!(
        out.contains(&format!("stream \"a\": version {version} at 3.")),
        "{out}"
    );
    assert!(out.contains("where version 1 was due"), "{out}");
    assert!(out.contains("projections not verified"), "{out}");
}
