//! Group commit across streams (`append_batch`), resolved holds and
//! refunded charges.

use std::collections::HashMap;
use std::sync::Arc;

use super::{
    Harness, assert_strictly_increasing, events, keys, read_whole_log, read_whole_stream, record,
    request,
};
use crate::{AppendRequest, ChargeRecord, EventStore, HoldRecord, StoreError};

fn hold(id: &str, payload: &str) -> HoldRecord {
    HoldRecord {
        hold_id: id.to_owned(),
        payload: payload.as_bytes().to_vec(),
    }
}

/// Each request of a batch is judged on its own: the good ones commit, a
/// version conflict, a stored or repeated key, an invalid request and a
/// stream named twice fail only themselves and write nothing of theirs.
pub async fn append_batch_judges_each_stream_alone<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let mut seed = request("has-key", 0, events("seed", 1));
    seed.idempotency = vec![record("k1", "f", "r")];
    store.append(seed).await.expect("seed has-key");
    for stream in ["at-one", "moved-on"] {
        store
            .append(request(stream, 0, events("seed", 1)))
            .await
            .expect("seed");
    }
    let log_before = read_whole_log(&store).await;

    let mut good_new = request("fresh", 0, events("fresh", 3));
    good_new.idempotency = vec![record("a", "f", "r"), record("b", "f", "r")];
    good_new.holds = vec![hold("h1", "resolved")];
    good_new.next_wakeup_ms = Some(42);
    let stale = request("moved-on", 0, events("stale", 2));
    let mut stored_key = request("has-key", 1, events("dup", 1));
    stored_key.idempotency = vec![record("new", "f", "r"), record("k1", "x", "x")];
    let mut repeated_key = request("repeats", 0, events("rep", 1));
    repeated_key.idempotency = vec![record("z", "f", "r"), record("z", "g", "r")];
    let invalid = request("empty", 0, Vec::new());
    let good_next = request("at-one", 1, events("next", 2));
    let twice = request("fresh", 3, events("again", 1));

    let results = store
        .append_batch(vec![
            good_new,
            stale,
            stored_key,
            repeated_key,
            invalid,
            good_next,
            twice,
        ])
        .await;
    assert_eq!(results.len(), 7, "one result per request");

    let fresh = results[0].as_ref().expect("fresh appended");
    assert_eq!((fresh.first_version, fresh.last_version), (1, 3));
    assert!(
        matches!(
            &results[1],
            Err(StoreError::VersionConflict { stream_id, expected: 0, actual: 1 }) if stream_id == "moved-on"
        ),
        "stale request: {:?}",
        results[1]
    );
    assert!(
        matches!(
            &results[2],
            Err(StoreError::DuplicateIdempotencyKey { stream_id, key }) if stream_id == "has-key" && key == "k1"
        ),
        "stored key: {:?}",
        results[2]
    );
    assert!(
        matches!(
            &results[3],
            Err(StoreError::DuplicateIdempotencyKey { key, .. }) if key == "z"
        ),
        "repeated key: {:?}",
        results[3]
    );
    assert!(
        matches!(&results[4], Err(StoreError::InvalidAppend(_))),
        "invalid: {:?}",
        results[4]
    );
    let next = results[5].as_ref().expect("at-one appended");
    assert_eq!((next.first_version, next.last_version), (2, 3));
    assert!(
        matches!(&results[6], Err(StoreError::InvalidAppend(_))),
        "a stream twice in one batch: {:?}",
        results[6]
    );

    // Only the two good requests wrote, with positions after everything
    // that was visible before.
    let log = read_whole_log(&store).await;
    assert_eq!(log.len(), log_before.len() + 5);
    assert_eq!(log[..log_before.len()], log_before[..]);
    assert_strictly_increasing(log.iter().map(|e| e.position), "log after a batch");
    let mut positions: Vec<_> = fresh.positions.iter().chain(&next.positions).collect();
    positions.sort();
    assert!(*positions[0] > log_before.last().expect("seeded").position);
    assert_eq!(store.stream_version("has-key").await.expect("version"), 1);
    assert_eq!(store.stream_version("repeats").await.expect("version"), 0);
    assert_eq!(store.stream_version("fresh").await.expect("version"), 3);
    assert_eq!(store.stream_version("at-one").await.expect("version"), 3);
    assert_eq!(
        store
            .find_idempotency("has-key", &keys(&["new", "k1"]))
            .await
            .expect("find")
            .len(),
        1,
        "the refused request's new key was written"
    );
    assert_eq!(
        store
            .find_idempotency("fresh", &keys(&["a", "b"]))
            .await
            .expect("find")
            .len(),
        2
    );
    assert_eq!(
        store
            .find_holds("fresh", &keys(&["h1"]))
            .await
            .expect("holds"),
        vec![hold("h1", "resolved")]
    );
    assert_eq!(
        store.due_wakeups(42, 10).await.expect("wakeups")[0].stream_id,
        "fresh"
    );
}

