//! What the conformance suite cannot see: migrations, privileges, and the
//! database being unreachable or taken away. These tests open raw sessions
//! behind the store's back, as an operator (or a bug) could.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_store::conformance::Harness;
use tally_store::postgres::{
    APP_ROLE, PostgresHarness, PostgresOptions, PostgresStore, SCHEMA_VERSION, SchemaStatus,
};
use tally_store::{
    AppendRequest, EventStore, IdempotencyRecord, NewEvent, ProjectionCheckpoint, ProjectionStore,
    Snapshot, StoreError, Wakeup,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

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
        idempotency: vec![IdempotencyRecord {
            key: format!("key-{expected_version}"),
            fingerprint: vec![1],
            response: vec![2],
        }],
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

/// Waits until one of the store's sessions (application `tallyd`) in
/// `admin`'s database waits on a lock while running a statement that
/// contains `statement`: the wait observed, not guessed from a sleep.
/// Panics after 10 s, when it never waited.
async fn store_waits_on_lock(admin: &Client, statement: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'tallyd'
                   AND wait_event_type = 'Lock' AND strpos(query, $1) > 0",
                &[&statement],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no store session waited on a lock running {statement:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn applied_versions(client: &Client) -> Vec<i32> {
    client
        .query(
            "SELECT version FROM tally_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("read tally_schema_migrations")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn connecting_does_not_migrate_and_status_follows_migrate() {
    let harness = PostgresHarness::new();
    let (store, _location) = harness.create_unmigrated().await;
    assert_eq!(
        store.schema_status().await.expect("status"),
        SchemaStatus::Behind { found: 0 }
    );
    // The server would not serve yet; if something tried, it is told to
    // retry, not handed a bug.
    assert!(matches!(
        store.append(append("a", 0, 1)).await,
        Err(StoreError::Unavailable(_))
    ));

    let report = store.migrate().await.expect("migrate");
    assert_eq!(report.from_version, 0);
    assert_eq!(report.to_version, SCHEMA_VERSION);
    assert_eq!(report.applied, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    assert_eq!(
        store.schema_status().await.expect("status"),
        SchemaStatus::Current
    );
    store.append(append("a", 0, 1)).await.expect("append");
}

#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    let (store, location) = PostgresHarness::new().create().await;
    store.append(append("a", 0, 3)).await.expect("append");
    let log = store.read_log(None, 100).await.expect("read_log");

    let report = store.migrate().await.expect("second migrate");
    assert_eq!(
        (report.from_version, report.to_version),
        (SCHEMA_VERSION, SCHEMA_VERSION)
    );
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(store.read_log(None, 100).await.expect("read_log"), log);
    let admin = connect_raw(&location.config).await;
    assert_eq!(
        applied_versions(&admin).await,
        (1..=SCHEMA_VERSION as i32).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_are_safe() {
    const MIGRATORS: usize = 4;
    let (first, location) = PostgresHarness::new().create_unmigrated().await;
    let mut stores = vec![first];
    for _ in 1..MIGRATORS {
        // Separate pools, as separate processes would have.
        stores.push(
            PostgresStore::connect_with_config(location.config.clone(), PostgresOptions::default())
                .await
                .expect("connect"),
        );
    }
    let start = Arc::new(tokio::sync::Barrier::new(MIGRATORS));
    let migrators: Vec<_> = stores
        .into_iter()
        .map(|store| {
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                store.migrate().await
            })
        })
        .collect();
    let mut applied = Vec::new();
    for migrator in migrators {
        let report = migrator
            .await
            .expect("migrator panicked")
            .expect("a concurrent migrate failed");
        assert_eq!(report.to_version, SCHEMA_VERSION);
        applied.extend(report.applied);
    }
    assert_eq!(
        applied,
        (1..=SCHEMA_VERSION).collect::<Vec<_>>(),
        "each migration applied exactly once, by one migrator"
    );
    let admin = connect_raw(&location.config).await;
    assert_eq!(
        applied_versions(&admin).await,
        (1..=SCHEMA_VERSION as i32).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let (store, location) = PostgresHarness::new().create().await;
    let admin = connect_raw(&location.config).await;
    admin
        .execute(
            "INSERT INTO tally_schema_migrations (version, name) VALUES ($1, 'from the future')",
            &[&(SCHEMA_VERSION as i32 + 1)],
        )
        .await
        .unwrap();
    let status = store.schema_status().await.expect("status");
    assert_eq!(
        status,
        SchemaStatus::Ahead {
            found: SCHEMA_VERSION + 1
        }
    );
    assert!(!status.is_current());
    assert!(matches!(
        store.migrate().await,
        Err(StoreError::Unavailable(_))
    ));
}

/// Rolling back a release after its expand migration: the newer build's
/// migration recorded that builds from this one's version still serve, so
/// this build serves (reads and appends), and its migrate is a no-op. A
/// contract migration after it, recording itself, refuses this build again.
#[tokio::test]
async fn a_newer_schema_of_expand_migrations_serves_this_build() {
    let (store, location) = PostgresHarness::new().create().await;
    let admin = connect_raw(&location.config).await;
    let recorded: Option<i32> = admin
        .query_one(
            "SELECT serves_from FROM tally_schema_migrations WHERE version = $1",
            &[&(SCHEMA_VERSION as i32)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        recorded,
        Some(SCHEMA_VERSION as i32),
        "this build's migrations are all contract ones"
    );
    store.append(append("before", 0, 2)).await.unwrap();

    // What the next release's expand migration does: add a nullable
    // column, and record that builds from this version on still serve.
    let next = SCHEMA_VERSION as i32 + 1;
    admin
        .batch_execute("ALTER TABLE events ADD COLUMN annotation text")
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO tally_schema_migrations (version, name, serves_from) \
             VALUES ($1, 'next_expand', $2)",
            &[&next, &(SCHEMA_VERSION as i32)],
        )
        .await
        .unwrap();
    let status = store.schema_status().await.expect("status");
    assert_eq!(
        status,
        SchemaStatus::AheadCompatible {
            found: SCHEMA_VERSION + 1,
            serves_from: SCHEMA_VERSION
        }
    );
    assert!(status.can_serve() && !status.is_current());
    let report = store.migrate().await.expect("a no-op");
    assert_eq!(
        (report.from_version, report.to_version, report.applied.len()),
        (SCHEMA_VERSION + 1, SCHEMA_VERSION + 1, 0)
    );
    store.append(append("before", 2, 1)).await.unwrap();
    store.append(append("after", 0, 3)).await.unwrap();
    assert_eq!(store.read_stream("before", 0, 10).await.unwrap().len(), 3);
    let log = store.read_log(None, 100).await.unwrap();
    assert_eq!(log.len(), 6);

    // The release after it contracts: only builds that know it serve.
    admin
        .execute(
            "INSERT INTO tally_schema_migrations (version, name, serves_from) \
             VALUES ($1, 'next_contract', $1)",
            &[&(next + 1)],
        )
        .await
        .unwrap();
    let status = store.schema_status().await.expect("status");
    assert_eq!(
        status,
        SchemaStatus::Ahead {
            found: SCHEMA_VERSION + 2
        }
    );
    assert!(!status.can_serve());
    assert!(matches!(
        store.migrate().await,
        Err(StoreError::Unavailable(_))
    ));
}

/// A database that a schema-2 build has been writing to migrates to the
/// current schema with its data, and its streams then take wakeups: those
/// written before have none until an append or `set_wakeup` gives them one.
#[tokio::test]
async fn a_database_at_schema_2_migrates_with_its_data() {
    assert_eq!(SCHEMA_VERSION, 9, "extend this test for the new migration");
    let harness = PostgresHarness::new();
    let (store, location) = harness.create_at_schema_version(2).await;
    assert_eq!(
        store.schema_status().await.expect("status"),
        SchemaStatus::Behind { found: 2 }
    );
    // What a schema-2 build wrote, behind this build's back: its appends
    // fail here because they would write a wakeup.
    let admin = connect_raw(&location.config).await;
    admin
        .batch_execute(
            "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
             VALUES ('old', 1, 'v2', '\\x01', 1), ('old', 2, 'v2', '\\x02', 2),
                    ('other', 1, 'v2', '\\x03', 3);
             INSERT INTO idempotency (stream_id, key, fingerprint, response)
             VALUES ('old', 'key-old', '\\x01', '\\x02');
             INSERT INTO snapshots (stream_id, version, payload) VALUES ('old', 2, '\\x09');",
        )
        .await
        .expect("write as schema 2");
    assert!(matches!(
        store.append(append("old", 2, 1)).await,
        Err(StoreError::Unavailable(_))
    ));
    // Nor can it read the log: its fence needs the log's offset (schema 7).
    assert!(matches!(
        store.read_log(None, 100).await,
        Err(StoreError::Unavailable(_))
    ));
    let raw_log = async || -> Vec<(String, i64, i64, i64, Vec<u8>)> {
        admin
            .query(
                "SELECT stream_id, version, tx::text::bigint, position, payload
                 FROM events ORDER BY tx, position",
                &[],
            )
            .await
            .expect("read the log")
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
            .collect()
    };
    let log_before = raw_log().await;
    assert_eq!(log_before.len(), 3);

    let report = store.migrate().await.expect("migrate");
    assert_eq!((report.from_version, report.to_version), (2, 9));
    assert_eq!(report.applied, vec![3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(report.renumbered, None, "a log this cluster wrote");
    assert!(store.schema_status().await.expect("status").is_current());
    assert_eq!(
        applied_versions(&admin).await,
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    // The log's order starts with no offset: the events keep their
    // transaction ids.
    let offset: i64 = admin
        .query_one("SELECT tx_offset FROM log_order", &[])
        .await
        .expect("log_order exists")
        .get(0);
    assert_eq!(offset, 0);
    // Usage of a card's own units has a table of its own, empty until a
    // charge reports units.
    let units: i64 = admin
        .query_one("SELECT count(*) FROM usage_daily_units", &[])
        .await
        .expect("usage_daily_units exists")
        .get(0);
    assert_eq!(units, 0);
    // Ledger entries no longer copy their event (schema 9).
    let copies: i64 = admin
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'ledger_entries' AND column_name IN ('event', 'idempotency_key')",
            &[],
        )
        .await
        .expect("columns")
        .get(0);
    assert_eq!(copies, 0);
    // Refunds have not drawn on any charge yet.
    assert_eq!(
        store
            .find_charges("old", &["key-old".to_owned()])
            .await
            .expect("refunded_charges exists"),
        Vec::new()
    );
    // Projections start empty and rebuild from the log that was there.
    assert_eq!(
        store
            .projection_checkpoint("balances")
            .await
            .expect("checkpoint"),
        ProjectionCheckpoint::default()
    );

    let log_after: Vec<_> = store
        .read_log(None, 100)
        .await
        .expect("read_log")
        .into_iter()
        .map(|e| {
            (
                e.stream_id,
                e.version as i64,
                e.position.tx as i64,
                e.position.seq as i64,
                e.payload,
            )
        })
        .collect();
    assert_eq!(log_after, log_before);
    assert_eq!(raw_log().await, log_before);
    assert_eq!(store.stream_version("old").await.expect("version"), 2);
    assert_eq!(
        store
            .find_idempotency("old", &["key-old".to_owned()])
            .await
            .expect("find")
            .len(),
        1
    );
    assert_eq!(
        store.load_snapshot("old").await.expect("load"),
        Some(Snapshot {
            version: 2,
            payload: vec![9]
        })
    );
    assert_eq!(
        store.due_wakeups(i64::MAX, 100).await.expect("due"),
        Vec::new()
    );

    assert!(!store.set_wakeup("old", 1, Some(5)).await.expect("stale"));
    assert!(store.set_wakeup("old", 2, Some(5)).await.expect("set"));
    let mut next = append("other", 1, 1);
    next.next_wakeup_ms = Some(4);
    store.append(next).await.expect("append after migrating");
    assert_eq!(
        store.due_wakeups(i64::MAX, 100).await.expect("due"),
        vec![
            Wakeup {
                stream_id: "other".into(),
                at_ms: 4,
                version: 2
            },
            Wakeup {
                stream_id: "old".into(),
                at_ms: 5,
                version: 2
            },
        ]
    );
}

/// The role the service runs as may read and insert, never change or delete,
/// events and idempotency records; the owner is stopped by the trigger.
#[tokio::test]
async fn tally_app_cannot_update_or_delete_the_log() {
    let (store, location) = PostgresHarness::new().create().await;
    store.append(append("a", 0, 2)).await.expect("append");

    let session = connect_raw(&location.config).await;
    session
        .batch_execute(&format!("SET ROLE {APP_ROLE}"))
        .await
        .expect("SET ROLE");
    let role: String = session
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, APP_ROLE);
    for statement in [
        "UPDATE events SET payload = '\\x00'",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE idempotency SET response = '\\x00'",
        "DELETE FROM idempotency",
        "TRUNCATE idempotency",
        "DROP TABLE events",
        "DELETE FROM tally_schema_migrations",
    ] {
        let err = session
            .batch_execute(statement)
            .await
            .expect_err(&format!("{APP_ROLE} ran {statement:?}"));
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}: {err:?}"
        );
        let message = err.as_db_error().unwrap().message().to_owned();
        assert!(
            message.contains("permission denied") || message.contains("must be owner"),
            "{statement}: {message}"
        );
    }

    // The owner (here a superuser) has the privileges; the trigger says no.
    let owner = connect_raw(&location.config).await;
    for statement in [
        "UPDATE events SET payload = '\\x00'",
        "DELETE FROM events",
        "TRUNCATE events",
        "DELETE FROM idempotency",
    ] {
        let err = owner
            .batch_execute(statement)
            .await
            .expect_err(&format!("the owner ran {statement:?}"));
        let message = err
            .as_db_error()
            .expect("a database error")
            .message()
            .to_owned();
        assert!(message.contains("append-only"), "{statement}: {message}");
    }
    assert_eq!(
        store
            .read_stream("a", 1, 10)
            .await
            .expect("read_stream")
            .len(),
        2
    );
}

/// `tally_app`'s privileges, table by table: the log stays append-only, the
/// snapshot cache and the wakeups are overwritable, the projections' own
/// tables may be emptied (a reset truncates them), and nobody but the owner
/// may truncate anything else, alter or drop anything.
#[tokio::test]
async fn tally_app_privileges_by_table() {
    let (_, location) = PostgresHarness::new().create().await;
    let admin = connect_raw(&location.config).await;
    let granted = |table: &'static str, privilege: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "SELECT has_table_privilege($1, $2, $3)",
                    &[&APP_ROLE, &table, &privilege],
                )
                .await
                .unwrap_or_else(|err| panic!("{table} {privilege}: {err}"))
                .get::<_, bool>(0)
        }
    };
    let expected: [(&str, &[&str]); 11] = [
        ("events", &["SELECT", "INSERT"]),
        ("idempotency", &["SELECT", "INSERT"]),
        ("snapshots", &["SELECT", "INSERT", "UPDATE"]),
        ("wakeups", &["SELECT", "INSERT", "UPDATE", "DELETE"]),
        ("resolved_holds", &["SELECT", "INSERT", "UPDATE"]),
        ("refunded_charges", &["SELECT", "INSERT", "UPDATE"]),
        (
            "usage_daily_units",
            &["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"],
        ),
        (
            "ledger_entries",
            &["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"],
        ),
        (
            "projection_account_states",
            &["SELECT", "INSERT", "UPDATE", "DELETE"],
        ),
        ("tally_schema_migrations", &["SELECT"]),
        // Read for the fence; only the owner's migrate changes it.
        ("log_order", &["SELECT"]),
    ];
    for (table, allowed) in expected {
        for privilege in [
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "REFERENCES",
            "TRIGGER",
        ] {
            assert_eq!(
                granted(table, privilege).await,
                allowed.contains(&privilege),
                "{APP_ROLE} {privilege} on {table}"
            );
        }
    }

    // And in practice: the service's role can write and prune wakeups, not
    // reshape the table.
    let session = connect_raw(&location.config).await;
    session
        .batch_execute(&format!("SET ROLE {APP_ROLE}"))
        .await
        .expect("SET ROLE");
    session
        .batch_execute(
            "INSERT INTO wakeups (stream_id, version, at_ms) VALUES ('w', 1, 10);
             UPDATE wakeups SET at_ms = NULL WHERE stream_id = 'w';
             DELETE FROM wakeups WHERE stream_id = 'w';",
        )
        .await
        .expect("tally_app writes wakeups");
    for statement in [
        "TRUNCATE wakeups",
        "DROP TABLE wakeups",
        "DROP INDEX wakeups_due",
        "ALTER TABLE wakeups ADD COLUMN x int",
    ] {
        let err = session
            .batch_execute(statement)
            .await
            .expect_err(&format!("{APP_ROLE} ran {statement:?}"));
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}: {err:?}"
        );
    }
}

