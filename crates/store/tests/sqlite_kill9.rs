//! Acknowledged appends survive `kill -9`, and a batch cut short by it is
//! not half there.
//!
//! The test re-runs this test binary as a child that appends until it is
//! killed, printing each acknowledged version; the parent kills it with
//! SIGKILL, then reopens the file.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tally_store::sqlite::SqliteStore;
use tally_store::{AppendRequest, EventStore, NewEvent};

const CHILD_DB_ENV: &str = "TALLY_STORE_KILL9_CHILD_DB";
const BATCH: u64 = 20;
/// Acknowledgements to wait for before killing: enough that the kill lands
/// while appends are streaming, not before the first one.
const ACKS_BEFORE_KILL: u64 = 30;

#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.sqlite");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_appends_until_killed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child test process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut acknowledged = 0;
    let mut acks = 0;
    while acks < ACKS_BEFORE_KILL {
        let line = lines
            .next()
            .expect("the child exited before it was killed")
            .unwrap();
        if let Some(version) = parse_ack(&line) {
            acknowledged = version;
            acks += 1;
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    // Acknowledgements printed before the kill but not read yet count too.
    for line in lines {
        if let Some(version) = parse_ack(&line.unwrap()) {
            acknowledged = acknowledged.max(version);
        }
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&path)
            .await
            .expect("reopen after kill -9");
        let version = store.stream_version("acct").await.unwrap();
        assert!(
            version >= acknowledged,
            "acknowledged version {acknowledged} lost: the stream is at {version}"
        );
        assert_eq!(version % BATCH, 0, "a batch of {BATCH} was partly written");
        let events = store.read_stream("acct", 1, usize::MAX).await.unwrap();
        assert_eq!(events.len() as u64, version);
        for (index, event) in events.iter().enumerate() {
            assert_eq!(event.version, index as u64 + 1);
            assert_eq!(event.payload, index.to_string().into_bytes());
        }
    });
}

fn parse_ack(line: &str) -> Option<u64> {
    line.strip_prefix("acked ")?.trim().parse().ok()
}

/// The child side; does nothing when run as an ordinary test.
#[test]
fn child_appends_until_killed() {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(path).await.unwrap();
        let mut version = 0;
        loop {
            let events = (version..version + BATCH)
                .map(|index| NewEvent {
                    event_type: "test".into(),
                    payload: index.to_string().into_bytes(),
                    recorded_at_ms: 0,
                })
                .collect();
            let result = store
                .append(AppendRequest {
                    stream_id: "acct".into(),
                    expected_version: version,
                    events,
                    idempotency: Vec::new(),
                    holds: Vec::new(),
                    charges: Vec::new(),
                    next_wakeup_ms: None,
                })
                .await
                .unwrap();
            version = result.last_version;
            // Printed only after the commit returned: a kill between the two
            // under-counts acknowledgements, never over-counts them.
            println!("acked {version}");
            std::io::Write::flush(&mut std::io::stdout()).unwrap();
        }
    });
}
