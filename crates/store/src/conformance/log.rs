//! The global log, read by one consumer at a time.

use std::collections::HashMap;

use super::{ALL, Harness, assert_strictly_increasing, events, read_whole_log, request};
use crate::{EventStore, LogPosition, RecordedEvent};

/// Interleaved appends to many streams form one log: `read_log(None)` returns
/// every event in append order, paging with `after` = the last position seen
/// returns each event exactly once, and each stream appears in version order.
pub async fn global_log_is_ordered_and_pages_without_gaps<H: Harness>(harness: &H) {
    const STREAMS: usize = 7;
    const ROUNDS: usize = 12;
    let (store, _location) = harness.create().await;

    // Appends run one after another, so the log order is the append order.
    let mut appended = Vec::new();
    let mut versions = [0u64; STREAMS];
    for round in 0..ROUNDS {
        for offset in 0..STREAMS {
            let s = (offset + round) % STREAMS;
            let count = 1 + (round + s) % 3;
            let stream_id = format!("stream-{s}");
            let batch = events(&format!("{stream_id}/{round}"), count);
            let result = store
                .append(request(&stream_id, versions[s], batch.clone()))
                .await
                .expect("append");
            versions[s] = result.last_version;
            for ((event, position), version) in batch
                .into_iter()
                .zip(result.positions)
                .zip(result.first_version..)
            {
                appended.push((stream_id.clone(), version, position, event.payload));
            }
        }
    }

    let log = read_whole_log(&store).await;
    assert_eq!(log.len(), appended.len());
    for (recorded, (stream_id, version, position, payload)) in log.iter().zip(&appended) {
        assert_eq!(
            (
                &recorded.stream_id,
                recorded.version,
                recorded.position,
                &recorded.payload
            ),
            (stream_id, *version, *position, payload)
        );
    }
    assert_strictly_increasing(log.iter().map(|e| e.position), "read_log(None)");

    let mut last_version: HashMap<&str, u64> = HashMap::new();
    for recorded in &log {
        let last = last_version.entry(&recorded.stream_id).or_insert(0);
        assert_eq!(
            recorded.version,
            *last + 1,
            "stream {} out of order",
            recorded.stream_id
        );
        *last = recorded.version;
    }

    for page_size in [1, 2, 5, 64] {
        let paged = read_in_pages(&store, None, page_size).await;
        assert_eq!(paged, log, "paging by {page_size}");
    }
    assert_eq!(
        store
            .read_log(Some(LogPosition::default()), ALL)
            .await
            .expect("read_log"),
        log,
        "Some(LogPosition::default()) reads from the start"
    );
}

/// `read_log(Some(p))` returns exactly the events strictly after `p`, for
/// every `p` in the log, and later appends once they exist.
pub async fn read_log_after_checkpoint<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    for (i, stream_id) in ["a", "b", "c", "a", "b", "a"].into_iter().enumerate() {
        let version = store.stream_version(stream_id).await.expect("version");
        store
            .append(request(
                stream_id,
                version,
                events(&format!("{stream_id}{i}"), 1 + i % 2),
            ))
            .await
            .expect("append");
    }
    let log = read_whole_log(&store).await;
    assert!(log.len() >= 9);

    for (index, checkpoint) in log.iter().enumerate() {
        let after = store
            .read_log(Some(checkpoint.position), ALL)
            .await
            .expect("read_log");
        assert_eq!(after, log[index + 1..], "after {}", checkpoint.position);
        let limited = store
            .read_log(Some(checkpoint.position), 2)
            .await
            .expect("read_log");
        let end = (index + 3).min(log.len());
        assert_eq!(
            limited,
            log[index + 1..end],
            "after {} limit 2",
            checkpoint.position
        );
    }

    let last = log.last().expect("non-empty log").position;
    assert!(
        store.read_log(None, 0).await.expect("read_log").is_empty(),
        "limit 0"
    );
    assert!(
        store
            .read_log(Some(log[0].position), 0)
            .await
            .expect("read_log")
            .is_empty(),
        "limit 0 after a checkpoint"
    );

    let more = store
        .append(request("d", 0, events("later", 3)))
        .await
        .expect("append");
    let tail = store.read_log(Some(last), ALL).await.expect("read_log");
    assert_eq!(
        tail.iter().map(|e| e.position).collect::<Vec<_>>(),
        more.positions,
        "after the old end: exactly the new events"
    );
    assert!(
        store
            .read_log(Some(*more.positions.last().expect("positions")), ALL)
            .await
            .expect("read_log")
            .is_empty(),
        "nothing after the end"
    );
}

/// Reads the log from `after` to its current end, `page_size` at a time,
/// checking that each page is within its limit and follows the previous one.
pub(super) async fn read_in_pages<S: EventStore>(
    store: &S,
    mut after: Option<LogPosition>,
    page_size: usize,
) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    loop {
        let page = store.read_log(after, page_size).await.expect("read_log");
        assert!(
            page.len() <= page_size,
            "page of {} over limit {page_size}",
            page.len()
        );
        let Some(last) = page.last() else {
            return all;
        };
        if let Some(after) = after {
            assert!(page[0].position > after, "page starts at or before {after}");
        }
        after = Some(last.position);
        all.extend(page);
    }
}
