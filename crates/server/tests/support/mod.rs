//! Running tallyd as an operator does: a real process, real signals, and
//! (for the PostgreSQL tests) a fresh database of its own.

#![allow(dead_code)] // each test binary uses part of this

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tally_store::postgres::{PostgresHarness, PostgresLocation};
use tonic::transport::Channel;

pub struct Tallyd {
    pub child: Child,
    pub uri: String,
}

impl Tallyd {
    /// Starts tallyd on an ephemeral port with `args` and reads the port
    /// from its log.
    pub fn spawn(args: &[&str]) -> Tallyd {
        Tallyd::spawn_with_env(args, &[])
    }

    /// [`Tallyd::spawn`] with environment variables set.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Tallyd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tallyd"))
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tallyd starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("tallyd logs its address")
                .expect("log line");
            if line.contains("tallyd listening") {
                let start = line.find("\"addr\":\"").expect("addr field") + 8;
                let end = start + line[start..].find('"').expect("end of addr");
                break line[start..end].to_owned();
            }
        };
        // Keep draining the log so tallyd never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Tallyd {
            child,
            uri: format!("http://{addr}"),
        }
    }

    /// A channel, once health says SERVING.
    pub async fn connect(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(channel) = Channel::from_shared(self.uri.clone())
                .unwrap()
                .connect()
                .await
            {
                let mut health =
                    tonic_health::pb::health_client::HealthClient::new(channel.clone());
                let serving = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().status == 1);
                if serving {
                    return channel;
                }
            }
            assert!(Instant::now() < deadline, "tallyd never became SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    pub fn wait_for_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "tallyd did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tallyd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tallyd, with its log lines handed to the test as they come.
pub fn spawn_tallyd_with_log(args: &[&str]) -> (Tallyd, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tallyd starts");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Keep reading when the test stops listening: a full pipe
            // would block tallyd.
            let _ = lines.send(line);
        }
    });
    let addr = loop {
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .expect("tallyd logs its address");
        if line.contains("tallyd listening") {
            let start = line.find("\"addr\":\"").expect("addr field") + 8;
            let end = start + line[start..].find('"').expect("end of addr");
            break line[start..end].to_owned();
        }
    };
    let tallyd = Tallyd {
        child,
        uri: format!("http://{addr}"),
    };
    (tallyd, received)
}

/// Asserts that a finished command succeeded, showing its output if not.
pub fn succeeded(what: &str, output: Output) -> Output {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `tallyd <args>` to completion.
pub fn run_tallyd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .args(args)
        .output()
        .expect("tallyd runs")
}

