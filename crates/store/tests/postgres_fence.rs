//! The snapshot fence: `read_log` never passes a transaction that is still
//! open, so an event that commits late is never skipped.
//!
//! The trait cannot hold a write transaction open, so these tests write
//! behind the store's back with a raw tokio-postgres session, as another
//! `tallyd` replica would.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tally_store::conformance::Harness;
use tally_store::postgres::{PostgresHarness, PostgresOptions, PostgresStore};
use tally_store::{AppendRequest, EventStore, LogPosition, NewEvent, RecordedEvent, StoreError};
use tokio_postgres::{Client, Config, GenericClient, NoTls};

const ALL: usize = 1_000_000;

fn append(stream_id: &str, expected_version: u64, tag: &str, count: usize) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.to_owned(),
        expected_version,
        events: (0..count)
            .map(|i| NewEvent {
                event_type: "test".into(),
                payload: format!("{tag}#{i}").into_bytes(),
                recorded_at_ms: 0,
            })
            .collect(),
        idempotency: Vec::new(),
        holds: Vec::new(),
        charges: Vec::new(),
        next_wakeup_ms: None,
    }
}

async fn connect_raw(config: &Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("raw connection");
    tokio::spawn(connection);
    client
}

/// Inserts one event as a raw session would, returning its position.
async fn insert_raw(
    client: &impl GenericClient,
    stream_id: &str,
    version: i64,
    payload: &str,
) -> LogPosition {
    let row = client
        .query_one(
            "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
             VALUES ($1, $2, 'raw', $3, 0) RETURNING tx::text::bigint, position",
            &[&stream_id, &version, &payload.as_bytes()],
        )
        .await
        .expect("raw insert");
    LogPosition::new(row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64)
}

/// Waits until the store's sessions (application `tallyd`) in `admin`'s
/// database have started the log read (the fence's `pg_snapshot_xmin`) at
/// two different times: a reader that found the fence holding events back
/// and read again. Panics after 10 s.
async fn reads_log_again(admin: &Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut starts = HashSet::new();
    while starts.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the reader never read the log again: {starts:?}"
        );
        let rows = admin
            .query(
                "SELECT query_start::text FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'tallyd'
                   AND strpos(query, 'pg_snapshot_xmin') > 0",
                &[],
            )
            .await
            .expect("read pg_stat_activity");
        starts.extend(rows.iter().map(|row| row.get::<_, String>(0)));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn payloads(events: &[RecordedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect()
}

/// Writer A opens a transaction and inserts an event (taking the lower
/// position); writer B then appends and commits through the store. Until A
/// commits, the reader must not return B's events: a consumer checkpointing
/// B's position would skip A's event for ever. Once A commits, the reader
/// returns A's event and B's, each once, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_does_not_pass_an_open_writer() {
    let harness = PostgresHarness::new();
    let (store, location) = harness.create().await;
    // Other tests' transactions hold the fence back too (it is cluster-wide):
    // reads that must see everything use `store` and wait up to 5 s; reads
    // that must see nothing use this handle and give up after 300 ms.
    let impatient = PostgresStore::connect_with_config(
        location.config.clone(),
        PostgresOptions {
            log_fence_wait: Duration::from_millis(300),
            ..PostgresOptions::default()
        },
    )
    .await
    .expect("connect");
    store
        .append(append("w", 0, "before", 1))
        .await
        .expect("append");
    let before = store.read_log(None, ALL).await.expect("read_log");
    assert_eq!(payloads(&before), ["before#0"]);
    let checkpoint = before[0].position;

    let mut writer_a = connect_raw(&location.config).await;
    let a = writer_a.transaction().await.expect("begin A");
    let a_position = insert_raw(&a, "x", 1, "A").await;

    let b = store
        .append(append("y", 0, "B", 2))
        .await
        .expect("append B");
    assert!(
        b.positions[0].seq > a_position.seq,
        "B took its positions after A: without a fence, reading by position would return B and skip A"
    );
    assert!(
        b.positions[0] > a_position,
        "A's transaction is older than B's"
    );

    // B has committed, but A, older, is still open: nothing may be returned
    // past it, on this handle or on a fresh one, whatever the cursor.
    let started = Instant::now();
    let held = impatient
        .read_log(Some(checkpoint), ALL)
        .await
        .expect("read_log");
    assert!(
        held.is_empty(),
        "read past an open writer: {:?}",
        payloads(&held)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the reader did not wait for the open writer"
    );
    assert_eq!(
        impatient.read_log(None, ALL).await.expect("read_log"),
        before
    );
    assert!(
        impatient
            .read_log(Some(checkpoint), 1)
            .await
            .expect("read_log")
            .is_empty()
    );
    // Stream reads are not fenced: B's stream is readable at once.
    assert_eq!(
        store
            .read_stream("y", 1, ALL)
            .await
            .expect("read_stream")
            .len(),
        2
    );

    a.commit().await.expect("commit A");
    let after = store
        .read_log(Some(checkpoint), ALL)
        .await
        .expect("read_log");
    assert_eq!(payloads(&after), ["A", "B#0", "B#1"]);
    assert_eq!(after[0].position, a_position);
    assert_eq!(
        after[1..].iter().map(|e| e.position).collect::<Vec<_>>(),
        b.positions
    );
    assert!(
        store
            .read_log(Some(after[2].position), ALL)
            .await
            .expect("read_log")
            .is_empty()
    );
    // Paging one at a time from the start returns each once, in order.
    let mut paged = Vec::new();
    let mut cursor = None;
    while let Some(event) = store.read_log(cursor, 1).await.expect("read_log").pop() {
        cursor = Some(event.position);
        paged.push(event);
    }
    assert_eq!(payloads(&paged), ["before#0", "A", "B#0", "B#1"]);
}

