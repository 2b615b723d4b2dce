//! Wakeups: written with appends, set only at the current version, and read
//! back in the scheduler's order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;

use super::{ALL, Harness, events, read_whole_log, record, request};
use crate::{AppendRequest, EventStore, StoreError, Wakeup};

fn with_wakeup(mut append: AppendRequest, at_ms: Option<i64>) -> AppendRequest {
    append.next_wakeup_ms = at_ms;
    append
}

fn wakeup(stream_id: &str, at_ms: i64, version: u64) -> Wakeup {
    Wakeup {
        stream_id: stream_id.to_owned(),
        at_ms,
        version,
    }
}

/// Every wakeup in the store, in the contract's order.
async fn all_wakeups<S: EventStore>(store: &S) -> Vec<Wakeup> {
    store.due_wakeups(i64::MAX, ALL).await.expect("due_wakeups")
}

async fn wakeup_of<S: EventStore>(store: &S, stream_id: &str) -> Option<Wakeup> {
    all_wakeups(store)
        .await
        .into_iter()
        .find(|w| w.stream_id == stream_id)
}

/// An append's `next_wakeup_ms` becomes its stream's wakeup at the new last
/// version, replacing the previous one; `None` clears it; an unchanged one
/// keeps its version; other streams are untouched.
pub async fn append_writes_the_wakeup<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    assert_eq!(all_wakeups(&store).await, Vec::new(), "a new store");

    store
        .append(with_wakeup(request("acct", 0, events("a", 2)), Some(100)))
        .await
        .expect("append");
    assert_eq!(all_wakeups(&store).await, vec![wakeup("acct", 100, 2)]);

    store
        .append(with_wakeup(request("other", 0, events("o", 1)), Some(300)))
        .await
        .expect("append");
    // Later and earlier than before: the append's value wins either way.
    store
        .append(with_wakeup(request("acct", 2, events("b", 1)), Some(500)))
        .await
        .expect("append");
    assert_eq!(
        all_wakeups(&store).await,
        vec![wakeup("other", 300, 1), wakeup("acct", 500, 3)]
    );
    store
        .append(with_wakeup(request("acct", 3, events("c", 3)), Some(50)))
        .await
        .expect("append");
    assert_eq!(
        all_wakeups(&store).await,
        vec![wakeup("acct", 50, 6), wakeup("other", 300, 1)]
    );
    // The same wakeup again: kept at the version it was set at, and a
    // set_wakeup computed at that version is now stale all the same.
    store
        .append(with_wakeup(request("acct", 6, events("same", 1)), Some(50)))
        .await
        .expect("append");
    assert_eq!(
        all_wakeups(&store).await,
        vec![wakeup("acct", 50, 6), wakeup("other", 300, 1)],
        "an unchanged wakeup keeps the version it was set at"
    );
    assert!(
        !store
            .set_wakeup("acct", 6, Some(1))
            .await
            .expect("set_wakeup"),
        "a set_wakeup at the version before the append that kept the wakeup"
    );
    assert_eq!(wakeup_of(&store, "acct").await, Some(wakeup("acct", 50, 6)));

    store
        .append(request("acct", 7, events("clear", 1)))
        .await
        .expect("append without a wakeup");
    assert_eq!(
        all_wakeups(&store).await,
        vec![wakeup("other", 300, 1)],
        "an append with None clears the stream's wakeup, and only its"
    );
    store
        .append(request("acct", 8, events("still-none", 1)))
        .await
        .expect("append without a wakeup");
    store
        .append(request("fresh", 0, events("none", 1)))
        .await
        .expect("append without a wakeup to a new stream");
    assert_eq!(all_wakeups(&store).await, vec![wakeup("other", 300, 1)]);

    store
        .append(with_wakeup(
            request("acct", 9, events("again", 1)),
            Some(-7),
        ))
        .await
        .expect("append");
    assert_eq!(
        all_wakeups(&store).await,
        vec![wakeup("acct", -7, 10), wakeup("other", 300, 1)],
        "a cleared wakeup can be set again, also before the epoch"
    );
}

