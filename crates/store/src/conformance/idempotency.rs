//! Idempotency records: written with their events or not at all.

use super::{Harness, events, keys, read_whole_log, record, request, sorted_by_key};
use crate::{EventStore, StoreError};

/// Records are found after their append; an append reusing a key fails with
/// `DuplicateIdempotencyKey` and writes neither events nor records; keys are
/// scoped to their stream.
pub async fn idempotency_records_are_atomic_with_events<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let k1 = record("k1", "fingerprint-1", "response-1");
    let k2 = record("k2", "fingerprint-2", "response-2");

    let mut first = request("acct-a", 0, events("first", 1));
    first.idempotency = vec![k1.clone(), k2.clone()];
    store.append(first).await.expect("append with records");

    let found = store
        .find_idempotency("acct-a", &keys(&["k2", "missing", "k1", "k1"]))
        .await
        .expect("find_idempotency");
    assert_eq!(
        sorted_by_key(found),
        vec![k1.clone(), k2.clone()],
        "each present key once, absent keys missing"
    );
    assert!(
        store
            .find_idempotency("acct-a", &[])
            .await
            .expect("find nothing")
            .is_empty()
    );

    let log_before = read_whole_log(&store).await;
    let refused = |stream: &'static str, expected, records: Vec<_>, key: &'static str| {
        let store = &store;
        async move {
            let mut append = request(stream, expected, events("refused", 2));
            append.idempotency = records;
            match store.append(append).await {
                Err(StoreError::DuplicateIdempotencyKey {
                    stream_id,
                    key: reported,
                }) => {
                    assert_eq!(stream_id, stream);
                    assert_eq!(reported, key, "the first duplicate key in request order");
                }
                other => panic!("expected duplicate key {key:?}, got {other:?}"),
            }
        }
    };
    // An existing key, even with a different fingerprint, after a new key.
    refused(
        "acct-a",
        1,
        vec![record("k3", "fp", "r"), record("k1", "other", "other")],
        "k1",
    )
    .await;
    // A key repeated within one request.
    refused(
        "acct-a",
        1,
        vec![record("k4", "a", "a"), record("k4", "b", "b")],
        "k4",
    )
    .await;
    // Several existing keys: the first in request order is reported.
    refused(
        "acct-a",
        1,
        vec![
            record("k5", "x", "x"),
            record("k2", "x", "x"),
            record("k1", "x", "x"),
        ],
        "k2",
    )
    .await;

    assert_eq!(store.stream_version("acct-a").await.expect("version"), 1);
    assert_eq!(
        read_whole_log(&store).await,
        log_before,
        "a refused append wrote events"
    );
    let after = store
        .find_idempotency("acct-a", &keys(&["k1", "k2", "k3", "k4", "k5"]))
        .await
        .expect("find_idempotency");
    assert_eq!(
        sorted_by_key(after),
        vec![k1.clone(), k2.clone()],
        "a refused append wrote or changed records"
    );

    // A version conflict is reported in preference to a duplicate key.
    let mut both = request("acct-a", 0, events("both", 1));
    both.idempotency = vec![record("k1", "x", "x")];
    assert!(
        matches!(
            store.append(both).await,
            Err(StoreError::VersionConflict { .. })
        ),
        "conflict and duplicate key: the conflict wins"
    );

    // The same key in another stream is a different key.
    let k1_b = record("k1", "fingerprint-b", "response-b");
    let mut other = request("acct-b", 0, events("other", 1));
    other.idempotency = vec![k1_b.clone()];
    store
        .append(other)
        .await
        .expect("same key on another stream");
    assert_eq!(
        store
            .find_idempotency("acct-b", &keys(&["k1", "k2"]))
            .await
            .expect("find"),
        vec![k1_b]
    );
    assert_eq!(
        store
            .find_idempotency("acct-a", &keys(&["k1"]))
            .await
            .expect("find"),
        vec![k1],
        "acct-a's record was touched by acct-b's append"
    );
}
