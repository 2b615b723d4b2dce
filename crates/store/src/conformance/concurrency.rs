//! Many writers at once, and a reader tailing them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Barrier;

use super::{
    ALL, Harness, assert_strictly_increasing, events, read_whole_log, read_whole_stream, request,
};
use crate::{EventStore, LogPosition, StoreError};

/// 16 tasks append to one stream, all starting at expected version 0 and
/// retrying at the version a conflict reports: every version is won by
/// exactly one append, the stream ends contiguous, and no event is lost or
/// duplicated.
pub async fn concurrent_appenders_win_each_version_once<H: Harness>(harness: &H) {
    const TASKS: usize = 16;
    const BATCHES: usize = 8;
    let (store, _location) = harness.create().await;
    let store = Arc::new(store);
    let start = Arc::new(Barrier::new(TASKS));

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut expected = 0;
            let mut won = Vec::new();
            let mut conflicts = 0;
            for batch in 0..BATCHES {
                let size = 1 + (task + batch) % 3;
                let tag = format!("task{task}/batch{batch}");
                loop {
                    match store
                        .append(request("hot", expected, events(&tag, size)))
                        .await
                    {
                        Ok(result) => {
                            assert_eq!(result.first_version, expected + 1);
                            assert_eq!(result.last_version, expected + size as u64);
                            won.push((result.first_version, tag.clone(), result.positions));
                            expected = result.last_version;
                            break;
                        }
                        Err(StoreError::VersionConflict {
                            stream_id,
                            expected: reported,
                            actual,
                        }) => {
                            assert_eq!((stream_id.as_str(), reported), ("hot", expected));
                            // `expected` was a version the stream really had,
                            // and streams only grow.
                            assert!(actual > expected, "actual {actual} <= expected {expected}");
                            expected = actual;
                            conflicts += 1;
                        }
                        Err(other) => panic!("task {task}: unexpected error {other}"),
                    }
                }
            }
            (won, conflicts)
        }));
    }

    // version -> (payload that won it, its position)
    let mut winners: HashMap<u64, (Vec<u8>, LogPosition)> = HashMap::new();
    let mut conflicts = 0;
    for task in tasks {
        let (won, task_conflicts) = task.await.expect("appender task panicked");
        conflicts += task_conflicts;
        for (first_version, tag, positions) in won {
            for ((version, payload), position) in (first_version..)
                .zip(events(&tag, positions.len()).into_iter().map(|e| e.payload))
                .zip(positions)
            {
                let previous = winners.insert(version, (payload, position));
                assert!(previous.is_none(), "version {version} was won twice");
            }
        }
    }
    // All 16 start at version 0 and only one can win it.
    assert!(
        conflicts >= TASKS - 1,
        "only {conflicts} conflicts: the appenders did not race"
    );

    let total: usize = (0..TASKS)
        .flat_map(|task| (0..BATCHES).map(move |batch| 1 + (task + batch) % 3))
        .sum();
    assert_eq!(winners.len(), total, "acknowledged events");
    assert_eq!(
        store.stream_version("hot").await.expect("version"),
        total as u64
    );
    let stream = read_whole_stream(&*store, "hot").await;
    assert_eq!(stream.len(), total, "events in the stream");
    for (index, recorded) in stream.iter().enumerate() {
        let version = index as u64 + 1;
        assert_eq!(recorded.version, version, "versions are contiguous");
        let (payload, position) = &winners[&version];
        assert_eq!(
            &recorded.payload, payload,
            "version {version} holds another append's event"
        );
        assert_eq!(recorded.position, *position);
    }
    assert_strictly_increasing(stream.iter().map(|e| e.position), "hot stream");
    let distinct: HashSet<_> = stream.iter().map(|e| &e.payload).collect();
    assert_eq!(distinct.len(), total, "an event was duplicated");
}

/// A reader tailing the log while 8 writers append (some sharing a stream)
/// sees positions only increase, never skips an event, and ends up with
/// exactly the log and every acknowledged event.
///
/// Trivial for a backend whose rowids follow commit order; the case that
/// matters for one whose writers can commit out of position order.
pub async fn tail_log_while_appending<H: Harness>(harness: &H) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 25;
    let (store, _location) = harness.create().await;
    let store = Arc::new(store);
    let writers_done = Arc::new(AtomicBool::new(false));

    let tailer = {
        let store = Arc::clone(&store);
        let writers_done = Arc::clone(&writers_done);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after: Option<LogPosition> = None;
            loop {
                // Read the flag before the page: an empty page read after
                // the writers finished means the tail is complete.
                let done = writers_done.load(Ordering::SeqCst);
                let page = store.read_log(after, 7).await.expect("read_log");
                for recorded in &page {
                    if let Some(after) = after {
                        assert!(
                            recorded.position > after,
                            "tail went back from {after} to {}",
                            recorded.position
                        );
                    }
                    after = Some(recorded.position);
                }
                if page.is_empty() {
                    if done {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
                seen.extend(page);
            }
        })
    };

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let stream_id = format!("tail-{}", writer % 4);
            let mut acknowledged = Vec::new();
            let mut expected = store.stream_version(&stream_id).await.expect("version");
            for append in 0..APPENDS {
                let batch = events(&format!("w{writer}/{append}"), 1 + append % 3);
                loop {
                    match store
                        .append(request(&stream_id, expected, batch.clone()))
                        .await
                    {
                        Ok(result) => {
                            expected = result.last_version;
                            acknowledged.extend(result.positions);
                            break;
                        }
                        Err(StoreError::VersionConflict { actual, .. }) => expected = actual,
                        Err(other) => panic!("writer {writer}: {other}"),
                    }
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = HashSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer panicked"));
    }
    writers_done.store(true, Ordering::SeqCst);
    let seen = tailer.await.expect("tailer panicked");

    let log = read_whole_log(&*store).await;
    assert_eq!(seen, log, "the tail differs from the log read afterwards");
    let seen_positions: HashSet<_> = seen.iter().map(|e| e.position).collect();
    assert_eq!(seen_positions.len(), seen.len(), "an event was seen twice");
    assert_eq!(seen_positions, acknowledged, "tail vs acknowledged appends");
    assert_eq!(
        store
            .read_log(log.last().map(|e| e.position), ALL)
            .await
            .expect("read_log"),
        Vec::new()
    );
}