/// `due_wakeups` returns exactly the wakeups at or before `now_ms`, ordered
/// by time and then bytewise by stream id, at most `limit`.
pub async fn due_wakeups_order_limit_and_boundary<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    // Ties at 20 between ids that a linguistic collation would order
    // differently from bytes ("B" < "a" < "a-1" < "a:0" < "é" bytewise).
    let set = [
        ("é", 20),
        ("a:0", 20),
        ("B", 20),
        ("a-1", 20),
        ("a", 20),
        ("late", 30),
        ("early", 10),
        ("min", i64::MIN),
        ("max", i64::MAX),
        ("negative", -5),
    ];
    for (stream_id, at_ms) in set {
        store
            .append(with_wakeup(
                request(stream_id, 0, events(stream_id, 1)),
                Some(at_ms),
            ))
            .await
            .expect("append");
    }
    store
        .append(request("none", 0, events("none", 1)))
        .await
        .expect("append");

    let order = [
        ("min", i64::MIN),
        ("negative", -5),
        ("early", 10),
        ("B", 20),
        ("a", 20),
        ("a-1", 20),
        ("a:0", 20),
        ("é", 20),
        ("late", 30),
        ("max", i64::MAX),
    ];
    let expect = |count: usize| -> Vec<Wakeup> {
        order[..count]
            .iter()
            .map(|(stream_id, at_ms)| wakeup(stream_id, *at_ms, 1))
            .collect()
    };
    let due = |now_ms: i64, limit: usize| {
        let store = &store;
        async move { store.due_wakeups(now_ms, limit).await.expect("due_wakeups") }
    };

    assert_eq!(due(i64::MAX, ALL).await, expect(10), "everything, in order");
    assert_eq!(due(i64::MIN, ALL).await, expect(1));
    assert_eq!(due(-6, ALL).await, expect(1));
    assert_eq!(due(-5, ALL).await, expect(2), "at_ms == now_ms is due");
    assert_eq!(due(9, ALL).await, expect(2));
    assert_eq!(due(10, ALL).await, expect(3));
    assert_eq!(due(19, ALL).await, expect(3));
    assert_eq!(due(20, ALL).await, expect(8));
    assert_eq!(due(29, ALL).await, expect(8));
    assert_eq!(due(30, ALL).await, expect(9));
    assert_eq!(due(i64::MAX - 1, ALL).await, expect(9));

    assert_eq!(due(i64::MAX, 0).await, Vec::new(), "limit 0");
    assert_eq!(due(i64::MAX, 1).await, expect(1));
    // A limit that cuts through the tie takes the bytewise-first ids.
    assert_eq!(due(20, 5).await, expect(5));
    assert_eq!(due(20, 8).await, expect(8));
    assert_eq!(due(20, 9).await, expect(8));
    assert_eq!(due(i64::MAX, usize::MAX).await, expect(10));
}

/// `set_wakeup` writes, and returns `true`, only when the stream is at the
/// given version; otherwise it returns `false` and writes nothing. It never
/// changes the stream or the log.
pub async fn set_wakeup_only_at_the_current_version<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;

    for version in [0, 1, 5, u64::MAX] {
        assert!(
            !store
                .set_wakeup("unknown", version, Some(1))
                .await
                .expect("set_wakeup"),
            "set_wakeup on a stream without events, version {version}"
        );
    }
    assert_eq!(
        all_wakeups(&store).await,
        Vec::new(),
        "refusals wrote a wakeup"
    );
    assert_eq!(store.stream_version("unknown").await.expect("version"), 0);

    store
        .append(request("acct", 0, events("a", 3)))
        .await
        .expect("append");
    for (version, at_ms) in [
        (0, Some(1)),
        (2, Some(1)),
        (4, Some(1)),
        (u64::MAX, Some(1)),
    ] {
        assert!(
            !store
                .set_wakeup("acct", version, at_ms)
                .await
                .expect("set_wakeup"),
            "set_wakeup at version {version} of a stream at 3"
        );
    }
    assert_eq!(all_wakeups(&store).await, Vec::new());

    let log_before = read_whole_log(&store).await;
    assert!(
        store
            .set_wakeup("acct", 3, Some(10))
            .await
            .expect("set_wakeup")
    );
    assert_eq!(all_wakeups(&store).await, vec![wakeup("acct", 10, 3)]);
    assert!(
        store
            .set_wakeup("acct", 3, Some(40))
            .await
            .expect("set_wakeup"),
        "again at the same version: the later call wins"
    );
    assert_eq!(all_wakeups(&store).await, vec![wakeup("acct", 40, 3)]);
    assert!(!store.set_wakeup("acct", 2, Some(5)).await.expect("stale"));
    assert!(!store.set_wakeup("acct", 2, None).await.expect("stale"));
    assert_eq!(all_wakeups(&store).await, vec![wakeup("acct", 40, 3)]);
    assert!(store.set_wakeup("acct", 3, None).await.expect("clear"));
    assert_eq!(all_wakeups(&store).await, Vec::new(), "cleared");
    assert!(
        store
            .set_wakeup("acct", 3, None)
            .await
            .expect("clear again"),
        "clearing a cleared wakeup at the current version still applies"
    );
    assert_eq!(
        read_whole_log(&store).await,
        log_before,
        "set_wakeup touched the log"
    );
    assert_eq!(store.stream_version("acct").await.expect("version"), 3);

    // After an append, only the new version can set the wakeup, also when
    // the append cleared it.
    assert!(store.set_wakeup("acct", 3, Some(60)).await.expect("set"));
    store
        .append(request("acct", 3, events("b", 1)))
        .await
        .expect("append");
    assert_eq!(all_wakeups(&store).await, Vec::new());
    assert!(!store.set_wakeup("acct", 3, Some(1)).await.expect("stale"));
    assert_eq!(all_wakeups(&store).await, Vec::new(), "a stale set wrote");
    assert!(store.set_wakeup("acct", 4, Some(2)).await.expect("current"));
    assert_eq!(all_wakeups(&store).await, vec![wakeup("acct", 2, 4)]);
    store
        .append(with_wakeup(request("acct", 4, events("c", 2)), Some(90)))
        .await
        .expect("append");
    assert!(!store.set_wakeup("acct", 4, None).await.expect("stale"));
    assert_eq!(all_wakeups(&store).await, vec![wakeup("acct", 90, 6)]);

    // A stream whose wakeup was never written by an append.
    store
        .append(request("quiet", 0, events("q", 1)))
        .await
        .expect("append");
    assert!(!store.set_wakeup("quiet", 0, Some(3)).await.expect("stale"));
    assert!(store.set_wakeup("quiet", 1, Some(3)).await.expect("set"));
    assert_eq!(
        all_wakeups(&store).await,
        vec![wakeup("quiet", 3, 1), wakeup("acct", 90, 6)]
    );
}