/// The PostgreSQL the tests may create databases in.
pub fn admin_url() -> String {
    std::env::var("TALLY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database a test created: derefs to its URL, and is dropped (with the
/// sessions still in it) when the test is done with it.
pub struct TestDatabase {
    url: String,
    _location: PostgresLocation,
}

impl std::ops::Deref for TestDatabase {
    type Target = str;

    fn deref(&self) -> &str {
        &self.url
    }
}

/// Creates a fresh, empty database; it is dropped with the returned guard.
pub async fn fresh_database() -> TestDatabase {
    let (store, location) = PostgresHarness::new().create_unmigrated().await;
    drop(store);
    let admin = admin_url();
    let (base, _) = admin.rsplit_once('/').expect("URL with a database");
    TestDatabase {
        url: format!("{base}/{}", location.name),
        _location: location,
    }
}

/// Creates a fresh database and migrates it with `tallyd migrate`.
pub async fn migrated_database() -> TestDatabase {
    let url = fresh_database().await;
    let migrated = run_tallyd(&["migrate", "--database-url", &url]);
    assert!(
        migrated.status.success(),
        "tallyd migrate failed: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    url
}

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tally_api::v1::metering_service_client::MeteringServiceClient;

const GRANTED: i64 = 1_000_000_000;

/// Opens `account` and grants it `amount` in one bucket of `kind`.
pub async fn open_funded_account(
    channel: Channel,
    account: &str,
    kind: pb::BucketKind,
    amount: i64,
) {
    let mut accounts = AccountServiceClient::new(channel);
    accounts
        .open_account(pb::OpenAccountRequest {
            idempotency_key: "open".into(),
            account_id: account.into(),

            ..Default::default()
        })
        .await
        .expect("account opens");
    accounts
        .grant(pb::GrantRequest {
            idempotency_key: "grant".into(),
            account_id: account.into(),
            kind: kind.into(),
            amount_millicredits: amount,
            ..Default::default()
        })
        .await
        .expect("grant succeeds");
}
/// `count` debits of `amount` on `account` (member `m`, action
/// `agent.step`, keys `d0`, `d1`, …), one after another; the last one's
/// consistency token.
pub async fn debit_times(channel: Channel, account: &str, count: usize, amount: i64) -> String {
    let mut metering = MeteringServiceClient::new(channel);
    let mut token = String::new();
    for i in 0..count {
        token = metering
            .debit(pb::DebitRequest {
                idempotency_key: format!("d{i}"),
                account_id: account.into(),
                member_id: "m".into(),
                action: "agent.step".into(),
                amount_millicredits: Some(amount),
                ..Default::default()
            })
            .await
            .expect("debit succeeds")
            .into_inner()
            .consistency_token;
    }
    token
}

const DEBIT: i64 = 7;

fn debit(key: &str) -> pb::DebitRequest {
    pb::DebitRequest {
        idempotency_key: key.to_owned(),
        account_id: "a".into(),
        member_id: "m".into(),
        action: "agent.step".into(),
        amount_millicredits: Some(DEBIT),
        ..Default::default()
    }
}

/// Waits until the writers have had `calls` answers (or 30 s, after which
/// the caller's check says they never got going), and a little longer, so
/// that the kill lands while calls are in flight, on a busy machine too.
async fn until_answered(answered: &AtomicUsize, calls: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::Relaxed) < calls && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// SPEC §4 invariant 5: `kill -9` of tallyd in the middle of a stream of
/// debits, `rounds` times. Afterwards every acknowledged debit is in the
/// ledger exactly once, the ones cut off are applied at most once when
/// retried, and conservation holds.
pub async fn kill_9_loses_no_acknowledged_debit(args: &[&str], rounds: usize) {
    let mut acknowledged: Vec<String> = Vec::new();
    let mut in_doubt: Vec<String> = Vec::new();
    for round in 0..rounds {
        let mut tallyd = Tallyd::spawn(args);
        let channel = tallyd.connect().await;
        if round == 0 {
            open_funded_account(channel.clone(), "a", pb::BucketKind::TopUp, GRANTED).await;
        }
        // Four writers debit as fast as they can; the process dies under them.
        let answered = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let mut metering = MeteringServiceClient::new(channel.clone());
                let answered = Arc::clone(&answered);
                tokio::spawn(async move {
                    let mut acks = Vec::new();
                    for i in 0.. {
                        let key = format!("debit-{round}-{writer}-{i}");
                        match metering.debit(debit(&key)).await {
                            Ok(_) => {
                                acks.push(key);
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => return (acks, key),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        until_answered(&answered, 11).await;
        tallyd.signal("KILL");
        tallyd.wait_for_exit(Duration::from_secs(10));
        let before = acknowledged.len();
        for writer in writers {
            let (acks, doubt) = writer.await.unwrap();
            acknowledged.extend(acks);
            in_doubt.push(doubt);
        }
        assert!(
            acknowledged.len() > before + 10,
            "round {round}: the writers got going before the kill"
        );
    }

    let tallyd = Tallyd::spawn(args);
    let channel = tallyd.connect().await;
    let mut accounts = AccountServiceClient::new(channel.clone());
    let mut metering = MeteringServiceClient::new(channel);
    // The calls cut off by a kill are retried: at most one effect each.
    for key in &in_doubt {
        metering
            .debit(debit(key))
            .await
            .expect("retry after restart");
    }
    let mut keys = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = accounts
            .list_ledger(pb::ListLedgerRequest {
                account_id: "a".into(),
                page_size: 1000,
                page_token,
                kinds: vec![pb::LedgerEntryKind::Debit.into()],
                consistency: Some(pb::ReadConsistency {
                    requirement: Some(pb::read_consistency::Requirement::FullyConsistent(true)),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        keys.extend(page.entries.into_iter().map(|e| e.idempotency_key));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let unique: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no debit applied twice");
    for key in acknowledged.iter().chain(&in_doubt) {
        assert!(unique.contains(key), "acknowledged debit {key} was lost");
    }
    assert_eq!(keys.len(), acknowledged.len() + in_doubt.len());

    let balance = accounts
        .get_balance(pb::GetBalanceRequest {
            account_id: "a".into(),
            consistency: Some(pb::ReadConsistency {
                requirement: Some(pb::read_consistency::Requirement::FullyConsistent(true)),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .balance
        .unwrap();
    assert_eq!(balance.consumed_millicredits, DEBIT * keys.len() as i64);
    // Conservation, with nothing held, expired or owed.
    assert_eq!(
        (
            balance.granted_millicredits,
            balance.held_millicredits,
            balance.overage_millicredits
        ),
        (GRANTED, 0, 0)
    );
    assert_eq!(
        balance.available_millicredits,
        GRANTED - balance.consumed_millicredits
    );
}

/// The ReportUsage records of one call: `records` records over accounts
/// `r0` and `r1`, keyed `<call>-<j>`.
fn report(call: &str, records: usize) -> pb::ReportUsageRequest {
    pb::ReportUsageRequest {
        records: (0..records)
            .map(|j| pb::UsageRecord {
                idempotency_key: format!("{call}-{j}"),
                account_id: format!("r{}", j % 2),
                member_id: "m".into(),
                action: "agent.step".into(),
                amount_millicredits: Some(DEBIT),
                ..Default::default()
            })
            .collect(),
    }
}

/// Every debit key in `account`'s ledger, fully consistent.
async fn ledger_keys(accounts: &mut AccountServiceClient<Channel>, account: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = accounts
            .list_ledger(pb::ListLedgerRequest {
                account_id: account.into(),
                page_size: 1000,
                page_token,
                kinds: vec![pb::LedgerEntryKind::Debit.into()],
                consistency: Some(pb::ReadConsistency {
                    requirement: Some(pb::read_consistency::Requirement::FullyConsistent(true)),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        keys.extend(page.entries.into_iter().map(|e| e.idempotency_key));
        if page.next_page_token.is_empty() {
            return keys;
        }
        page_token = page.next_page_token;
    }
}

/// `kill -9` of tallyd under a stream of ReportUsage calls, `rounds` times;
/// the calls cut off are sent again whole after a restart. Every record of
/// an answered call, and every record of a retried one, is charged exactly
/// once.
pub async fn kill_9_charges_each_reported_record_once(args: &[&str], rounds: usize) {
    const RECORDS: usize = 40;
    let mut acknowledged: Vec<String> = Vec::new();
    let mut in_doubt: Vec<String> = Vec::new();
    for round in 0..rounds {
        let mut tallyd = Tallyd::spawn(args);
        let channel = tallyd.connect().await;
        if round == 0 {
            for account in ["r0", "r1"] {
                open_funded_account(channel.clone(), account, pb::BucketKind::TopUp, GRANTED).await;
            }
        }
        let answered = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let mut metering = MeteringServiceClient::new(channel.clone());
                let answered = Arc::clone(&answered);
                tokio::spawn(async move {
                    let mut acks = Vec::new();
                    for i in 0.. {
                        let call = format!("report-{round}-{writer}-{i}");
                        match metering.report_usage(report(&call, RECORDS)).await {
                            Ok(response) => {
                                let response = response.into_inner();
                                assert_eq!(response.charged, RECORDS as i64, "{response:?}");
                                acks.push(call);
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => return (acks, call),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        until_answered(&answered, 3).await;
        tallyd.signal("KILL");
        tallyd.wait_for_exit(Duration::from_secs(10));
        let before = acknowledged.len();
        for writer in writers {
            let (acks, doubt) = writer.await.unwrap();
            acknowledged.extend(acks);
            in_doubt.push(doubt);
        }
        assert!(
            acknowledged.len() > before + 2,
            "round {round}: the writers got going before the kill"
        );
    }

    let tallyd = Tallyd::spawn(args);
    let channel = tallyd.connect().await;
    let mut accounts = AccountServiceClient::new(channel.clone());
    let mut metering = MeteringServiceClient::new(channel);
    for call in &in_doubt {
        let response = metering
            .report_usage(report(call, RECORDS))
            .await
            .expect("retry after restart")
            .into_inner();
        assert_eq!(response.charged, RECORDS as i64, "{response:?}");
    }
    let mut keys = ledger_keys(&mut accounts, "r0").await;
    keys.extend(ledger_keys(&mut accounts, "r1").await);
    let unique: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no record charged twice");
    let calls = acknowledged.len() + in_doubt.len();
    assert_eq!(keys.len(), calls * RECORDS, "every record charged once");
    for call in acknowledged.iter().chain(&in_doubt) {
        for j in 0..RECORDS {
            assert!(
                unique.contains(&format!("{call}-{j}")),
                "{call}-{j} was lost"
            );
        }
    }
}
