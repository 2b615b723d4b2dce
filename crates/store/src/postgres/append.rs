//! Appends: any number of streams in one statement, one round trip.
//!
//! The statement is its own transaction (PostgreSQL runs a lone statement
//! atomically), so an append costs one round trip and one commit however
//! many streams it carries: group commit across accounts. Each stream's
//! version check happens inside the statement, so a stream that is not at
//! its expected version simply inserts nothing while the others go in.
//!
//! What one statement cannot do is leave out a stream that fails half-way:
//! a primary-key violation (another writer committed the same version after
//! the check read it) or a duplicate idempotency key aborts the whole
//! statement. Those are the rare paths: the append then asks which streams
//! failed, answers them, and runs the statement again for the rest.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{Client, GenericClient};
use tokio_postgres::error::SqlState;

use super::error::store_error;
use super::sql::{get, get_u64, stream_version};
use crate::{AppendRequest, AppendResult, LogPosition, StoreError};

/// Every stream's version check, events, idempotency records, resolved
/// holds, wakeup and refunded charges, for all streams of the batch.
///
/// - `guard` keeps the streams whose last version is the expected one, read
///   from the statement's snapshot. It is read before this statement's first
///   insert assigns the transaction its id, so a version it saw was written
///   by a transaction with a smaller id: within a stream, a higher version
///   always has a higher `tx`, hence a higher position. A writer that
///   commits the same version after the snapshot makes the insert fail on
///   the primary key (after waiting for it), which is the real guarantee.
/// - `WITH ORDINALITY` + `ORDER BY` insert events in request order, so
///   identity values (positions) follow versions; the caller checks it.
/// - Records and wakeups are written only for streams that passed `guard`.
///   Holds may be overwritten (an expired hold settled late), and charges
///   (each refund of a charge rewrites its record). A wakeup is rewritten
///   only when it changes (most appends leave it as it was, and the row
///   version they would write is a dead tuple per event under spread
///   traffic); kept or rewritten, the conflict clause locks the row, which
///   is what a concurrent `set_wakeup` waits on before it reads the
///   stream's version, and then loses to.
pub(super) const APPEND: &str = "
WITH guard AS MATERIALIZED (
    SELECT g.stream_id
    FROM unnest($1::text[], $2::bigint[]) AS g(stream_id, expected)
    WHERE COALESCE((SELECT MAX(e.version) FROM events e WHERE e.stream_id = g.stream_id), 0)
        = g.expected
),
inserted AS (
    INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
    SELECT e.stream_id, e.version, e.event_type, e.payload, e.recorded_at_ms
    FROM unnest($3::text[], $4::bigint[], $5::text[], $6::bytea[], $7::bigint[])
        WITH ORDINALITY AS e(stream_id, version, event_type, payload, recorded_at_ms, n)
    WHERE e.stream_id IN (SELECT stream_id FROM guard)
    ORDER BY e.n
    RETURNING stream_id, version, position, tx::text::bigint AS tx
),
records AS (
    INSERT INTO idempotency (stream_id, key, fingerprint, response)
    SELECT r.stream_id, r.key, r.fingerprint, r.response
    FROM unnest($8::text[], $9::text[], $10::bytea[], $11::bytea[])
        AS r(stream_id, key, fingerprint, response)
    WHERE r.stream_id IN (SELECT stream_id FROM guard)
),
holds AS (
    INSERT INTO resolved_holds (stream_id, hold_id, payload)
    SELECT h.stream_id, h.hold_id, h.payload
    FROM unnest($12::text[], $13::text[], $14::bytea[]) AS h(stream_id, hold_id, payload)
    WHERE h.stream_id IN (SELECT stream_id FROM guard)
    ON CONFLICT (stream_id, hold_id) DO UPDATE SET payload = excluded.payload
),
wakeups AS (
    INSERT INTO wakeups (stream_id, version, at_ms)
    SELECT w.stream_id, w.version, w.at_ms
    FROM unnest($15::text[], $16::bigint[], $17::bigint[]) AS w(stream_id, version, at_ms)
    WHERE w.stream_id IN (SELECT stream_id FROM guard)
    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, at_ms = excluded.at_ms
    WHERE wakeups.at_ms IS DISTINCT FROM excluded.at_ms
),
charges AS (
    INSERT INTO refunded_charges (stream_id, charge_key, payload)
    SELECT c.stream_id, c.charge_key, c.payload
    FROM unnest($18::text[], $19::text[], $20::bytea[]) AS c(stream_id, charge_key, payload)
    WHERE c.stream_id IN (SELECT stream_id FROM guard)
    ON CONFLICT (stream_id, charge_key) DO UPDATE SET payload = excluded.payload
)
SELECT stream_id, version, position, tx FROM inserted";

