//! What the conformance suite cannot see: the file itself. These tests open
//! the database behind the store's back, as an operator (or a bug) could.

use std::time::{Duration, Instant};

use rusqlite::Connection;
use tally_store::sqlite::{SCHEMA_VERSION, SqliteOptions, SqliteStore};
use tally_store::{AppendRequest, EventStore, NewEvent, StoreError};

fn append(stream_id: &str, expected_version: u64, count: usize) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.to_owned(),
        expected_version,
        events: (0..count)
            .map(|i| NewEvent {
                event_type: "test".into(),
                payload: vec![i as u8],
                recorded_at_ms: 0,
            })
            .collect(),
        idempotency: vec![tally_store::IdempotencyRecord {
            key: format!("key-{expected_version}"),
            fingerprint: vec![1],
            response: vec![2],
        }],
        holds: Vec::new(),
        charges: Vec::new(),
        next_wakeup_ms: None,
    }
}

#[tokio::test]
async fn open_creates_directories_and_a_migrated_wal_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/tally.sqlite");
    let store = SqliteStore::open(&path).await.expect("open");
    assert_eq!(store.path(), path);
    drop(store);

    let conn = Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    drop(conn);

    // Reopening an up-to-date file must not run migration 1 again (it would
    // fail on CREATE TABLE).
    SqliteStore::open(&path).await.expect("reopen");
}

#[tokio::test]
async fn a_file_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.sqlite");
    drop(SqliteStore::open(&path).await.unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();

    match SqliteStore::open(&path).await {
        Err(StoreError::Unavailable(message)) => assert!(message.contains("newer"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn events_and_idempotency_records_cannot_be_changed_through_sql() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    store.append(append("acct", 0, 2)).await.unwrap();

    let conn = Connection::open(&path).unwrap();
    for statement in [
        "UPDATE events SET payload = x'00'",
        "DELETE FROM events",
        "UPDATE idempotency SET response = x'00'",
        "DELETE FROM idempotency",
    ] {
        let err = conn.execute(statement, []).expect_err(statement);
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
    assert_eq!(store.read_stream("acct", 1, 10).await.unwrap().len(), 2);
    assert_eq!(
        store
            .find_idempotency("acct", &["key-0".to_owned()])
            .await
            .unwrap()[0]
            .response,
        vec![2]
    );
}

#[tokio::test]
async fn a_hole_in_a_stream_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    store.append(append("acct", 0, 1)).await.unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
             VALUES ('acct', 3, 'forged', x'', 0)",
            [],
        )
        .unwrap();

    match store.read_stream("acct", 1, 10).await {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("version 2"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_negative_version_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    // The schema's CHECK refuses this; switching checks off stands in for
    // a damaged or hand-edited file.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             INSERT INTO snapshots (stream_id, version, payload) VALUES ('acct', -1, x'');",
        )
        .unwrap();

    assert!(matches!(
        store.load_snapshot("acct").await,
        Err(StoreError::Corrupt(_))
    ));
}

/// Another process holding the write lock makes an append fail with
/// `Unavailable` after `busy_timeout`; while that append waits, holding the
/// store's writer connection, reads still answer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_behind_a_blocked_append() {
    const BUSY_TIMEOUT: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.sqlite");
    let options = SqliteOptions {
        busy_timeout: BUSY_TIMEOUT,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    store.append(append("acct", 0, 1)).await.unwrap();

    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let started = Instant::now();
    let blocked = tokio::spawn({
        let store = store.clone();
        async move {
            let result = store.append(append("acct", 1, 1)).await;
            (result, Instant::now())
        }
    });
    // Read over and over while the append is out. Which reads overlapped
    // its wait is known once it gives up: SQLite waits at least
    // busy_timeout for the lock, so the append was waiting from
    // `gave_up - BUSY_TIMEOUT` on at the latest. No sleep has to guess
    // when it got there.
    let mut reads = Vec::new();
    while !blocked.is_finished() {
        let read_at = Instant::now();
        assert_eq!(store.read_log(None, 10).await.unwrap().len(), 1);
        assert_eq!(store.stream_version("acct").await.unwrap(), 1);
        reads.push((read_at, Instant::now()));
        // Pacing only.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (result, gave_up) = blocked.await.unwrap();
    match result {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable while another writer holds the lock, got {other:?}"),
    }
    assert!(
        gave_up - started >= BUSY_TIMEOUT,
        "gave up before busy_timeout"
    );
    // Reads that started while the append waited, early enough that a read
    // answering at once ends well before it gives up; one queued behind
    // the append would end only after.
    let waiting = gave_up - BUSY_TIMEOUT..gave_up - Duration::from_millis(500);
    let during: Vec<_> = reads
        .iter()
        .filter(|(read_at, _)| waiting.contains(read_at))
        .collect();
    assert!(
        during.len() >= 10,
        "only {} reads while the append waited",
        during.len()
    );
    for (read_at, answered) in during {
        assert!(
            *answered < gave_up,
            "a read at +{:?} waited behind the append",
            *read_at - started
        );
    }
    other.execute_batch("ROLLBACK").unwrap();
    let result = store
        .append(append("acct", 1, 1))
        .await
        .expect("append once the lock is free");
    assert_eq!(result.last_version, 2);
}
