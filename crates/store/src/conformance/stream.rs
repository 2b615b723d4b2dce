//! One stream at a time: append, read back, versions, refusals.

use super::{
    ALL, Harness, assert_strictly_increasing, event, events, keys, read_whole_log,
    read_whole_stream, record, request,
};
use crate::{AppendRequest, EventStore, StoreError};

/// Appended events come back from `read_stream` unchanged, at versions
/// `1..=n` with increasing positions, and `from_version`/`limit` select the
/// right window.
pub async fn append_then_read_stream<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let first = vec![
        event(
            "account.opened",
            br#"{"plan":"pro"}"#.to_vec(),
            1_700_000_000_000,
        ),
        // Payloads are opaque bytes: not UTF-8, and empty, must round-trip.
        event("credits.granted", vec![0x00, 0xff, 0x00, 0x9f], -5),
        event("empty", Vec::new(), 0),
    ];
    let second = events("second", 2);

    let one = store
        .append(request("acct-1", 0, first.clone()))
        .await
        .expect("first append");
    assert_eq!((one.first_version, one.last_version), (1, 3));
    assert_eq!(one.positions.len(), 3);
    assert_strictly_increasing(one.positions.iter().copied(), "first append");

    let two = store
        .append(request("acct-1", 3, second.clone()))
        .await
        .expect("second append");
    assert_eq!((two.first_version, two.last_version), (4, 5));
    assert_eq!(two.positions.len(), 2);
    // Another stream in between must not leak into acct-1.
    store
        .append(request("acct-2", 0, events("other", 2)))
        .await
        .expect("append to another stream");

    let positions: Vec<_> = one
        .positions
        .iter()
        .chain(&two.positions)
        .copied()
        .collect();
    assert_strictly_increasing(positions.iter().copied(), "both appends");
    let sent: Vec<_> = first.iter().chain(&second).collect();

    let read = read_whole_stream(&store, "acct-1").await;
    assert_eq!(read.len(), 5, "read back {read:?}");
    for (index, recorded) in read.iter().enumerate() {
        assert_eq!(recorded.stream_id, "acct-1");
        assert_eq!(recorded.version, index as u64 + 1);
        assert_eq!(recorded.position, positions[index]);
        assert_eq!(recorded.event_type, sent[index].event_type);
        assert_eq!(recorded.payload, sent[index].payload);
        assert_eq!(recorded.recorded_at_ms, sent[index].recorded_at_ms);
    }

    let versions = |events: Vec<crate::RecordedEvent>| -> Vec<u64> {
        events.into_iter().map(|e| e.version).collect()
    };
    let window = |from, limit| {
        let store = &store;
        async move {
            versions(
                store
                    .read_stream("acct-1", from, limit)
                    .await
                    .expect("read_stream"),
            )
        }
    };
    assert_eq!(window(0, ALL).await, vec![1, 2, 3, 4, 5], "from_version 0");
    assert_eq!(window(3, ALL).await, vec![3, 4, 5], "from_version 3");
    assert_eq!(window(2, 2).await, vec![2, 3], "from_version 2, limit 2");
    assert_eq!(window(1, 1).await, vec![1], "limit 1");
    assert_eq!(window(5, ALL).await, vec![5], "from the last version");
    assert_eq!(window(6, ALL).await, Vec::<u64>::new(), "past the end");
    assert_eq!(window(1, 0).await, Vec::<u64>::new(), "limit 0");
    assert_eq!(
        window(u64::MAX, ALL).await,
        Vec::<u64>::new(),
        "from u64::MAX"
    );
    assert!(
        read_whole_stream(&store, "no-such-stream").await.is_empty(),
        "an unknown stream reads as empty"
    );
}

