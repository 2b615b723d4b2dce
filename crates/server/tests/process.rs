//! The tallyd binary as an operator runs it: a real process, real signals.

mod support;

use std::time::Duration;

use support::Tallyd;
use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let mut tallyd = Tallyd::spawn(&["--data-dir", data.path().to_str().unwrap()]);
    let mut accounts = AccountServiceClient::new(tallyd.connect().await);
    accounts
        .open_account(pb::OpenAccountRequest {
            idempotency_key: "k".into(),
            account_id: "a".into(),

            ..Default::default()
        })
        .await
        .unwrap();
    tallyd.signal("TERM");
    let status = tallyd.wait_for_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
}

/// With a shutdown delay, SIGTERM first turns health NOT_SERVING while
/// calls are still served (endpoints drain), then shuts down cleanly.
#[tokio::test]
async fn sigterm_with_a_delay_drains_before_it_stops() {
    let data = tempfile::tempdir().unwrap();
    let mut tallyd = Tallyd::spawn(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--shutdown-delay-secs",
        "3",
    ]);
    let channel = tallyd.connect().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = || tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(
        health.check(status()).await.unwrap().into_inner().status,
        serving
    );
    // `tallyd health`, as a container's HEALTHCHECK runs it.
    let addr = tallyd.uri.trim_start_matches("http://").to_owned();
    let probe = || {
        support::run_tallyd(&["health", "--listen", &addr])
            .status
            .code()
    };
    assert_eq!(probe(), Some(0), "serving");
    tallyd.signal("TERM");
    let mut draining = false;
    for _ in 0..100 {
        if health.check(status()).await.unwrap().into_inner().status != serving {
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(draining, "health never turned NOT_SERVING after SIGTERM");
    assert_eq!(probe(), Some(1), "draining: not serving");
    // Still taking calls while endpoints drain.
    AccountServiceClient::new(channel)
        .open_account(pb::OpenAccountRequest {
            idempotency_key: "k".into(),
            account_id: "during-the-delay".into(),
            ..Default::default()
        })
        .await
        .expect("served during the delay");
    let status = tallyd.wait_for_exit(Duration::from_secs(20));
    assert!(status.success(), "exits 0 after the delay, got {status:?}");
    assert_eq!(probe(), Some(2), "gone: unreachable");
}

/// A collector that takes connections and never answers (the worst kind
/// of dead endpoint) holds up neither the calls nor the shutdown: spans
/// and metrics leave on the SDK's threads, and exiting gives up on them
/// after its cap.
#[tokio::test]
async fn an_unresponsive_collector_holds_up_neither_calls_nor_shutdown() {
    // Bound but never accepted: connections hang after the handshake.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    let data = tempfile::tempdir().unwrap();
    let mut tallyd = Tallyd::spawn_with_env(
        &["--data-dir", data.path().to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let mut accounts = AccountServiceClient::new(tallyd.connect().await);
    for n in 0..20 {
        accounts
            .open_account(pb::OpenAccountRequest {
                idempotency_key: format!("k-{n}"),
                account_id: format!("a-{n}"),
                ..Default::default()
            })
            .await
            .expect("calls are answered while the collector hangs");
    }
    tallyd.signal("TERM");
    // Nothing in flight, so the drain is immediate; the rest is the
    // telemetry flush, capped at 5 s.
    let status = tallyd.wait_for_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "exits 0 without its telemetry, got {status:?}"
    );
    drop(black_hole);
}

/// SPEC §4 invariant 5 on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_debit() {
    let data = tempfile::tempdir().unwrap();
    support::kill_9_loses_no_acknowledged_debit(&["--data-dir", data.path().to_str().unwrap()], 3)
        .await;
}

/// ReportUsage retried whole after `kill -9`: each record charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_charges_each_reported_record_once() {
    let data = tempfile::tempdir().unwrap();
    support::kill_9_charges_each_reported_record_once(
        &["--data-dir", data.path().to_str().unwrap()],
        2,
    )
    .await;
}