/// The versions of several streams, for the rare paths.
const STREAM_VERSIONS: &str = "
SELECT s.stream_id, COALESCE((SELECT MAX(e.version) FROM events e WHERE e.stream_id = s.stream_id), 0)
FROM unnest($1::text[]) AS s(stream_id)";

/// Which of the batch's `(stream, key)` pairs are already stored.
const STORED_KEYS: &str = "
SELECT r.stream_id, r.key
FROM unnest($1::text[], $2::text[]) AS r(stream_id, key)
WHERE EXISTS (SELECT 1 FROM idempotency i WHERE i.stream_id = r.stream_id AND i.key = r.key)";

/// Rounds of "find who failed, write the rest" before giving up. Each round
/// answers at least one stream, so this only bounds pathological churn.
const MAX_ROUNDS: usize = 8;

pub(super) async fn append_batch(
    client: &Client,
    requests: &[AppendRequest],
) -> Vec<Result<AppendResult, StoreError>> {
    let mut results: Vec<Option<Result<AppendResult, StoreError>>> =
        requests.iter().map(|_| None).collect();
    let mut pending = Vec::new();
    let mut seen_streams = HashSet::new();
    for (index, request) in requests.iter().enumerate() {
        if let Err(err) = request.validate() {
            results[index] = Some(Err(err));
        } else if !seen_streams.insert(request.stream_id.as_str()) {
            results[index] = Some(Err(StoreError::InvalidAppend(format!(
                "stream {:?} appears twice in one batch",
                request.stream_id
            ))));
        } else {
            pending.push(index);
        }
    }
    // A key repeated within one request fails that request; it is settled
    // on the slow path, where a version conflict still takes precedence.
    let (repeats, clean): (Vec<usize>, Vec<usize>) = pending
        .into_iter()
        .partition(|&index| has_repeated_key(&requests[index]));
    if !repeats.is_empty() {
        settle_duplicates(client, requests, &repeats, &mut results).await;
    }
    // Streams in a fixed order, so two replicas' batches take row locks in
    // the same order and never deadlock.
    let mut pending = clean;
    pending.sort_by(|&a, &b| requests[a].stream_id.cmp(&requests[b].stream_id));

    for _ in 0..MAX_ROUNDS {
        if pending.is_empty() {
            break;
        }
        match write(client, requests, &pending).await {
            Ok(written) => {
                let mut missing = Vec::new();
                for &index in &pending {
                    let request = &requests[index];
                    match written.get(request.stream_id.as_str()) {
                        Some(rows) => results[index] = Some(result_of(request, rows.clone())),
                        None => missing.push(index),
                    }
                }
                // The guard left them out: not at their expected version.
                settle_conflicts(client, requests, &missing, &mut results).await;
                pending.clear();
            }
            Err(err) => match err.as_db_error().map(|db| (db.code(), db.constraint())) {
                Some((code, Some("events_pkey"))) if *code == SqlState::UNIQUE_VIOLATION => {
                    // Someone committed a version after the guard read it.
                    settle_conflicts(client, requests, &pending, &mut results).await;
                    pending.retain(|&index| results[index].is_none());
                }
                Some((code, Some("idempotency_pkey"))) if *code == SqlState::UNIQUE_VIOLATION => {
                    settle_duplicates(client, requests, &pending, &mut results).await;
                    pending.retain(|&index| results[index].is_none());
                }
                Some((code, _))
                    if *code == SqlState::T_R_SERIALIZATION_FAILURE
                        || *code == SqlState::T_R_DEADLOCK_DETECTED =>
                {
                    // Nothing was written; deciding again at the current
                    // version is the right response: a conflict says so.
                    for &index in &pending {
                        let request = &requests[index];
                        results[index] = Some(Err(StoreError::VersionConflict {
                            stream_id: request.stream_id.clone(),
                            expected: request.expected_version,
                            actual: request.expected_version,
                        }));
                    }
                    pending.clear();
                }
                _ => {
                    let err = store_error(err);
                    for &index in &pending {
                        results[index] = Some(Err(err.clone()));
                    }
                    pending.clear();
                }
            },
        }
    }
    results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| {
                Err(StoreError::Unavailable(
                    "postgres: append kept racing other writers; try again".into(),
                ))
            })
        })
        .collect()
}

/// One inserted event: `(version, position)`.
type Inserted = Vec<(u64, LogPosition)>;