/// `read_versions` returns exactly the asked versions the stream has,
/// ascending and each once, with what was appended; another stream's
/// events at those versions never leak in.
pub async fn read_versions_picks_scattered_versions<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let sent = events("scattered", 9);
    store
        .append(request("acct-1", 0, sent.clone()))
        .await
        .expect("append");
    store
        .append(request("acct-2", 0, events("other", 9)))
        .await
        .expect("append to another stream");
    let whole = read_whole_stream(&store, "acct-1").await;

    let read = store
        .read_versions("acct-1", &[7, 2, 9, 2, 0, 12, u64::MAX])
        .await
        .expect("read_versions");
    let expected: Vec<_> = [2, 7, 9]
        .iter()
        .map(|v| whole[*v as usize - 1].clone())
        .collect();
    assert_eq!(read, expected, "versions 2, 7 and 9 of acct-1, once each");
    for (recorded, version) in read.iter().zip([2, 7, 9]) {
        assert_eq!(recorded.payload, sent[version - 1].payload);
    }
    assert!(
        store
            .read_versions("acct-1", &[])
            .await
            .expect("no versions")
            .is_empty()
    );
    assert!(
        store
            .read_versions("no-such-stream", &[1, 2])
            .await
            .expect("unknown stream")
            .is_empty(),
        "an unknown stream has none of them"
    );
}

/// An append at the wrong expected version fails with the actual version and
/// writes nothing: no events, no idempotency records.
pub async fn version_conflicts_write_nothing<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    store
        .append(request("acct", 0, events("setup", 2)))
        .await
        .expect("setup append");
    let log_before = read_whole_log(&store).await;

    // Behind, far behind (0 = "must not exist"), ahead, far ahead.
    for expected in [1, 0, 3, 7] {
        let mut append = request("acct", expected, events("conflicting", 2));
        append
            .idempotency
            .push(record(&format!("key-{expected}"), "fp", "resp"));
        match store.append(append).await {
            Err(StoreError::VersionConflict {
                stream_id,
                expected: reported,
                actual,
            }) => {
                assert_eq!(stream_id, "acct");
                assert_eq!(reported, expected);
                assert_eq!(actual, 2, "actual version when expecting {expected}");
            }
            other => panic!("expected a version conflict at {expected}, got {other:?}"),
        }
    }
    match store.append(request("new", 1, events("x", 1))).await {
        Err(StoreError::VersionConflict {
            expected: 1,
            actual: 0,
            ..
        }) => {}
        other => panic!("expected a conflict on a stream that does not exist, got {other:?}"),
    }

    assert_eq!(store.stream_version("acct").await.expect("version"), 2);
    assert_eq!(store.stream_version("new").await.expect("version"), 0);
    assert_eq!(read_whole_log(&store).await, log_before, "log changed");
    let found = store
        .find_idempotency("acct", &keys(&["key-0", "key-1", "key-3", "key-7"]))
        .await
        .expect("find_idempotency");
    assert!(
        found.is_empty(),
        "records of failed appends were written: {found:?}"
    );

    let next = store
        .append(request("acct", 2, events("next", 1)))
        .await
        .expect("append at the right version after conflicts");
    assert_eq!((next.first_version, next.last_version), (3, 3));
}

