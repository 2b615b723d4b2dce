//! The tallyd binary as an operator runs it: a real process, real signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tally_api::v1::metering_service_client::MeteringServiceClient;
use tonic::transport::Channel;

/// Starts tallyd on an ephemeral port and reads the port from its log.
fn spawn_tallyd(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(data_dir)
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
    (child, format!("http://{addr}"))
}

async fn connect(uri: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Channel::from_shared(uri.to_owned())
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => {
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
            Err(_) if Instant::now() < deadline => {}
            Err(e) => panic!("cannot reach tallyd: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wait_for_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "tallyd did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, uri) = spawn_tallyd(data.path());
    let mut accounts = AccountServiceClient::new(connect(&uri).await);
    accounts
        .open_account(pb::OpenAccountRequest {
            idempotency_key: "k".into(),
            account_id: "a".into(),
        })
        .await
        .unwrap();
    signal(&child, "TERM");
    let status = wait_for_exit(&mut child, Duration::from_secs(15));
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
}

/// SPEC §4 invariant 5 on the embedded store: `kill -9` in the middle of a
/// stream of debits loses nothing that was acknowledged, and a retry of an
/// unacknowledged one applies it at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_debit() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, uri) = spawn_tallyd(data.path());
    let channel = connect(&uri).await;
    let mut accounts = AccountServiceClient::new(channel.clone());
    accounts
        .open_account(pb::OpenAccountRequest {
            idempotency_key: "open".into(),
            account_id: "a".into(),
        })
        .await
        .unwrap();
    accounts
        .grant(pb::GrantRequest {
            idempotency_key: "grant".into(),
            account_id: "a".into(),
            kind: pb::BucketKind::TopUp.into(),
            amount_millicredits: 1_000_000_000,
            ..Default::default()
        })
        .await
        .unwrap();

    // Four writers debit as fast as they can; the process dies under them.
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let mut metering = MeteringServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let key = format!("debit-{writer}-{i}");
                    let request = pb::DebitRequest {
                        idempotency_key: key.clone(),
                        account_id: "a".into(),
                        member_id: "m".into(),
                        action: "agent.step".into(),
                        amount_millicredits: Some(7),
                        ..Default::default()
                    };
                    match metering.debit(request).await {
                        Ok(_) => acknowledged.push(key),
                        Err(_) => return (acknowledged, key),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal(&child, "KILL");
    wait_for_exit(&mut child, Duration::from_secs(10));
    let mut acknowledged = Vec::new();
    let mut in_doubt = Vec::new();
    for writer in writers {
        let (acks, doubt) = writer.await.unwrap();
        acknowledged.extend(acks);
        in_doubt.push(doubt);
    }
    assert!(
        acknowledged.len() > 20,
        "the writers got going before the kill"
    );

    let (mut child, uri) = spawn_tallyd(data.path());
    let channel = connect(&uri).await;
    let mut accounts = AccountServiceClient::new(channel.clone());
    let mut metering = MeteringServiceClient::new(channel);
    // The calls cut off by the kill are retried: at most one effect each.
    for key in &in_doubt {
        metering
            .debit(pb::DebitRequest {
                idempotency_key: key.clone(),
                account_id: "a".into(),
                member_id: "m".into(),
                action: "agent.step".into(),
                amount_millicredits: Some(7),
                ..Default::default()
            })
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
        })
        .await
        .unwrap()
        .into_inner()
        .balance
        .unwrap();
    assert_eq!(balance.consumed_millicredits, 7 * keys.len() as i64);
    assert_eq!(
        balance.available_millicredits,
        1_000_000_000 - balance.consumed_millicredits
    );
    signal(&child, "TERM");
    wait_for_exit(&mut child, Duration::from_secs(15));
}