/// Batches racing over the same streams from many tasks: every version of
/// every stream is won exactly once, losers get a conflict, and no stream
/// has a hole.
pub async fn racing_batches_win_each_version_once<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let store = Arc::new(store);
    const STREAMS: usize = 5;
    const TASKS: usize = 4;
    const ROUNDS: usize = 15;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut won: HashMap<String, u64> = HashMap::new();
            for round in 0..ROUNDS {
                let mut batch: Vec<AppendRequest> = Vec::new();
                for stream in 0..STREAMS {
                    let stream_id = format!("race-{stream}");
                    let version = store.stream_version(&stream_id).await.expect("version");
                    let mut append =
                        request(&stream_id, version, events(&format!("t{task}r{round}"), 2));
                    append.idempotency = vec![record(&format!("t{task}r{round}"), "f", "r")];
                    batch.push(append);
                }
                let streams: Vec<String> = batch.iter().map(|r| r.stream_id.clone()).collect();
                for (stream_id, result) in streams.into_iter().zip(store.append_batch(batch).await)
                {
                    match result {
                        Ok(_) => *won.entry(stream_id).or_default() += 1,
                        Err(StoreError::VersionConflict { .. }) => {}
                        Err(other) => panic!("unexpected failure: {other:?}"),
                    }
                }
            }
            won
        }));
    }
    let mut won: HashMap<String, u64> = HashMap::new();
    for task in tasks {
        for (stream, count) in task.await.expect("task") {
            *won.entry(stream).or_default() += count;
        }
    }
    for stream in 0..STREAMS {
        let stream_id = format!("race-{stream}");
        let wins = won.get(&stream_id).copied().unwrap_or(0);
        assert!(wins > 0, "{stream_id}: nobody won");
        let recorded = read_whole_stream(&*store, &stream_id).await;
        assert_eq!(
            recorded.len() as u64,
            wins * 2,
            "{stream_id}: two events a win"
        );
        assert!(
            recorded
                .iter()
                .zip(1..)
                .all(|(event, version)| event.version == version),
            "{stream_id} has a hole"
        );
        // Each win kept its own two events together.
        for pair in recorded.chunks(2) {
            let writer = |payload: &[u8]| {
                String::from_utf8_lossy(payload)
                    .split('#')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            };
            assert_eq!(writer(&pair[0].payload), writer(&pair[1].payload));
        }
    }
    assert_strictly_increasing(
        read_whole_log(&*store).await.iter().map(|e| e.position),
        "log after racing batches",
    );
}