/// The grants are enough for everything the service does.
#[tokio::test]
async fn the_service_runs_as_tally_app() {
    let (_, location) = PostgresHarness::new().create().await;
    let mut config = location.config.clone();
    config.options(format!("-c role={APP_ROLE}"));
    let store = PostgresStore::connect_with_config(config, PostgresOptions::default())
        .await
        .expect("connect as tally_app");

    assert!(store.schema_status().await.expect("status").is_current());
    let written = store.append(append("a", 0, 2)).await.expect("append");
    store.append(append("a", 2, 1)).await.expect("append");
    assert!(matches!(
        store.append(append("a", 2, 1)).await,
        Err(StoreError::VersionConflict { actual: 3, .. })
    ));
    assert_eq!(store.stream_version("a").await.expect("version"), 3);
    assert_eq!(store.read_stream("a", 1, 10).await.expect("read").len(), 3);
    let log = store.read_log(None, 10).await.expect("read_log");
    assert_eq!(
        log[..2].iter().map(|e| e.position).collect::<Vec<_>>(),
        written.positions
    );
    assert_eq!(
        store
            .find_idempotency("a", &["key-0".to_owned()])
            .await
            .expect("find")
            .len(),
        1
    );
    let snapshot = Snapshot {
        version: 3,
        payload: b"s".to_vec(),
    };
    store
        .save_snapshot("a", snapshot.clone())
        .await
        .expect("save");
    store
        .save_snapshot("a", snapshot.clone())
        .await
        .expect("overwrite");
    assert_eq!(
        store.load_snapshot("a").await.expect("load"),
        Some(snapshot)
    );

    let mut with_wakeup = append("a", 3, 1);
    with_wakeup.next_wakeup_ms = Some(20);
    store
        .append(with_wakeup)
        .await
        .expect("append with a wakeup");
    assert!(
        store
            .set_wakeup("a", 4, Some(10))
            .await
            .expect("set_wakeup")
    );
    assert!(!store.set_wakeup("a", 3, Some(5)).await.expect("stale"));
    assert_eq!(
        store.due_wakeups(10, 10).await.expect("due_wakeups"),
        vec![Wakeup {
            stream_id: "a".into(),
            at_ms: 10,
            version: 4
        }]
    );
    store
        .append(append("a", 4, 1))
        .await
        .expect("append clearing it");
    assert_eq!(
        store.due_wakeups(i64::MAX, 10).await.expect("due_wakeups"),
        Vec::new()
    );
}