/// `tallyd verify` exits 0 when every projection matches a rebuild from the
/// log, 1 when one does not and 2 when it cannot tell; `tallyd rebuild` repairs it and reports
/// its rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_rebuild_as_an_operator_runs_them() {
    use tally_store::{ProjectionCommit, ProjectionStore, SqlStatement};

    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let mut tallyd = Tallyd::spawn(&["--data-dir", dir]);
    let channel = tallyd.connect().await;
    support::open_funded_account(channel.clone(), "a", pb::BucketKind::TopUp, 1_000_000).await;
    let token = support::debit_times(channel.clone(), "a", 25, 700).await;
    // Every projection past the last write before stopping.
    let mut accounts = AccountServiceClient::new(channel);
    let fresh = Some(pb::ReadConsistency {
        requirement: Some(pb::read_consistency::Requirement::AtLeastAsFresh(token)),
    });
    accounts
        .get_usage(pb::GetUsageRequest {
            account_id: "a".into(),
            group_by: pb::UsageGrouping::Member.into(),
            consistency: fresh,
            ..Default::default()
        })
        .await
        .unwrap();
    tallyd.signal("TERM");
    assert!(tallyd.wait_for_exit(Duration::from_secs(15)).success());

    let verified = support::run_tallyd(&["verify", "--data-dir", dir]);
    let out = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{out}");
    for projection in ["balances", "ledger", "usage"] {
        assert!(out.contains(&format!("{projection}: ok")), "{out}");
    }

    // A ledger row edited behind the projection's back.
    {
        let store = tally_store::sqlite::SqliteStore::open(data.path().join("tally.sqlite"))
            .await
            .unwrap();
        let checkpoint = store.projection_checkpoint("ledger").await.unwrap();
        store
            .commit_projection(ProjectionCommit::single(
                "ledger",
                checkpoint.generation,
                checkpoint.position,
                checkpoint.schema_version,
                0,
                vec![SqlStatement::new(
                    "UPDATE ledger_entries SET amount = amount + 1 WHERE seq = 5",
                    vec![],
                )],
            ))
            .await
            .unwrap();
    }
    let verified = support::run_tallyd(&["verify", "--data-dir", dir]);
    let out = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{out}");
    assert!(out.contains("ledger: 1 differences"), "{out}");
    assert!(out.contains("balances: ok"), "{out}");

    let rebuilt = support::run_tallyd(&["rebuild", "--projection", "ledger", "--data-dir", dir]);
    let out = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(rebuilt.status.success(), "{out}");
    assert!(
        out.contains("rebuilt ledger:") && out.contains("events/s"),
        "{out}"
    );
    assert!(
        support::run_tallyd(&["verify", "--data-dir", dir])
            .status
            .success()
    );

    // All of them at once: one pass over the log feeds the three.
    let rebuilt = support::run_tallyd(&["rebuild", "--data-dir", dir]);
    let out = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(rebuilt.status.success(), "{out}");
    assert_eq!(
        out.matches("rebuilt balances, ledger, usage:").count(),
        1,
        "{out}"
    );
    assert!(
        support::run_tallyd(&["verify", "--data-dir", dir])
            .status
            .success()
    );

    // Could not tell (the database is unreachable): 2, not 1.
    let unreachable = support::run_tallyd(&[
        "verify",
        "--database-url",
        "postgres://tally@127.0.0.1:1/nowhere",
    ]);
    assert_eq!(unreachable.status.code(), Some(2));

    let unknown = support::run_tallyd(&["rebuild", "--projection", "nope", "--data-dir", dir]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown projection"));
}

/// On the embedded store too, `tallyd rebuild` beside a serving `tallyd`
/// finds the runner lock taken (it is a file lock, across processes), so
/// it resets the projection and leaves the rebuild to the running runner,
/// which does it with no traffic to prompt it. Before, the second process
/// took a lock of its own and both folded the log at once, the rebuild
/// failing on the other's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_beside_a_serving_tallyd_on_the_embedded_store() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let mut tallyd = Tallyd::spawn(&["--data-dir", dir]);
    let channel = tallyd.connect().await;
    support::open_funded_account(channel.clone(), "a", pb::BucketKind::TopUp, 1_000_000).await;
    support::debit_times(channel.clone(), "a", 10, 700).await;

    let rebuilt = support::run_tallyd(&["rebuild", "--projection", "ledger", "--data-dir", dir]);
    let out = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(
        rebuilt.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert!(
        out.contains("rebuilt ledger (by the running tallyd)"),
        "{out}"
    );
    let entries = AccountServiceClient::new(channel)
        .list_ledger(pb::ListLedgerRequest {
            account_id: "a".into(),
            page_size: 100,
            kinds: vec![pb::LedgerEntryKind::Debit.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 10, "every debit is in the rebuilt ledger");

    tallyd.signal("TERM");
    assert!(tallyd.wait_for_exit(Duration::from_secs(15)).success());
    let verified = support::run_tallyd(&["verify", "--data-dir", dir]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}

/// tallyd serving with `url`, its log lines arriving on the receiver.
fn serve_with_database(url: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .args(["--listen", "127.0.0.1:0", "--database-url", url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tallyd starts");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, log)
}

/// A database URL that can never work is a reason to exit, not to retry
/// every second: tallyd exits 1 with the reason, and without the password.
/// A database that is not there yet is retried.
#[test]
fn a_wrong_database_url_exits_with_the_reason() {
    let deadline = Duration::from_secs(20);
    let admin = support::admin_url();
    let separator = if admin.contains('?') { '&' } else { '?' };
    let refused_setting = format!("{admin}{separator}options=-c%20no_such_setting%3D1");
    for (url, why) in [
        (
            "postgres://tally:s3cret@127.0.0.1:1/tally?sslmode=bogus",
            "invalid value for option `sslmode`",
        ),
        (
            "host=127.0.0.1 port=1 user=tally password=my s3cret words",
            "must be in single quotes",
        ),
        (refused_setting.as_str(), "no_such_setting"),
    ] {
        let (mut child, log) = serve_with_database(url);
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                panic!("{url}: tallyd still running after {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log: Vec<String> = log.try_iter().collect();
        let log = log.join("\n");
        assert_eq!(status.code(), Some(1), "{url}: {log}");
        assert!(log.contains("retrying will not help"), "{log}");
        assert!(log.contains(why), "{url}: {log}");
        assert!(!log.contains("s3cret"), "{log}");
    }

    // Nothing listens on port 1 yet: tallyd tries again and again.
    let (mut child, log) = serve_with_database("postgres://tally:s3cret@127.0.0.1:1/tally");
    let mut retries = 0;
    while retries < 2 {
        let line = log.recv_timeout(deadline).expect("tallyd logs its retries");
        if line.contains("cannot connect to PostgreSQL; retrying") {
            retries += 1;
        }
        assert!(!line.contains("s3cret"), "{line}");
    }
    assert!(child.try_wait().expect("wait").is_none(), "tallyd exited");
    let _ = child.kill();
    let _ = child.wait();
}
