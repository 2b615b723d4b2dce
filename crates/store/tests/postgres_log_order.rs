//! The global log's order after a logical restore, on one cluster: events
//! inserted by the owner with transaction ids far ahead of the cluster's
//! stand for a dump restored from a cluster that was ahead (the whole dump
//! and restore, into a cluster of its own, is `crates/server/tests/
//! postgres_restore.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_store::conformance::Harness;
use tally_store::postgres::{
    APP_ROLE, PostgresHarness, PostgresLocation, PostgresOptions, PostgresStore, Renumbering,
    SchemaStatus,
};
use tally_store::{AppendRequest, EventStore, NewEvent, RecordedEvent};
use tokio_postgres::{Client, Config, NoTls};

/// How far ahead of this cluster the "restored" events were written.
const AHEAD: i64 = 1_000_000;

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
        idempotency: Vec::new(),
        holds: Vec::new(),
        charges: Vec::new(),
        next_wakeup_ms: None,
    }
}

/// The fence reads the whole cluster's oldest open transaction, and one of
/// these tests holds a transaction open on purpose: run together, they would
/// hold back each other's log reads.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

async fn connect_raw(config: &Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("raw connection");
    tokio::spawn(connection);
    client
}

/// A migrated store whose reads wait little for the fence: the restored
/// events sit behind it until the migration.
async fn store() -> (PostgresStore, PostgresLocation) {
    PostgresHarness::with_options(PostgresOptions {
        log_fence_wait: Duration::from_millis(50),
        ..PostgresOptions::default()
    })
    .create()
    .await
}

/// Inserts, as the owner, `count` events of `stream` written by one
/// transaction [`AHEAD`] ids ahead of this cluster; returns their `tx`.
async fn restore_events(admin: &Client, stream: &str, count: i64) -> u64 {
    let tx: i64 = admin
        .query_one(
            "WITH written AS (
                 INSERT INTO events (stream_id, version, tx, event_type, payload, recorded_at_ms)
                 SELECT $1, v, ((pg_current_xact_id()::text::bigint + $2)::text)::xid8,
                        'restored', '\\x00', 0
                 FROM generate_series(1, $3::bigint) AS v
                 RETURNING tx::text::bigint AS tx
             )
             SELECT max(tx) FROM written",
            &[&stream, &AHEAD, &count],
        )
        .await
        .expect("insert restored events")
        .get(0);
    u64::try_from(tx).unwrap()
}

fn streams_and_versions(log: &[RecordedEvent]) -> Vec<(&str, u64)> {
    log.iter()
        .map(|e| (e.stream_id.as_str(), e.version))
        .collect()
}

/// The status says the log needs renumbering (so tallyd does not serve),
/// the restored events sit behind the fence until then, `migrate` moves new
/// transactions past them, and the service's role appends after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_from_a_cluster_ahead_is_reported_then_renumbered_by_migrate() {
    let _serial = one_at_a_time().await;
    let (store, location) = store().await;
    store.append(append("here", 0, 2)).await.expect("append");
    let admin = connect_raw(&location.config).await;
    let restored_tx = restore_events(&admin, "restored", 3).await;

    let status = store.schema_status().await.expect("status");
    let SchemaStatus::LogNeedsRenumbering { newest_tx, next_tx } = status else {
        panic!("a log from a cluster ahead is not current: {status:?}");
    };
    assert_eq!(newest_tx, restored_tx);
    assert!(next_tx <= newest_tx, "{status:?}");
    assert!(!status.is_current());
    assert!(status.to_string().contains("run the migration"), "{status}");
    // What a runner would see: the restored events are held back by the
    // fence, as if written by transactions still running.
    assert_eq!(
        streams_and_versions(&store.read_log(None, 100).await.expect("read_log")),
        vec![("here", 1), ("here", 2)]
    );

    let report = store.migrate().await.expect("migrate");
    assert!(report.applied.is_empty(), "{report:?}");
    let Some(Renumbering {
        newest_tx,
        offset_before: 0,
        offset_after,
    }) = report.renumbered
    else {
        panic!("migrate did not renumber: {report:?}");
    };
    assert_eq!(newest_tx, restored_tx);
    assert!(offset_after > 0);
    assert_eq!(
        store.schema_status().await.expect("status"),
        SchemaStatus::Current
    );

    // The service's role needs nothing more: it reads the offset, and the
    // default it appends with is the owner's business.
    let mut config = location.config.clone();
    config.options(format!("-c role={APP_ROLE}"));
    let service = PostgresStore::connect_with_config(config, PostgresOptions::default())
        .await
        .expect("connect as tally_app");
    assert!(service.schema_status().await.expect("status").is_current());
    for (stream, expected) in [("here", 2), ("restored", 3), ("new", 0)] {
        let written = service
            .append(append(stream, expected, 1))
            .await
            .expect("append after the migration");
        assert!(
            written.positions[0].tx > restored_tx,
            "{stream}: {:?} sorts before the restored log at tx {restored_tx}",
            written.positions[0]
        );
    }
    let log = service.read_log(None, 100).await.expect("read_log");
    assert_eq!(
        streams_and_versions(&log)[..5],
        [
            ("here", 1),
            ("here", 2),
            ("restored", 1),
            ("restored", 2),
            ("restored", 3)
        ]
    );
    let mut appended = streams_and_versions(&log)[5..].to_vec();
    appended.sort();
    assert_eq!(appended, vec![("here", 3), ("new", 1), ("restored", 4)]);
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));

    // Nothing left to do the second time.
    let again = store.migrate().await.expect("migrate again");
    assert_eq!(again.renumbered, None);
    let offset: i64 = admin
        .query_one("SELECT tx_offset FROM log_order", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(u64::try_from(offset).unwrap(), offset_after);
}