/// Nothing listening: `Unavailable` within a few seconds, never a hang.
#[tokio::test]
async fn an_unreachable_database_is_unavailable_quickly() {
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        PostgresStore::connect(
            "postgres://postgres@127.0.0.1:1/postgres",
            PostgresOptions::default(),
        ),
    )
    .await
    .expect("connect hung");
    match result {
        Err(StoreError::Unavailable(message)) => {
            assert!(started.elapsed() < Duration::from_secs(6), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        PostgresStore::connect(
            "postgres://postgres@127.0.0.1:notaport/x",
            PostgresOptions::default()
        )
        .await,
        Err(StoreError::Internal(_))
    ));
}

/// A connection killed in the middle of a call (a restart, a failover, an
/// operator) fails that call with `Unavailable`; connections killed while
/// idle are replaced without the caller noticing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_unavailable_then_replaced() {
    let (store, location) = PostgresHarness::new().create().await;
    let store = Arc::new(store);
    store.append(append("a", 0, 1)).await.expect("append");

    // Park an append inside its transaction: it waits on the primary key
    // for a raw transaction that inserted the same version.
    let mut raw = connect_raw(&location.config).await;
    let tx = raw.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
         VALUES ('a', 2, 'raw', '\\x00', 0)",
        &[],
    )
    .await
    .unwrap();
    let parked = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.append(append("a", 1, 1)).await })
    };
    let admin = connect_raw(&location.config).await;
    store_waits_on_lock(&admin, "INSERT INTO events").await;
    let killed = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'tallyd'
               AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(killed, 1, "one append waited on the lock");
    match parked.await.unwrap() {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    tx.rollback().await.unwrap();

    // Now every pooled connection, idle.
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'tallyd'",
            &[],
        )
        .await
        .unwrap();
    // Until the server has let them go: the pool then holds only dead
    // connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'tallyd'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(Instant::now() < deadline, "the killed sessions lingered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut version = None;
    for _ in 0..3 {
        match store.stream_version("a").await {
            Ok(v) => {
                version = Some(v);
                break;
            }
            Err(StoreError::Unavailable(_)) => {}
            Err(other) => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert_eq!(version, Some(1), "the pool did not reconnect");
    store
        .append(append("a", 1, 1))
        .await
        .expect("append after the kill");
}

/// The primary key is the real backstop: an append whose version check ran
/// before a concurrent insert committed loses on the insert, and reports the
/// version the winner left. If the other insert rolls back, it wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_on_the_primary_key_is_a_version_conflict() {
    let (store, location) = PostgresHarness::new().create().await;
    let store = Arc::new(store);
    let mut raw = connect_raw(&location.config).await;
    let admin = connect_raw(&location.config).await;

    for commit in [true, false] {
        let stream_id = if commit { "committed" } else { "rolled-back" };
        let tx = raw.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
             VALUES ($1, 1, 'raw', '\\x00', 0), ($1, 2, 'raw', '\\x00', 0)",
            &[&stream_id],
        )
        .await
        .unwrap();
        // Sees version 0 (the insert is not committed), then waits on the
        // primary key for the raw transaction to finish.
        let racing = {
            let store = Arc::clone(&store);
            let stream_id = stream_id.to_owned();
            tokio::spawn(async move { store.append(append(&stream_id, 0, 1)).await })
        };
        store_waits_on_lock(&admin, "INSERT INTO events").await;
        assert!(!racing.is_finished(), "the append did not wait on the key");
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        let result = racing.await.unwrap();
        if commit {
            match result {
                Err(StoreError::VersionConflict {
                    expected: 0,
                    actual: 2,
                    ..
                }) => {}
                other => panic!("expected a conflict at version 2, got {other:?}"),
            }
            assert!(
                store
                    .find_idempotency(stream_id, &["key-0".to_owned()])
                    .await
                    .unwrap()
                    .is_empty(),
                "the losing append wrote its record"
            );
        } else {
            let result = result.expect("append after the other rolled back");
            assert_eq!(result.last_version, 1);
        }
    }
}