/// With the default fence wait, a read that starts after B's append returned
/// waits for the older open writer rather than leave B out, and returns both
/// once A commits: read-your-writes holds through the fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_waits_for_an_older_writer_to_see_its_own_append() {
    let harness = PostgresHarness::new();
    let (store, location) = harness.create().await;

    let mut writer_a = connect_raw(&location.config).await;
    let a = writer_a.transaction().await.expect("begin A");
    insert_raw(&a, "x", 1, "A").await;
    let b = store
        .append(append("y", 0, "B", 1))
        .await
        .expect("append B");

    let reader = {
        let store = store.clone();
        tokio::spawn(async move { store.read_log(None, ALL).await })
    };
    // The reader does not block on a lock: it polls, reading the log again
    // while the fence hides B. Seeing it read twice shows it is waiting,
    // not merely slow to start; A is still open, so it cannot be done.
    let admin = connect_raw(&location.config).await;
    reads_log_again(&admin).await;
    assert!(!reader.is_finished(), "returned while A was still open");
    a.commit().await.expect("commit A");
    let read = reader.await.unwrap().expect("read_log");
    assert_eq!(payloads(&read), ["A", "B#0"]);
    assert_eq!(read[1].position, b.positions[0]);
}

/// A writer that rolls back leaves no trace and stops holding the fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_writer_releases_the_fence() {
    let (store, location) = PostgresHarness::new().create().await;
    let mut writer_a = connect_raw(&location.config).await;
    let a = writer_a.transaction().await.expect("begin A");
    insert_raw(&a, "x", 1, "A").await;
    store
        .append(append("y", 0, "B", 1))
        .await
        .expect("append B");
    a.rollback().await.expect("rollback A");
    let read = store.read_log(None, ALL).await.expect("read_log");
    assert_eq!(payloads(&read), ["B#0"]);
}

/// Many appenders through the store, plus raw writers that keep their
/// transactions open a few milliseconds (so commits land out of position
/// order all the time), while a reader tails the log with small pages and a
/// 5 ms fence wait, resuming each time from the last position it got. The
/// reader must end up with every committed event exactly once, in strictly
/// increasing positions. An event it skipped would never come back, so the
/// tail would never reach the committed count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailing_reader_sees_every_event_once_under_concurrent_writers() {
    const APPENDERS: usize = 8;
    const APPENDS: usize = 30;
    const RAW_WRITERS: usize = 2;
    const RAW_WRITES: usize = 25;
    let (store, location) = PostgresHarness::new().create().await;
    let tail_store = PostgresStore::connect_with_config(
        location.config.clone(),
        PostgresOptions {
            log_fence_wait: Duration::from_millis(5),
            ..PostgresOptions::default()
        },
    )
    .await
    .expect("connect");
    let store = Arc::new(store);
    // 0 until every writer is done, then how many events they committed.
    let total = Arc::new(AtomicUsize::new(0));

    let tailer = {
        let total = Arc::clone(&total);
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = None;
            loop {
                let expected = total.load(Ordering::SeqCst);
                if expected != 0 && seen.len() >= expected {
                    return seen;
                }
                let page = tail_store.read_log(after, 5).await.expect("read_log");
                for event in &page {
                    if let Some(after) = after {
                        assert!(
                            event.position > after,
                            "tail went back from {after} to {}",
                            event.position
                        );
                    }
                    after = Some(event.position);
                }
                if page.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                seen.extend(page);
            }
        })
    };

    let mut appenders = Vec::new();
    for appender in 0..APPENDERS {
        let store = Arc::clone(&store);
        appenders.push(tokio::spawn(async move {
            let stream_id = format!("acct-{}", appender % 3);
            let mut acknowledged = Vec::new();
            let mut expected = 0;
            for i in 0..APPENDS {
                let tag = format!("s{appender}/{i}");
                loop {
                    match store
                        .append(append(&stream_id, expected, &tag, 1 + i % 4))
                        .await
                    {
                        Ok(result) => {
                            expected = result.last_version;
                            acknowledged.extend(result.positions);
                            break;
                        }
                        Err(StoreError::VersionConflict { actual, .. }) => expected = actual,
                        Err(other) => panic!("appender {appender}: {other}"),
                    }
                }
            }
            acknowledged
        }));
    }
    let mut raw_writers = Vec::new();
    for writer in 0..RAW_WRITERS {
        let config = location.config.clone();
        raw_writers.push(tokio::spawn(async move {
            let mut client = connect_raw(&config).await;
            let stream_id = format!("raw-{writer}");
            let mut written = Vec::new();
            for i in 0..RAW_WRITES {
                let tx = client.transaction().await.expect("begin");
                let payload = format!("r{writer}/{i}");
                written.push(insert_raw(&tx, &stream_id, i as i64 + 1, &payload).await);
                let pause = 3 + (i % 5) as u64 * 2;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                tx.commit().await.expect("commit");
            }
            written
        }));
    }

    let mut committed = HashSet::new();
    for appender in appenders {
        committed.extend(appender.await.expect("appender panicked"));
    }
    for writer in raw_writers {
        committed.extend(writer.await.expect("raw writer panicked"));
    }
    total.store(committed.len(), Ordering::SeqCst);
    let seen = tokio::time::timeout(Duration::from_secs(60), tailer)
        .await
        .expect("the tail never reached every committed event: one was skipped")
        .expect("tailer panicked");

    let seen_positions: HashSet<LogPosition> = seen.iter().map(|e| e.position).collect();
    assert_eq!(seen_positions.len(), seen.len(), "an event was seen twice");
    assert_eq!(seen_positions, committed, "tail vs committed events");
    assert_eq!(
        seen,
        store.read_log(None, ALL).await.expect("read_log"),
        "the tail differs from the whole log read afterwards"
    );
}