/// Runs [`APPEND`] for the `pending` requests; the inserted events by
/// stream.
async fn write(
    client: &Client,
    requests: &[AppendRequest],
    pending: &[usize],
) -> Result<HashMap<String, Inserted>, tokio_postgres::Error> {
    let mut columns = Columns::default();
    for &index in pending {
        columns.add(&requests[index]);
    }
    let statement = client.prepare_cached(APPEND).await?;
    let rows = client
        .query(
            &statement,
            &[
                &columns.guard_streams,
                &columns.guard_expected,
                &columns.event_streams,
                &columns.event_versions,
                &columns.event_types,
                &columns.payloads,
                &columns.recorded_at,
                &columns.record_streams,
                &columns.keys,
                &columns.fingerprints,
                &columns.responses,
                &columns.hold_streams,
                &columns.hold_ids,
                &columns.hold_payloads,
                &columns.wakeup_streams,
                &columns.wakeup_versions,
                &columns.wakeup_at,
                &columns.charge_streams,
                &columns.charge_keys,
                &columns.charge_payloads,
            ],
        )
        .await?;
    let mut written: HashMap<String, Inserted> = HashMap::new();
    for row in &rows {
        let decoded = (|| {
            let stream: String = get(row, 0)?;
            let version = get_u64(row, 1)?;
            let position = LogPosition::new(get_u64(row, 3)?, get_u64(row, 2)?);
            Ok::<_, StoreError>((stream, version, position))
        })();
        // A row that does not decode shows up as a missing event in the
        // stream's check below.
        if let Ok((stream, version, position)) = decoded {
            written.entry(stream).or_default().push((version, position));
        }
    }
    Ok(written)
}

/// The statement's parameters: one array per column, all streams together.
#[derive(Default)]
struct Columns<'a> {
    guard_streams: Vec<&'a str>,
    guard_expected: Vec<i64>,
    event_streams: Vec<&'a str>,
    event_versions: Vec<i64>,
    event_types: Vec<&'a str>,
    payloads: Vec<&'a [u8]>,
    recorded_at: Vec<i64>,
    record_streams: Vec<&'a str>,
    keys: Vec<&'a str>,
    fingerprints: Vec<&'a [u8]>,
    responses: Vec<&'a [u8]>,
    hold_streams: Vec<&'a str>,
    hold_ids: Vec<&'a str>,
    hold_payloads: Vec<&'a [u8]>,
    wakeup_streams: Vec<&'a str>,
    wakeup_versions: Vec<i64>,
    wakeup_at: Vec<Option<i64>>,
    charge_streams: Vec<&'a str>,
    charge_keys: Vec<&'a str>,
    charge_payloads: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn add(&mut self, request: &'a AppendRequest) {
        let stream = request.stream_id.as_str();
        // Validated: every version fits in an i64.
        let expected = request.expected_version as i64;
        self.guard_streams.push(stream);
        self.guard_expected.push(expected);
        for (event, version) in request.events.iter().zip(expected + 1..) {
            self.event_streams.push(stream);
            self.event_versions.push(version);
            self.event_types.push(&event.event_type);
            self.payloads.push(&event.payload);
            self.recorded_at.push(event.recorded_at_ms);
        }
        for record in &request.idempotency {
            self.record_streams.push(stream);
            self.keys.push(&record.key);
            self.fingerprints.push(&record.fingerprint);
            self.responses.push(&record.response);
        }
        for hold in &request.holds {
            self.hold_streams.push(stream);
            self.hold_ids.push(&hold.hold_id);
            self.hold_payloads.push(&hold.payload);
        }
        for charge in &request.charges {
            self.charge_streams.push(stream);
            self.charge_keys.push(&charge.charge_key);
            self.charge_payloads.push(&charge.payload);
        }
        self.wakeup_streams.push(stream);
        self.wakeup_versions
            .push(expected + request.events.len() as i64);
        self.wakeup_at.push(request.next_wakeup_ms);
    }
}

/// The result of a request whose events went in, after checking what the
/// contract promises about versions and positions.
fn result_of(request: &AppendRequest, mut inserted: Inserted) -> Result<AppendResult, StoreError> {
    let count = request.events.len();
    let expected_version = request.expected_version;
    inserted.sort_unstable_by_key(|(version, _)| *version);
    let versions_ok = inserted.len() == count
        && inserted
            .iter()
            .zip(expected_version + 1..)
            .all(|((version, _), want)| *version == want);
    let positions_ok = inserted.windows(2).all(|w| w[0].1 < w[1].1);
    if !versions_ok || !positions_ok {
        return Err(StoreError::Internal(format!(
            "append to {:?} inserted {inserted:?}, not {count} events in version and position order",
            request.stream_id
        )));
    }
    Ok(AppendResult {
        first_version: expected_version + 1,
        last_version: expected_version + count as u64,
        positions: inserted.into_iter().map(|(_, position)| position).collect(),
    })
}