/// Replicas share one database: what one commits, the other hears of
/// through LISTEN/NOTIFY, without polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_hears_appends_and_projection_commits() {
    use tally_store::conformance::next_signal;
    use tally_store::{LogPosition, ProjectionCommit, StoreChange};

    let (writer, location) = PostgresHarness::new().create().await;
    let listener = PostgresStore::connect_with_config(location.config.clone(), Default::default())
        .await
        .expect("second replica");
    let mut changes = listener.changes();
    // The listening connection is opened by the first subscriber; its
    // first signal says it is listening.
    next_signal(&mut changes, "listening", |c| *c == StoreChange::Unknown).await;

    writer.append(append("acct-1", 0, 1)).await.expect("append");
    let heard = next_signal(&mut changes, "the other replica's append", |c| {
        matches!(c, StoreChange::Appended(_))
    })
    .await;
    assert!(
        heard.touches("acct-1") && !heard.touches("acct-2"),
        "{heard:?}"
    );

    let position = writer.log_head().await.unwrap();
    writer
        .commit_projection(ProjectionCommit::single(
            "balances",
            0,
            position,
            1,
            0,
            vec![],
        ))
        .await
        .expect("commit");
    let heard = next_signal(&mut changes, "the other replica's projection commit", |c| {
        matches!(c, StoreChange::Projected(_))
    })
    .await;
    let StoreChange::Projected(moved) = heard else {
        unreachable!()
    };
    assert_eq!(moved[0].name, "balances");
    assert_eq!(moved[0].generation, 1);
    assert_eq!(moved[0].position, position);
    assert!(position > Some(LogPosition::new(0, 0)));

    // A replica that listens sends only once it knows someone else does
    // (the other answers its hello at once): append until the other hears.
    let mut own = writer.changes();
    next_signal(&mut own, "listening", |c| *c == StoreChange::Unknown).await;
    let mut appends = 0;
    loop {
        writer
            .append(append("acct-2", appends, 1))
            .await
            .expect("append");
        appends += 1;
        let heard = tokio::time::timeout(
            Duration::from_millis(500),
            next_signal(&mut changes, "the second append", |c| c.touches("acct-2")),
        )
        .await;
        if heard.is_ok() {
            break;
        }
        assert!(appends < 20, "the other replica never heard the writer");
    }
    // Its own commits are not heard twice: once each from the hub, never
    // again from the database.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut heard_own = 0;
    while let Ok(change) = own.try_recv() {
        heard_own += u64::from(change.touches("acct-2") && change != StoreChange::Unknown);
    }
    assert_eq!(heard_own, appends, "a replica heard its own appends again");
}

