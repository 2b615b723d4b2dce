//! A seeded random mix of every operation, checked against an in-memory
//! model of the contract. It finds the interactions the targeted cases did
//! not think of, and replays exactly from its seed.

use std::collections::{HashMap, HashSet};

use super::{Harness, sorted_by_key};
use crate::{
    AppendRequest, EventStore, IdempotencyRecord, LogPosition, NewEvent, RecordedEvent, Snapshot,
    StoreError, Wakeup,
};

const SEED: u64 = 0x7a11_5eed;
const OPERATIONS: usize = 400;
const STREAMS: [&str; 4] = ["s0", "s1", "s2", "s3"];

/// 400 random appends (right and wrong versions, reused keys, wakeups set
/// and cleared), stream and log reads with random windows, version and key
/// lookups, snapshots, and wakeups set at right and wrong versions and read
/// back: each answer equals the model's.
pub async fn random_operations_match_model<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let mut rng = SplitMix64(SEED);
    let mut model = Model::default();

    for step in 0..OPERATIONS {
        let context = format!("step {step} (seed {SEED:#x})");
        let stream = |rng: &mut SplitMix64| {
            // Mostly the same four streams, now and then a fifth that often does not exist yet.
            if rng.below(10) == 0 {
                "rare"
            } else {
                STREAMS[rng.below(4) as usize]
            }
        };
        match rng.below(112) {
            0..40 => {
                let stream_id = stream(&mut rng);
                let actual = model.version(stream_id);
                let expected_version = match rng.below(10) {
                    0 => actual + 1,
                    1 if actual > 0 => actual - 1,
                    _ => actual,
                };
                let events: Vec<_> = (0..1 + rng.below(4))
                    .map(|i| NewEvent {
                        event_type: format!("type-{}", rng.below(3)),
                        payload: format!("{step}.{i}").into_bytes(),
                        recorded_at_ms: step as i64,
                    })
                    .collect();
                let idempotency: Vec<_> = (0..rng.below(3))
                    .map(|_| IdempotencyRecord {
                        key: format!("k{}", rng.below(12)),
                        fingerprint: format!("fp{step}").into_bytes(),
                        response: format!("resp{step}").into_bytes(),
                    })
                    .collect();
                let next_wakeup_ms = wakeup_at(&mut rng);
                let request = AppendRequest {
                    stream_id: stream_id.to_owned(),
                    expected_version,
                    events,
                    idempotency,
                    holds: Vec::new(),
                    charges: Vec::new(),
                    next_wakeup_ms,
                };
                let result = store.append(request.clone()).await;
                model.check_append(request, result, &context);
            }
            40..55 => {
                let stream_id = stream(&mut rng);
                let from = rng.below(model.version(stream_id) + 3);
                let limit = rng.below(7) as usize;
                let got = store
                    .read_stream(stream_id, from, limit)
                    .await
                    .expect("read_stream");
                let want: Vec<_> = model
                    .log
                    .iter()
                    .filter(|e| e.stream_id == stream_id && e.version >= from)
                    .take(limit)
                    .cloned()
                    .collect();
                assert_eq!(
                    got, want,
                    "{context}: read_stream({stream_id}, {from}, {limit})"
                );
            }
            55..70 => {
                let after = match rng.below(4) {
                    0 => None,
                    1 => Some(LogPosition::default()),
                    _ if model.log.is_empty() => None,
                    _ => Some(model.log[rng.below(model.log.len() as u64) as usize].position),
                };
                let limit = rng.below(11) as usize;
                let got = store.read_log(after, limit).await.expect("read_log");
                let want: Vec<_> = model
                    .log
                    .iter()
                    .filter(|e| after.is_none_or(|after| e.position > after))
                    .take(limit)
                    .cloned()
                    .collect();
                assert_eq!(got, want, "{context}: read_log({after:?}, {limit})");
            }
            70..80 => {
                let stream_id = stream(&mut rng);
                let got = store
                    .stream_version(stream_id)
                    .await
                    .expect("stream_version");
                assert_eq!(
                    got,
                    model.version(stream_id),
                    "{context}: stream_version({stream_id})"
                );
            }
            80..90 => {
                let stream_id = stream(&mut rng);
                let keys: Vec<String> = (0..rng.below(5))
                    .map(|_| format!("k{}", rng.below(12)))
                    .collect();
                let got = store
                    .find_idempotency(stream_id, &keys)
                    .await
                    .expect("find_idempotency");
                let unique: HashSet<&String> = keys.iter().collect();
                let want: Vec<_> = unique
                    .into_iter()
                    .filter_map(|key| {
                        model
                            .records
                            .get(&(stream_id.to_owned(), key.clone()))
                            .cloned()
                    })
                    .collect();
                assert_eq!(
                    sorted_by_key(got),
                    sorted_by_key(want),
                    "{context}: find_idempotency({stream_id}, {keys:?})"
                );
            }
            90..100 => {
                let stream_id = stream(&mut rng);
                if rng.below(2) == 0 {
                    let snapshot = Snapshot {
                        version: rng.below(model.version(stream_id) + 1),
                        payload: format!("snap{step}").into_bytes(),
                    };
                    store
                        .save_snapshot(stream_id, snapshot.clone())
                        .await
                        .expect("save_snapshot");
                    model.snapshots.insert(stream_id.to_owned(), snapshot);
                }
                let got = store.load_snapshot(stream_id).await.expect("load_snapshot");
                assert_eq!(
                    got.as_ref(),
                    model.snapshots.get(stream_id),
                    "{context}: load_snapshot({stream_id})"
                );
            }
            100..106 => {
                let stream_id = stream(&mut rng);
                let actual = model.version(stream_id);
                let version = match rng.below(6) {
                    0 => actual + 1,
                    1 => actual.saturating_sub(1),
                    _ => actual,
                };
                let at_ms = wakeup_at(&mut rng);
                let applied = store
                    .set_wakeup(stream_id, version, at_ms)
                    .await
                    .expect("set_wakeup");
                let want = version == actual && actual > 0;
                assert_eq!(
                    applied, want,
                    "{context}: set_wakeup({stream_id}, {version}, {at_ms:?}) at version {actual}"
                );
                if applied {
                    model.set_wakeup(stream_id, version, at_ms);
                }
            }
            _ => {
                let now_ms = rng.below(30) as i64 - 8;
                let limit = rng.below(6) as usize;
                let got = store.due_wakeups(now_ms, limit).await.expect("due_wakeups");
                assert_eq!(
                    got,
                    model.due_wakeups(now_ms, limit),
                    "{context}: due_wakeups({now_ms}, {limit})"
                );
            }
        }
    }
    assert!(
        model.log.len() > 100,
        "the run appended too little to mean much"
    );
}

