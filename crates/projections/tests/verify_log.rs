//! `verify_log` on both stores: a log written through the store is in
//! order; rows written behind its back that put a stream's events out of
//! order are found and named.

use tally_projections::verify::verify_log;
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;
use tally_store::{AppendRequest, EventStore, LogPosition, NewEvent, ProjectionStore};
use tokio_postgres::NoTls;

fn append(stream_id: &str, expected_version: u64, count: usize) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.to_owned(),
        expected_version,
        events: (0..count)
            .map(|_| NewEvent {
                event_type: "test".into(),
                payload: vec![0],
                recorded_at_ms: 0,
            })
            .collect(),
        idempotency: Vec::new(),
        holds: Vec::new(),
        charges: Vec::new(),
        next_wakeup_ms: None,
    }
}

/// Seven events of two streams, interleaved; in order.
async fn write_in_order<S: EventStore + ProjectionStore>(store: &S) {
    for (stream, expected, count) in [("a", 0, 3), ("b", 0, 2), ("a", 3, 2)] {
        store
            .append(append(stream, expected, count))
            .await
            .expect("append");
    }
    // Batches of 2: the pass pages through the log.
    let report = verify_log(store, 2).await.expect("verify_log");
    assert!(report.is_ordered(), "{report:?}");
    assert_eq!((report.events, report.streams), (7, 2));
    assert_eq!(report.scanned_to, store.log_head().await.unwrap());
}

/// What every backend shows for stream b written as 1, 2, 4, 3.
fn assert_b_swapped(examples: &[String], at: impl Fn(u64) -> LogPosition) {
    assert!(
        examples.contains(&format!(
            "stream \"b\": version 4 at {} where version 3 was due",
            at(4)
        )),
        "{examples:?}"
    );
    assert!(
        examples.contains(&format!(
            "stream \"b\": version 3 at {} where version 5 was due",
            at(3)
        )),
        "{examples:?}"
    );
}

#[tokio::test]
async fn sqlite_a_stream_out_of_order_is_reported() {
    let (store, location) = SqliteHarness::new().create().await;
    write_in_order(&store).await;

    // Behind the store's back: b's version 4, then its version 3.
    let file = rusqlite::Connection::open(&location.path).unwrap();
    file.execute_batch(
        "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
         VALUES ('b', 4, 'test', x'00', 0);
         INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
         VALUES ('b', 3, 'test', x'00', 0);",
    )
    .unwrap();
    let report = verify_log(&store, 2).await.expect("verify_log");
    assert!(!report.is_ordered());
    assert_eq!(
        (
            report.events,
            report.streams,
            report.out_of_order,
            report.disordered_streams
        ),
        (9, 2, 2, 1)
    );
    // SQLite positions are the rowids, in insert order.
    assert_b_swapped(&report.examples, |version| {
        LogPosition::new(0, if version == 4 { 8 } else { 9 })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_streams_out_of_order_are_reported() {
    let (store, location) = PostgresHarness::new().create().await;
    write_in_order(&store).await;

    let (admin, connection) = location.config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    // b's version 4, then its version 3, each its own transaction.
    let mut written = Vec::new();
    for version in [4_i64, 3] {
        let row = admin
            .query_one(
                "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
                 VALUES ('b', $1, 'test', '\\x00', 0)
                 RETURNING tx::text::bigint, position",
                &[&version],
            )
            .await
            .unwrap();
        let (tx, position): (i64, i64) = (row.get(0), row.get(1));
        written.push(LogPosition::new(tx as u64, position as u64));
    }
    // And what a restored log shows when appended to before `tallyd
    // migrate`: a's next version with a transaction id below its first.
    admin
        .execute(
            "INSERT INTO events (stream_id, version, tx, event_type, payload, recorded_at_ms)
             VALUES ('a', 6, '3'::xid8, 'test', '\\x00', 0)",
            &[],
        )
        .await
        .unwrap();

    let report = verify_log(&store, 2).await.expect("verify_log");
    assert!(!report.is_ordered());
    // a: 6 before 1, then 1 after 6; b: 4 before 3, then 3 after 4.
    assert_eq!(
        (
            report.events,
            report.streams,
            report.out_of_order,
            report.disordered_streams
        ),
        (10, 2, 4, 2)
    );
    assert!(
        report.examples[0].starts_with("stream \"a\": version 6 at 3.")
            && report.examples[0].ends_with("where version 1 was due"),
        "{:?}",
        report.examples
    );
    assert!(
        report.examples[1].starts_with("stream \"a\": version 1 at ")
            && report.examples[1].ends_with("where version 7 was due"),
        "{:?}",
        report.examples
    );
    assert_b_swapped(&report.examples, |version| {
        written[if version == 4 { 0 } else { 1 }]
    });
}