/// A replica alone sends no change notifications: nobody would hear them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_replica_sends_only_hellos() {
    use futures::StreamExt;
    use tally_store::StoreChange;
    use tally_store::conformance::next_signal;

    let (store, location) = PostgresHarness::new().create().await;
    let (raw, mut connection) = location.config.connect(NoTls).await.expect("raw");
    let (sent, mut payloads) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = sent.send(n.payload().to_owned());
            }
        }
    });
    raw.batch_execute("LISTEN tally_changes").await.unwrap();

    let mut changes = store.changes();
    next_signal(&mut changes, "listening", |c| *c == StoreChange::Unknown).await;
    for version in 0..5 {
        store.append(append("alone", version, 1)).await.unwrap();
        next_signal(&mut changes, "its own append", |c| c.touches("alone")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut hellos = 0;
    while let Ok(payload) = payloads.try_recv() {
        assert!(
            payload.ends_with("\nh"),
            "sent with nobody listening: {payload:?}"
        );
        hellos += 1;
    }
    assert_eq!(hellos, 1, "the listener's hello");
}

/// A reset truncates the projection's tables, which waits for every reader
/// of them, and every reader that comes after waits behind it. A long
/// reader (a `verify`, a dump) would stall every read of the projection
/// until it ended; instead the reset gives up after a moment, writes
/// nothing, and lands once it is tried again with the reader gone.
#[tokio::test]
async fn a_reset_gives_way_to_a_long_reader() {
    use tally_store::conformance::usage_unit_row;
    use tally_store::{CommitOutcome, ProjectionCommit, SqlStatement};

    let (store, location) = PostgresHarness::new().create().await;
    let commit = |generation: u64, account: &str| {
        ProjectionCommit::single(
            "usage",
            generation,
            None,
            1,
            0,
            vec![usage_unit_row(account)],
        )
    };
    let accounts = || async {
        store
            .query_projection(vec![SqlStatement::new(
                "SELECT account_id FROM usage_daily_units ORDER BY account_id",
                vec![],
            )])
            .await
            .expect("read the rows")
            .remove(0)
            .into_iter()
            .map(|row| row[0].as_text().expect("text").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        store.commit_projection(commit(0, "before")).await.unwrap(),
        CommitOutcome::Committed { generation: 1 }
    );

    let mut raw = connect_raw(&location.config).await;
    let reader = raw.transaction().await.unwrap();
    reader
        .query("SELECT count(*) FROM usage_daily_units", &[])
        .await
        .unwrap();
    let reset = || commit(1, "after").emptying(vec!["usage_daily_units"]);
    let given_way = tokio::time::timeout(Duration::from_secs(60), store.commit_projection(reset()))
        .await
        .expect("the reset waited for the reader to end");
    match given_way {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("usage_daily_units"), "{message}")
        }
        other => panic!("expected the reset to give way, got {other:?}"),
    }
    assert_eq!(accounts().await, vec!["before"], "the reset wrote nothing");
    assert_eq!(
        store
            .projection_checkpoint("usage")
            .await
            .unwrap()
            .generation,
        1
    );

    reader.commit().await.unwrap();
    assert_eq!(
        store.commit_projection(reset()).await.unwrap(),
        CommitOutcome::Committed { generation: 2 }
    );
    assert_eq!(accounts().await, vec!["after"]);
}