#[derive(Default)]
struct Model {
    log: Vec<RecordedEvent>,
    versions: HashMap<String, u64>,
    records: HashMap<(String, String), IdempotencyRecord>,
    snapshots: HashMap<String, Snapshot>,
    /// Only the set ones: a cleared wakeup is simply absent.
    wakeups: HashMap<String, Wakeup>,
}

impl Model {
    fn version(&self, stream_id: &str) -> u64 {
        self.versions.get(stream_id).copied().unwrap_or(0)
    }

    fn set_wakeup(&mut self, stream_id: &str, version: u64, at_ms: Option<i64>) {
        match at_ms {
            Some(at_ms) => {
                let wakeup = Wakeup {
                    stream_id: stream_id.to_owned(),
                    at_ms,
                    version,
                };
                self.wakeups.insert(stream_id.to_owned(), wakeup);
            }
            None => {
                self.wakeups.remove(stream_id);
            }
        }
    }

    fn due_wakeups(&self, now_ms: i64, limit: usize) -> Vec<Wakeup> {
        let mut due: Vec<Wakeup> = self
            .wakeups
            .values()
            .filter(|w| w.at_ms <= now_ms)
            .cloned()
            .collect();
        due.sort_by(|a, b| (a.at_ms, &a.stream_id).cmp(&(b.at_ms, &b.stream_id)));
        due.truncate(limit);
        due
    }

    /// Checks the store's answer against the contract and, if it was a
    /// success, applies the append to the model.
    fn check_append(
        &mut self,
        request: AppendRequest,
        result: Result<crate::AppendResult, StoreError>,
        context: &str,
    ) {
        let actual = self.version(&request.stream_id);
        if request.expected_version != actual {
            match result {
                Err(StoreError::VersionConflict {
                    expected,
                    actual: reported,
                    ..
                }) if expected == request.expected_version && reported == actual => {}
                other => panic!("{context}: expected a conflict at {actual}, got {other:?}"),
            }
            return;
        }
        let mut in_request = HashSet::new();
        let duplicate = request.idempotency.iter().find(|record| {
            self.records
                .contains_key(&(request.stream_id.clone(), record.key.clone()))
                || !in_request.insert(&record.key)
        });
        if let Some(duplicate) = duplicate {
            match result {
                Err(StoreError::DuplicateIdempotencyKey { key, .. }) if key == duplicate.key => {}
                other => panic!(
                    "{context}: expected duplicate key {}, got {other:?}",
                    duplicate.key
                ),
            }
            return;
        }

        let result = result.unwrap_or_else(|err| panic!("{context}: append failed: {err}"));
        let count = request.events.len() as u64;
        assert_eq!(
            (result.first_version, result.last_version),
            (actual + 1, actual + count),
            "{context}"
        );
        assert_eq!(result.positions.len(), request.events.len(), "{context}");
        let mut previous = self.log.last().map(|e| e.position).unwrap_or_default();
        for ((event, position), version) in request
            .events
            .into_iter()
            .zip(result.positions)
            .zip(actual + 1..)
        {
            assert!(
                position > previous,
                "{context}: position {position} not after {previous}"
            );
            previous = position;
            self.log.push(RecordedEvent {
                stream_id: request.stream_id.clone(),
                version,
                position,
                event_type: event.event_type,
                payload: event.payload,
                recorded_at_ms: event.recorded_at_ms,
            });
        }
        self.versions
            .insert(request.stream_id.clone(), actual + count);
        self.set_wakeup(&request.stream_id, actual + count, request.next_wakeup_ms);
        for record in request.idempotency {
            self.records
                .insert((request.stream_id.clone(), record.key.clone()), record);
        }
    }
}

/// Few distinct instants, some negative, so that ties on `at_ms` (broken by
/// stream id) and the `<=` boundary come up often; a quarter are `None`.
fn wakeup_at(rng: &mut SplitMix64) -> Option<i64> {
    (rng.below(4) != 0).then(|| rng.below(20) as i64 - 5)
}

/// Small, dependency-free and fully determined by its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..bound` for a test; `bound` must be non-zero.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