fn has_repeated_key(request: &AppendRequest) -> bool {
    let mut seen = HashSet::new();
    request
        .idempotency
        .iter()
        .any(|record| !seen.insert(record.key.as_str()))
}

/// Answers, with `VersionConflict`, the requests whose stream is not at
/// the expected version now; leaves the others pending.
async fn settle_conflicts(
    client: &Client,
    requests: &[AppendRequest],
    indexes: &[usize],
    results: &mut [Option<Result<AppendResult, StoreError>>],
) {
    if indexes.is_empty() {
        return;
    }
    let versions = match stream_versions(client, requests, indexes).await {
        Ok(versions) => versions,
        Err(err) => {
            for &index in indexes {
                results[index] = Some(Err(err.clone()));
            }
            return;
        }
    };
    for &index in indexes {
        let request = &requests[index];
        let actual = versions
            .get(request.stream_id.as_str())
            .copied()
            .unwrap_or(0);
        if actual != request.expected_version {
            results[index] = Some(Err(StoreError::VersionConflict {
                stream_id: request.stream_id.clone(),
                expected: request.expected_version,
                actual,
            }));
        }
    }
}

async fn stream_versions(
    client: &Client,
    requests: &[AppendRequest],
    indexes: &[usize],
) -> Result<HashMap<String, u64>, StoreError> {
    let streams: Vec<&str> = indexes
        .iter()
        .map(|&index| requests[index].stream_id.as_str())
        .collect();
    let statement = client
        .prepare_cached(STREAM_VERSIONS)
        .await
        .map_err(store_error)?;
    client
        .query(&statement, &[&streams])
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| Ok((get(row, 0)?, get_u64(row, 1)?)))
        .collect()
}

/// Answers the requests that carry a key already stored for their stream,
/// or repeated within the request, with `DuplicateIdempotencyKey` naming
/// the first such key in request order (or `VersionConflict`, which takes
/// precedence); leaves the others pending.
async fn settle_duplicates(
    client: &Client,
    requests: &[AppendRequest],
    indexes: &[usize],
    results: &mut [Option<Result<AppendResult, StoreError>>],
) {
    let stored = match stored_keys(client, requests, indexes).await {
        Ok(stored) => stored,
        Err(err) => {
            for &index in indexes {
                results[index] = Some(Err(err.clone()));
            }
            return;
        }
    };
    let mut duplicated = Vec::new();
    for &index in indexes {
        let request = &requests[index];
        let mut seen = HashSet::new();
        let first = request.idempotency.iter().find(|record| {
            stored.contains(&(request.stream_id.clone(), record.key.clone()))
                || !seen.insert(record.key.as_str())
        });
        if let Some(record) = first {
            duplicated.push((index, record.key.clone()));
        }
    }
    let indexes: Vec<usize> = duplicated.iter().map(|(index, _)| *index).collect();
    settle_conflicts(client, requests, &indexes, results).await;
    for (index, key) in duplicated {
        if results[index].is_none() {
            results[index] = Some(Err(StoreError::DuplicateIdempotencyKey {
                stream_id: requests[index].stream_id.clone(),
                key,
            }));
        }
    }
}

async fn stored_keys(
    client: &Client,
    requests: &[AppendRequest],
    indexes: &[usize],
) -> Result<HashSet<(String, String)>, StoreError> {
    let mut streams = Vec::new();
    let mut keys = Vec::new();
    for &index in indexes {
        for record in &requests[index].idempotency {
            streams.push(requests[index].stream_id.as_str());
            keys.push(record.key.as_str());
        }
    }
    let statement = client
        .prepare_cached(STORED_KEYS)
        .await
        .map_err(store_error)?;
    client
        .query(&statement, &[&streams, &keys])
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| Ok((get(row, 0)?, get(row, 1)?)))
        .collect()
}

/// One stream's append: a batch of one.
pub(super) async fn append(
    client: &Client,
    request: &AppendRequest,
) -> Result<AppendResult, StoreError> {
    let mut results = append_batch(client, std::slice::from_ref(request)).await;
    let result = results.pop().expect("one result per request");
    // A version conflict names the version the winner left, re-read now
    // that the attempt is over.
    match result {
        Err(StoreError::VersionConflict {
            stream_id,
            expected,
            actual,
        }) if actual == expected => {
            let actual = stream_version(client, &stream_id).await.unwrap_or(actual);
            Err(StoreError::VersionConflict {
                stream_id,
                expected,
                actual,
            })
        }
        other => other,
    }
}