/// A transaction that already had its id when `migrate` ran, and appends
/// only afterwards, still sorts after the restored log: the offset is
/// measured from the oldest transaction running, not from the migration's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_older_than_the_migration_still_appends_after_the_restored_log() {
    let _serial = one_at_a_time().await;
    let (store, location) = store().await;
    let mut older = connect_raw(&location.config).await;
    let open = older.transaction().await.unwrap();
    // Its id, taken before the migration, without touching events.
    open.query_one("SELECT pg_current_xact_id()", &[])
        .await
        .unwrap();
    // Transactions that started after it have finished: the snapshot's
    // xmax is past its id, its xmin is its id.
    let admin = connect_raw(&location.config).await;
    let restored_tx = restore_events(&admin, "restored", 2).await;
    let report = store.migrate().await.expect("migrate");
    assert!(report.renumbered.is_some(), "{report:?}");

    let tx: i64 = open
        .query_one(
            "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
             VALUES ('older', 1, 'test', '\\x00', 0) RETURNING tx::text::bigint",
            &[],
        )
        .await
        .expect("insert after the migration")
        .get(0);
    open.commit().await.unwrap();
    assert!(
        u64::try_from(tx).unwrap() > restored_tx,
        "tx {tx} of a transaction from before the migration sorts before the restored log ({restored_tx})"
    );
    let log = store.read_log(None, 100).await.expect("read_log");
    assert_eq!(
        streams_and_versions(&log),
        vec![("restored", 1), ("restored", 2), ("older", 1)]
    );
}

/// Renumbering waits for appends in flight (and holds new ones) rather than
/// measuring the log while it moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renumbering_waits_for_an_append_in_flight() {
    let _serial = one_at_a_time().await;
    let (store, location) = store().await;
    let store = Arc::new(store);
    let admin = connect_raw(&location.config).await;
    restore_events(&admin, "restored", 1).await;

    let mut appender = connect_raw(&location.config).await;
    let in_flight = appender.transaction().await.unwrap();
    in_flight
        .execute(
            "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
             VALUES ('in-flight', 1, 'test', '\\x00', 0)",
            &[],
        )
        .await
        .unwrap();
    let migrating = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.migrate().await })
    };
    // Observed, not slept on: the migration's lock request on events is
    // queued behind the append's.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: bool = admin
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_locks
                                WHERE relation = 'events'::regclass AND NOT granted)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            break;
        }
        assert!(
            !migrating.is_finished(),
            "migrate did not wait for the append"
        );
        assert!(
            Instant::now() < deadline,
            "migrate never asked for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!migrating.is_finished());
    in_flight.commit().await.unwrap();
    let report = migrating.await.unwrap().expect("migrate");
    assert!(report.renumbered.is_some(), "{report:?}");
    assert!(store.schema_status().await.expect("status").is_current());
}
