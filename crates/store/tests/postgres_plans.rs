//! The hot path's statements stay index lookups on a store with a long
//! history: their plans are checked with EXPLAIN on a database holding a
//! million events and a million idempotency keys, half of them on one
//! stream, and 100k accounts' bucket rows, both with the plan PostgreSQL
//! makes for the arguments and with the generic plan it caches for a
//! prepared statement.

use tally_store::conformance::Harness;
use tally_store::postgres::{PostgresHarness, hot_path_statements};
use tokio_postgres::{NoTls, SimpleQueryMessage};

const EVENTS: i64 = 1_000_000;
const STREAMS: i64 = 1_000;

/// Tables whose size grows with history: reading any of them whole is what
/// makes a store slow down as it ages.
const GROWING: [&str; 7] = [
    "events",
    "idempotency",
    "resolved_holds",
    "refunded_charges",
    "snapshots",
    "wakeups",
    "account_buckets",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_path_plans_are_index_lookups_at_a_million_events() {
    let harness = PostgresHarness::new();
    let (_store, location) = harness.create().await;
    let (client, connection) = location.config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    // Streams of 1,000 events each; half of the keys on stream acct-0.
    client
        .batch_execute(&format!(
            "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
             SELECT 'acct-' || (g % {STREAMS}), g / {STREAMS} + 1, 'test', '\\x00', 0
             FROM generate_series(0, {last}) AS g;
             INSERT INTO idempotency (stream_id, key, fingerprint, response)
             SELECT CASE WHEN g % 2 = 0 THEN 'acct-0' ELSE 'acct-' || (g % {STREAMS}) END,
                    'key-' || g, '\\x00', '\\x00'
             FROM generate_series(0, {last}) AS g;
             INSERT INTO resolved_holds (stream_id, hold_id, payload)
             SELECT 'acct-' || (g % {STREAMS}), 'h-' || g, '\\x00'
             FROM generate_series(0, 99999) AS g;
             INSERT INTO refunded_charges (stream_id, charge_key, payload)
             SELECT 'acct-' || (g % {STREAMS}), 'key-' || g, '\\x00'
             FROM generate_series(0, 99999) AS g;
             INSERT INTO snapshots (stream_id, version, payload)
             SELECT 'acct-' || g, 1000, '\\x00' FROM generate_series(0, {STREAMS} - 1) AS g;
             INSERT INTO wakeups (stream_id, version, at_ms)
             SELECT 'acct-' || g, 1000, NULL FROM generate_series(0, {STREAMS} - 1) AS g;
             INSERT INTO account_buckets (account_id, grant_id, kind, source, priority, amount,
                 remaining, held, effective_at_ms, expires_at_ms, reference)
             SELECT 'acct-' || (g / 2), 'g-' || (g % 2), 'plan', 'plan', 0, 1, 1, 0, 0, NULL, ''
             FROM generate_series(0, 199999) AS g;
             ANALYZE;",
            last = EVENTS - 1
        ))
        .await
        .expect("fill the store");

    for mode in ["force_custom_plan", "force_generic_plan"] {
        client
            .batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .await
            .expect("plan cache mode");
        for (name, statement, arguments) in hot_path_statements() {
            client
                .batch_execute(&format!("PREPARE hot AS {statement}"))
                .await
                .unwrap_or_else(|err| panic!("prepare {name}: {err}"));
            let execute = if arguments.is_empty() {
                "EXECUTE hot".to_owned()
            } else {
                format!("EXECUTE hot({arguments})")
            };
            // The append writes: run it inside a transaction rolled back.
            let plan: serde_json::Value = {
                client.batch_execute("BEGIN").await.expect("begin");
                // The simple protocol hands the json column over as text.
                let messages = client
                    .simple_query(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {execute}"))
                    .await
                    .unwrap_or_else(|err| panic!("explain {name}: {err}"));
                client.batch_execute("ROLLBACK").await.expect("rollback");
                let text = messages
                    .iter()
                    .find_map(|message| match message {
                        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                        _ => None,
                    })
                    .expect("a plan");
                serde_json::from_str(&text).expect("EXPLAIN's JSON")
            };
            let mut problems = Vec::new();
            check(&plan[0]["Plan"], &mut problems);
            assert!(
                problems.is_empty(),
                "{name} ({mode}) reads a growing table whole: {problems:?}\n{plan:#}"
            );
            client
                .batch_execute("DEALLOCATE hot")
                .await
                .expect("deallocate");
        }
    }
}

/// Collects the plan nodes that scan or sort a growing table whole.
fn check(node: &serde_json::Value, problems: &mut Vec<String>) {
    let kind = node["Node Type"].as_str().unwrap_or_default();
    let relation = node["Relation Name"].as_str().unwrap_or_default();
    if GROWING.contains(&relation) && kind == "Seq Scan" {
        problems.push(format!("{kind} on {relation}"));
    }
    // A scan that touched far more rows than any single stream holds.
    let touched = node["Actual Rows"].as_f64().unwrap_or(0.0)
        + node["Rows Removed by Filter"].as_f64().unwrap_or(0.0);
    if GROWING.contains(&relation) && touched > 1_000.0 {
        problems.push(format!("{kind} on {relation} touched {touched} rows"));
    }
    if kind == "Sort" && node["Actual Rows"].as_f64().unwrap_or(0.0) > 1_000.0 {
        problems.push(format!(
            "Sort of {} rows",
            node["Actual Rows"].as_f64().unwrap_or(0.0)
        ));
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            check(child, problems);
        }
    }
}