/// Starts `append` and a `set_wakeup` at its expected version together,
/// checks the append landed, and returns what the set did;
/// the round varies the append's head start, so that over the rounds the
/// set lands before the append, while its transaction is open, and after
/// it commits.
async fn race_append_and_set<S: EventStore + 'static>(
    store: &Arc<S>,
    append: AppendRequest,
    stale_at: Option<i64>,
    round: u64,
) -> Result<bool, StoreError> {
    let stream_id = append.stream_id.clone();
    let version = append.expected_version;
    let start = Arc::new(Barrier::new(2));
    let appender = {
        let store = Arc::clone(store);
        let start = Arc::clone(&start);
        tokio::spawn(async move {
            start.wait().await;
            store.append(append).await
        })
    };
    let setter = {
        let store = Arc::clone(store);
        let stream_id = stream_id.clone();
        tokio::spawn(async move {
            start.wait().await;
            match round % 3 {
                0 => {}
                1 => tokio::task::yield_now().await,
                _ => tokio::time::sleep(Duration::from_micros(300)).await,
            }
            store.set_wakeup(&stream_id, version, stale_at).await
        })
    };
    let appended = appender
        .await
        .expect("appender panicked")
        .unwrap_or_else(|err| panic!("{stream_id} round {round}: append: {err}"));
    assert_eq!(appended.last_version, version + 1);
    setter.await.expect("setter panicked")
}