/// Resolved holds are found by id within their stream, overwritten by a
/// later append, and not written by a failed one.
pub async fn resolved_holds_are_kept_per_stream<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let mut first = request("holds-a", 0, events("first", 1));
    first.holds = vec![hold("h1", "expired"), hold("h2", "released")];
    store.append(first).await.expect("append with holds");
    assert_eq!(
        sorted(
            store
                .find_holds("holds-a", &keys(&["h2", "missing", "h1", "h1"]))
                .await
                .expect("find")
        ),
        vec![hold("h1", "expired"), hold("h2", "released")],
        "each present hold once, absent ones missing"
    );
    assert!(
        store
            .find_holds("holds-a", &[])
            .await
            .expect("none")
            .is_empty()
    );
    assert!(
        store
            .find_holds("holds-b", &keys(&["h1"]))
            .await
            .expect("other stream")
            .is_empty(),
        "holds are scoped to their stream"
    );

    let mut settle = request("holds-a", 1, events("late", 1));
    settle.holds = vec![hold("h1", "committed")];
    store.append(settle).await.expect("overwrite");
    let mut refused = request("holds-a", 1, events("stale", 1));
    refused.holds = vec![hold("h1", "lost"), hold("h3", "lost")];
    assert!(matches!(
        store.append(refused).await,
        Err(StoreError::VersionConflict { .. })
    ));
    assert_eq!(
        sorted(
            store
                .find_holds("holds-a", &keys(&["h1", "h2", "h3"]))
                .await
                .expect("find")
        ),
        vec![hold("h1", "committed"), hold("h2", "released")],
        "overwritten by the append that succeeded, untouched by the one that failed"
    );
}

fn sorted(mut holds: Vec<HoldRecord>) -> Vec<HoldRecord> {
    holds.sort_by(|a, b| a.hold_id.cmp(&b.hold_id));
    holds
}

fn charge(key: &str, payload: &str) -> ChargeRecord {
    ChargeRecord {
        charge_key: key.to_owned(),
        payload: payload.as_bytes().to_vec(),
    }
}

/// Refunded charges are found by key within their stream, written by the
/// streams of a batch that commit and not by one that conflicts, and
/// overwritten by a later refund of the same charge.
pub async fn refunded_charges_are_kept_per_stream<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    store
        .append(request("charges-b", 0, events("open", 1)))
        .await
        .expect("open b");
    let mut a = request("charges-a", 0, events("refund", 1));
    a.charges = vec![
        charge("debit-1", "refunded 100"),
        charge("debit-2", "refunded 5"),
    ];
    let mut b_stale = request("charges-b", 0, events("refund", 1));
    b_stale.charges = vec![charge("debit-1", "lost")];
    let results = store.append_batch(vec![a, b_stale]).await;
    assert!(results[0].is_ok(), "a commits: {:?}", results[0]);
    assert!(
        matches!(results[1], Err(StoreError::VersionConflict { .. })),
        "b conflicts: {:?}",
        results[1]
    );
    let store = Arc::new(store);
    let found = |stream: &'static str, wanted: &'static [&'static str]| {
        let store = Arc::clone(&store);
        async move {
            let mut found = store
                .find_charges(stream, &keys(wanted))
                .await
                .expect("find charges");
            found.sort_by(|x, y| x.charge_key.cmp(&y.charge_key));
            found
        }
    };
    assert_eq!(
        found("charges-a", &["debit-2", "missing", "debit-1", "debit-1"]).await,
        vec![
            charge("debit-1", "refunded 100"),
            charge("debit-2", "refunded 5")
        ],
        "each present charge once, absent ones missing"
    );
    assert!(
        found("charges-b", &["debit-1"]).await.is_empty(),
        "the conflicting stream wrote nothing, and charges are scoped to their stream"
    );
    assert!(found("charges-a", &[]).await.is_empty());

    let mut again = request("charges-a", 1, events("refund", 1));
    again.charges = vec![charge("debit-1", "refunded 150")];
    store.append(again).await.expect("second refund");
    assert_eq!(
        found("charges-a", &["debit-1", "debit-2"]).await,
        vec![
            charge("debit-1", "refunded 150"),
            charge("debit-2", "refunded 5")
        ],
        "overwritten by the later refund"
    );
}
