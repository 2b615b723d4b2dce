//! What survives a restart, and the snapshot cache.

use super::{Harness, events, keys, read_whole_log, record, request, sorted_by_key};
use crate::{EventStore, Snapshot, StoreError};

/// After the store is dropped and reopened, events, versions, idempotency
/// records and snapshots are all there, and appends continue at the right
/// version with positions after the old ones.
pub async fn restart_keeps_everything<H: Harness>(harness: &H) {
    let (store, location) = harness.create().await;
    let k1 = record("k1", "fp1", "r1");
    let k2 = record("k2", "fp2", "r2");
    let k3 = record("k3", "fp3", "r3");
    let snapshot = Snapshot {
        version: 3,
        payload: b"state at 3".to_vec(),
    };

    let mut append = request("acct-1", 0, events("one", 3));
    append.idempotency = vec![k1.clone()];
    store.append(append).await.expect("append");
    let mut append = request("acct-2", 0, events("two", 2));
    append.idempotency = vec![k2.clone()];
    store.append(append).await.expect("append");
    let mut append = request("acct-1", 3, events("three", 1));
    append.idempotency = vec![k3.clone()];
    store.append(append).await.expect("append");
    store
        .save_snapshot("acct-1", snapshot.clone())
        .await
        .expect("save_snapshot");
    let log_before = read_whole_log(&store).await;
    assert_eq!(log_before.len(), 6);
    drop(store);

    let store = harness.reopen(&location).await;
    assert_eq!(
        read_whole_log(&store).await,
        log_before,
        "log after restart"
    );
    assert_eq!(store.stream_version("acct-1").await.expect("version"), 4);
    assert_eq!(store.stream_version("acct-2").await.expect("version"), 2);
    assert_eq!(
        sorted_by_key(
            store
                .find_idempotency("acct-1", &keys(&["k1", "k2", "k3"]))
                .await
                .expect("find")
        ),
        vec![k1, k3]
    );
    assert_eq!(
        store
            .find_idempotency("acct-2", &keys(&["k2"]))
            .await
            .expect("find"),
        vec![k2]
    );
    assert_eq!(
        store.load_snapshot("acct-1").await.expect("load"),
        Some(snapshot)
    );
    assert_eq!(store.load_snapshot("acct-2").await.expect("load"), None);

    let next = store
        .append(request("acct-1", 4, events("after-restart", 2)))
        .await
        .expect("append after restart");
    assert_eq!((next.first_version, next.last_version), (5, 6));
    let old_end = log_before.last().expect("log").position;
    assert!(
        next.positions[0] > old_end,
        "position {} after restart is not after {old_end}",
        next.positions[0]
    );
    assert!(matches!(
        store.append(request("acct-1", 4, events("stale", 1))).await,
        Err(StoreError::VersionConflict { actual: 6, .. })
    ));
    assert!(matches!(
        store
            .append(request("acct-2", 0, events("exists", 1)))
            .await,
        Err(StoreError::VersionConflict { actual: 2, .. })
    ));
    let mut reuse = request("acct-2", 2, events("reuse", 1));
    reuse.idempotency = vec![record("k2", "fp2", "r2")];
    assert!(matches!(
        store.append(reuse).await,
        Err(StoreError::DuplicateIdempotencyKey { .. })
    ));
    let log_after = read_whole_log(&store).await;
    drop(store);

    // A second restart keeps what the first reopened store wrote.
    let store = harness.reopen(&location).await;
    assert_eq!(read_whole_log(&store).await, log_after);
    assert_eq!(store.stream_version("acct-1").await.expect("version"), 6);
}

/// Snapshots save, load and overwrite (also with an older version: they are a
/// cache), are per stream, and never touch the log or stream versions.
pub async fn snapshots_overwrite_and_miss<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    assert_eq!(store.load_snapshot("acct").await.expect("load"), None);

    store
        .append(request("acct", 0, events("e", 3)))
        .await
        .expect("append");
    let log_before = read_whole_log(&store).await;

    for snapshot in [
        Snapshot {
            version: 3,
            payload: b"three".to_vec(),
        },
        Snapshot {
            version: 2,
            payload: b"two".to_vec(),
        },
        // An empty payload is still a snapshot, distinct from none.
        Snapshot {
            version: 3,
            payload: Vec::new(),
        },
    ] {
        store
            .save_snapshot("acct", snapshot.clone())
            .await
            .expect("save_snapshot");
        assert_eq!(
            store.load_snapshot("acct").await.expect("load"),
            Some(snapshot)
        );
    }

    assert_eq!(
        store.load_snapshot("acct-other").await.expect("load"),
        None,
        "a snapshot leaked to another stream"
    );
    assert_eq!(
        read_whole_log(&store).await,
        log_before,
        "snapshots changed the log"
    );
    assert_eq!(store.stream_version("acct").await.expect("version"), 3);
}