/// An append and a `set_wakeup` computed at the version the append extends
/// race, many times: whatever the interleaving, the append's wakeup (or its
/// clearing) is what remains, at the append's version. The stale call may
/// apply only by landing before the append, which then overwrites it.
pub async fn stale_set_wakeup_loses_to_a_racing_append<H: Harness>(harness: &H) {
    const ROUNDS: u64 = 200;
    const STREAMS: usize = 4;
    let (store, _location) = harness.create().await;
    let store = Arc::new(store);

    // Streams race independently, so rounds of different streams overlap
    // too and the backends are busy while the pairs race.
    let mut streams = Vec::new();
    for stream in 0..STREAMS {
        let store = Arc::clone(&store);
        streams.push(tokio::spawn(async move {
            let stream_id = format!("race-{stream}");
            let (mut applied, mut refused) = (0, 0);
            for round in 0..ROUNDS {
                let version = round;
                let old = Some(1_000_000 + round as i64);
                if version > 0 {
                    assert!(
                        store
                            .set_wakeup(&stream_id, version, old)
                            .await
                            .expect("set_wakeup"),
                        "{stream_id} round {round}: set_wakeup at the current version"
                    );
                }
                let (append_at, stale_at) = match round % 4 {
                    0 | 1 => (Some(round as i64), Some(-1 - round as i64)),
                    2 => (None, Some(-1 - round as i64)),
                    _ => (Some(round as i64), None),
                };
                let set = race_append_and_set(
                    &store,
                    with_wakeup(
                        request(&stream_id, version, events(&format!("r{round}"), 1)),
                        append_at,
                    ),
                    stale_at,
                    round,
                )
                .await;
                match set {
                    Ok(true) => applied += 1,
                    Ok(false) => refused += 1,
                    Err(err) => panic!("{stream_id} round {round}: set_wakeup: {err}"),
                }
                assert_eq!(
                    wakeup_of(&*store, &stream_id).await,
                    append_at.map(|at_ms| wakeup(&stream_id, at_ms, version + 1)),
                    "{stream_id} round {round}: the stale set_wakeup overwrote the append's wakeup"
                );
            }
            (applied, refused)
        }));
    }
    let (mut applied, mut refused) = (0, 0);
    for stream in streams {
        let (a, r) = stream.await.expect("stream task panicked");
        applied += a;
        refused += r;
    }
    assert_eq!(applied + refused, ROUNDS * STREAMS as u64);
}

/// The same race when the append keeps the wakeup it finds (the common
/// case: most appends do not move it) and so leaves the row's version
/// behind: the stale call still never outlives the append. It may land
/// first (the stream was at its version then), and the append, finding a
/// wakeup that is no longer its own, writes its own over it.
pub async fn stale_set_wakeup_loses_to_an_append_that_keeps_the_wakeup<H: Harness>(harness: &H) {
    const ROUNDS: u64 = 200;
    const STREAMS: usize = 4;
    let (store, _location) = harness.create().await;
    let store = Arc::new(store);

    let mut streams = Vec::new();
    for stream in 0..STREAMS {
        let store = Arc::clone(&store);
        streams.push(tokio::spawn(async move {
            let stream_id = format!("keep-{stream}");
            store
                .append(request(&stream_id, 0, events("start", 1)))
                .await
                .expect("first append");
            for round in 0..ROUNDS {
                let version = round + 1;
                // Kept: a wakeup, or none (a cleared row kept as it is).
                let kept = (round % 3 != 2).then_some(1_000 + round as i64);
                let stale_at = match round % 4 {
                    2 if kept.is_some() => None,
                    0..=2 => Some(-1 - round as i64),
                    _ => Some(2_000_000 + round as i64),
                };
                assert!(
                    store
                        .set_wakeup(&stream_id, version, kept)
                        .await
                        .expect("set_wakeup"),
                    "{stream_id} round {round}: set_wakeup at the current version"
                );
                let set = race_append_and_set(
                    &store,
                    with_wakeup(
                        request(&stream_id, version, events(&format!("k{round}"), 1)),
                        kept,
                    ),
                    stale_at,
                    round,
                )
                .await;
                set.unwrap_or_else(|err| panic!("{stream_id} round {round}: set_wakeup: {err}"));
                let now = wakeup_of(&*store, &stream_id).await;
                assert_eq!(
                    now.as_ref().map(|w| w.at_ms),
                    kept,
                    "{stream_id} round {round}: the stale set_wakeup outlived the append \
                     that kept the wakeup"
                );
                if let Some(now) = now {
                    assert!(
                        now.version == version || now.version == version + 1,
                        "{stream_id} round {round}: recorded at {}",
                        now.version
                    );
                }
                // A call stale against the append is refused outright.
                assert!(
                    !store
                        .set_wakeup(&stream_id, version, stale_at)
                        .await
                        .expect("set_wakeup"),
                    "{stream_id} round {round}: a set_wakeup at the version before the append"
                );
            }
        }));
    }
    for stream in streams {
        stream.await.expect("stream task panicked");
    }
}

