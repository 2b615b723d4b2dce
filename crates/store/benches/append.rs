//! The store's own ceiling for appends, without gRPC or the engine: how
//! many debit-sized events per second each backend commits, durably, in the
//! two shapes the engine's writer produces. `tally-bench` measures the
//! service; this says how much of its time is the store's.
//!
//! `cargo bench -p tally-store --features test-util` (PostgreSQL at
//! `TALLY_TEST_DATABASE_URL`, else 127.0.0.1:5432). Each shape runs for
//! `TALLY_BENCH_SECS` seconds (default 5) on a fresh store.

use std::time::{Duration, Instant};

use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;
use tally_store::{AppendRequest, EventStore, IdempotencyRecord, NewEvent};

/// A debit event and its stored reply, at about their real sizes.
fn debit(stream: &str, version: u64, key: u64) -> (NewEvent, IdempotencyRecord) {
    let payload = format!(
        r#"{{"idempotency_key":"k-{key}","event":{{"type":"credits_debited","at":1795860637000,"debit":{{"action":"chat.message","member":"m-1","model":null,"charged":1000,"overage":0,"draws":[{{"grant_id":"g-1","amount":1000}}],"dimensions":null,"capability":null}}}}}}"#
    );
    let reply = format!(
        r#"{{"outcome":{{"type":"debited","charged":1000}},"available":{},"balance":null,"last_version":{version}}}"#,
        1_000_000 - key
    );
    (
        NewEvent {
            event_type: "credits_debited".into(),
            payload: payload.into_bytes(),
            recorded_at_ms: 1_795_860_637_000,
        },
        IdempotencyRecord {
            key: format!("{stream}-k-{key}-{version}"),
            fingerprint: vec![7; 32],
            response: reply.into_bytes(),
        },
    )
}

/// Appends `streams` streams of `per_stream` events each per transaction,
/// one transaction after another, for `duration`; returns events/s.
async fn run<S: EventStore>(
    store: &S,
    streams: usize,
    per_stream: usize,
    duration: Duration,
) -> f64 {
    let mut versions = vec![0u64; streams];
    let mut key = 0u64;
    let mut events = 0usize;
    let started = Instant::now();
    while started.elapsed() < duration {
        let requests: Vec<AppendRequest> = (0..streams)
            .map(|s| {
                let stream = format!("acct-{s}");
                let (mut new, mut records) = (Vec::new(), Vec::new());
                for i in 0..per_stream {
                    key += 1;
                    let (event, record) = debit(&stream, versions[s] + i as u64 + 1, key);
                    new.push(event);
                    records.push(record);
                }
                AppendRequest {
                    stream_id: stream,
                    expected_version: versions[s],
                    events: new,
                    idempotency: records,
                    holds: Vec::new(),
                    charges: Vec::new(),
                    next_wakeup_ms: None,
                }
            })
            .collect();
        for result in store.append_batch(requests).await {
            result.expect("append");
        }
        for version in &mut versions {
            *version += per_stream as u64;
        }
        events += streams * per_stream;
    }
    events as f64 / started.elapsed().as_secs_f64()
}

async fn shapes<H: Harness>(name: &str, harness: H, duration: Duration)
where
    H::Store: EventStore,
{
    for (streams, per_stream) in [(1, 1), (1, 64), (64, 1), (256, 1)] {
        let (store, _location) = harness.create().await;
        let rate = run(&store, streams, per_stream, duration).await;
        println!(
            "{name:<9} {streams:>4} stream(s) x {per_stream:>3} event(s) per commit: {rate:>9.0} events/s, {:>7.0} commits/s",
            rate / (streams * per_stream) as f64
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent: keep
    // that a quick smoke, not a benchmark.
    let benching = std::env::args().any(|a| a == "--bench");
    let secs: u64 = std::env::var("TALLY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = if benching {
        Duration::from_secs(secs)
    } else {
        Duration::from_millis(200)
    };
    shapes("sqlite", SqliteHarness::new(), duration).await;
    shapes("postgres", PostgresHarness::new(), duration).await;
}