/// One append of 5,000 events is written whole and read back whole; one that
/// fails (on its last idempotency record) writes none of its 5,000 events.
pub async fn large_batch_is_atomic<H: Harness>(harness: &H) {
    const N: usize = 5_000;
    let (store, _location) = harness.create().await;

    let mut big = request("big", 0, events("big", N));
    big.idempotency.push(record("batch", "fp", "resp"));
    let result = store.append(big.clone()).await.expect("large append");
    assert_eq!((result.first_version, result.last_version), (1, N as u64));
    assert_eq!(result.positions.len(), N);
    assert_strictly_increasing(result.positions.iter().copied(), "large append");

    let stream = read_whole_stream(&store, "big").await;
    assert_eq!(stream.len(), N);
    for (index, (recorded, sent)) in stream.iter().zip(&big.events).enumerate() {
        assert_eq!(recorded.version, index as u64 + 1);
        assert_eq!(recorded.payload, sent.payload);
        assert_eq!(recorded.position, result.positions[index]);
    }
    let log = read_whole_log(&store).await;
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        result.positions
    );

    // Fails only at the very end: the duplicate record comes after all
    // 5,000 events.
    let mut doomed = request("big-2", 0, events("doomed", N));
    doomed.idempotency = vec![record("dup", "a", "a"), record("dup", "b", "b")];
    match store.append(doomed).await {
        Err(StoreError::DuplicateIdempotencyKey { stream_id, key }) => {
            assert_eq!((stream_id.as_str(), key.as_str()), ("big-2", "dup"));
        }
        other => panic!("expected a duplicate key, got {other:?}"),
    }
    assert_eq!(store.stream_version("big-2").await.expect("version"), 0);
    assert_eq!(
        read_whole_log(&store).await.len(),
        N,
        "part of a failed batch was written"
    );
    assert!(
        store
            .find_idempotency("big-2", &keys(&["dup"]))
            .await
            .expect("find")
            .is_empty()
    );
}

/// What `AppendRequest::validate` refuses is `InvalidAppend`, before any
/// version check, and writes nothing.
pub async fn invalid_append_writes_nothing<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;

    let mut empty = request("acct", 0, Vec::new());
    empty.idempotency.push(record("k", "fp", "resp"));
    assert_invalid(&store, empty, "no events on a new stream").await;
    assert_eq!(store.stream_version("acct").await.expect("version"), 0);
    assert!(read_whole_log(&store).await.is_empty(), "log not empty");
    assert!(
        store
            .find_idempotency("acct", &keys(&["k"]))
            .await
            .expect("find")
            .is_empty(),
        "the record of an invalid append was written"
    );

    store
        .append(request("acct", 0, events("setup", 1)))
        .await
        .expect("setup append");
    let log_before = read_whole_log(&store).await;
    assert_invalid(
        &store,
        request("acct", 1, Vec::new()),
        "no events at the right version",
    )
    .await;
    // Validation comes first: an empty append at a wrong version is invalid,
    // not a conflict.
    assert_invalid(
        &store,
        request("acct", 5, Vec::new()),
        "no events at a wrong version",
    )
    .await;
    assert_invalid(&store, request("", 0, events("x", 1)), "empty stream id").await;
    assert_invalid(
        &store,
        request("acct", i64::MAX as u64, events("x", 1)),
        "version overflow",
    )
    .await;
    assert_eq!(store.stream_version("acct").await.expect("version"), 1);
    assert_eq!(read_whole_log(&store).await, log_before, "log changed");
}

async fn assert_invalid<S: EventStore>(store: &S, append: AppendRequest, what: &str) {
    match store.append(append).await {
        Err(StoreError::InvalidAppend(_)) => {}
        other => panic!("{what}: expected InvalidAppend, got {other:?}"),
    }
}

/// `stream_version` is 0 for an unknown stream, then the last version
/// written, per stream, and unmoved by failed appends.
pub async fn stream_version_tracks_appends<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let version = |id: &'static str| {
        let store = &store;
        async move { store.stream_version(id).await.expect("stream_version") }
    };

    assert_eq!(version("a").await, 0);
    store
        .append(request("a", 0, events("a", 3)))
        .await
        .expect("append");
    assert_eq!(version("a").await, 3);
    store
        .append(request("a", 3, events("a", 2)))
        .await
        .expect("append");
    assert_eq!(version("a").await, 5);

    assert_eq!(version("b").await, 0, "another stream is unaffected");
    store
        .append(request("b", 0, events("b", 1)))
        .await
        .expect("append");
    assert_eq!(version("b").await, 1);
    assert_eq!(version("a").await, 5);

    assert!(store.append(request("a", 3, events("a", 1))).await.is_err());
    assert_eq!(version("a").await, 5, "a failed append moved the version");
}