/// Wakeups, cleared ones included, and the versions they were computed at
/// survive the store being reopened.
pub async fn wakeups_survive_restart<H: Harness>(harness: &H) {
    let (store, location) = harness.create().await;
    store
        .append(with_wakeup(
            request("acct-1", 0, events("one", 2)),
            Some(70),
        ))
        .await
        .expect("append");
    store
        .append(with_wakeup(
            request("acct-2", 0, events("two", 1)),
            Some(30),
        ))
        .await
        .expect("append");
    store
        .append(request("acct-3", 0, events("three", 3)))
        .await
        .expect("append");
    assert!(store.set_wakeup("acct-3", 3, Some(50)).await.expect("set"));
    store
        .append(with_wakeup(
            request("acct-4", 0, events("four", 1)),
            Some(10),
        ))
        .await
        .expect("append");
    store
        .append(request("acct-4", 1, events("four-clear", 1)))
        .await
        .expect("append");
    let before = all_wakeups(&store).await;
    assert_eq!(
        before,
        vec![
            wakeup("acct-2", 30, 1),
            wakeup("acct-3", 50, 3),
            wakeup("acct-1", 70, 2),
        ]
    );
    drop(store);

    let store = harness.reopen(&location).await;
    assert_eq!(all_wakeups(&store).await, before, "wakeups after restart");
    assert_eq!(
        store.due_wakeups(50, ALL).await.expect("due_wakeups"),
        before[..2].to_vec()
    );
    // The cleared wakeup kept its version: a stale set is still refused.
    assert!(!store.set_wakeup("acct-4", 1, Some(5)).await.expect("stale"));
    assert!(!store.set_wakeup("acct-1", 1, Some(5)).await.expect("stale"));
    assert!(store.set_wakeup("acct-4", 2, Some(5)).await.expect("set"));
    store
        .append(with_wakeup(request("acct-1", 2, events("after", 1)), None))
        .await
        .expect("append after restart");
    let after = all_wakeups(&store).await;
    assert_eq!(
        after,
        vec![
            wakeup("acct-4", 5, 2),
            wakeup("acct-2", 30, 1),
            wakeup("acct-3", 50, 3),
        ]
    );
    drop(store);

    let store = harness.reopen(&location).await;
    assert_eq!(all_wakeups(&store).await, after, "after a second restart");
}

/// An append that fails (version conflict, duplicate idempotency key,
/// invalid request) leaves the wakeup, and the version it belongs to,
/// exactly as they were.
pub async fn failed_appends_leave_the_wakeup_alone<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let mut first = with_wakeup(request("acct", 0, events("first", 2)), Some(10));
    first.idempotency = vec![record("k1", "fp1", "r1")];
    store.append(first).await.expect("append");
    let before = vec![wakeup("acct", 10, 2)];

    for (expected, at_ms) in [(0, Some(99)), (1, None), (3, Some(1))] {
        match store
            .append(with_wakeup(
                request("acct", expected, events("x", 1)),
                at_ms,
            ))
            .await
        {
            Err(StoreError::VersionConflict { actual: 2, .. }) => {}
            other => panic!("expected a conflict at version 2, got {other:?}"),
        }
        assert_eq!(all_wakeups(&store).await, before, "after a conflict");
    }
    // A stream that does not exist gets no wakeup from a conflicting append.
    assert!(matches!(
        store
            .append(with_wakeup(request("ghost", 4, events("g", 1)), Some(1)))
            .await,
        Err(StoreError::VersionConflict { actual: 0, .. })
    ));
    assert_eq!(all_wakeups(&store).await, before, "after a conflict");

    for (records, at_ms) in [
        (vec![record("k1", "fp1", "r1")], None),
        (
            vec![record("k2", "fp", "r"), record("k1", "other", "r")],
            Some(3),
        ),
        (
            vec![record("k3", "fp", "r"), record("k3", "fp", "r")],
            Some(4),
        ),
    ] {
        let mut append = with_wakeup(request("acct", 2, events("dup", 1)), at_ms);
        append.idempotency = records;
        assert!(
            matches!(
                store.append(append).await,
                Err(StoreError::DuplicateIdempotencyKey { .. })
            ),
            "a duplicate key was accepted"
        );
        assert_eq!(all_wakeups(&store).await, before, "after a duplicate key");
    }

    for invalid in [
        with_wakeup(request("acct", 2, Vec::new()), None),
        with_wakeup(request("", 0, events("e", 1)), Some(5)),
    ] {
        assert!(matches!(
            store.append(invalid).await,
            Err(StoreError::InvalidAppend(_))
        ));
        assert_eq!(all_wakeups(&store).await, before, "after an invalid append");
    }

    // The failures did not move the version the wakeup is guarded by.
    assert_eq!(store.stream_version("acct").await.expect("version"), 2);
    assert!(!store.set_wakeup("acct", 3, Some(6)).await.expect("stale"));
    assert!(store.set_wakeup("acct", 2, Some(6)).await.expect("set"));
    assert_eq!(all_wakeups(&store).await, vec![wakeup("acct", 6, 2)]);
}
