//! The statements, over one pooled connection. `mod.rs` decides which
//! connection; `log.rs` has the global log and its fence.

use std::collections::HashSet;

use deadpool_postgres::{Client, GenericClient};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;

use super::error::{During, Failure, classify, store_error};
use crate::{
    AppendRequest, AppendResult, IdempotencyRecord, LogPosition, RecordedEvent, Snapshot,
    StoreError, Wakeup,
};

/// The columns `recorded_event` reads, in its order. xid8 has no Rust type in
/// tokio-postgres; as text it converts losslessly to bigint (a full
/// transaction id stays below 2^63 until the epoch counter wraps 2^31
/// times).
pub(super) const EVENT_COLUMNS: &str =
    "stream_id, version, position, tx::text::bigint, event_type, payload, recorded_at_ms";

const STREAM_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1";

/// All events in one statement. `WITH ORDINALITY` + `ORDER BY` insert them in
/// request order, so identity values (positions) follow versions; the append
/// checks that they did before committing.
const INSERT_EVENTS: &str = "
    INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
    SELECT $1, $2::bigint + e.n, e.event_type, e.payload, e.recorded_at_ms
    FROM unnest($3::text[], $4::bytea[], $5::bigint[])
        WITH ORDINALITY AS e(event_type, payload, recorded_at_ms, n)
    ORDER BY e.n
    RETURNING version, position, tx::text::bigint";

/// All records in one statement. `DO NOTHING` instead of failing, so the
/// keys missing from `RETURNING` say exactly which records were duplicates
/// (of a stored record, or of an earlier one in the same request).
const INSERT_IDEMPOTENCY: &str = "
    INSERT INTO idempotency (stream_id, key, fingerprint, response)
    SELECT $1, r.key, r.fingerprint, r.response
    FROM unnest($2::text[], $3::bytea[], $4::bytea[])
        WITH ORDINALITY AS r(key, fingerprint, response, n)
    ORDER BY r.n
    ON CONFLICT (stream_id, key) DO NOTHING
    RETURNING key";

/// Unconditional: the append holds the primary key entry of its new last
/// version, so its wakeup is the newest the stream can have until it
/// commits. A `NULL` `at_ms` keeps the row, and the row lock this takes is
/// what a concurrent `SET_WAKEUP` waits on and then loses to.
const WRITE_WAKEUP: &str = "
    INSERT INTO wakeups (stream_id, version, at_ms) VALUES ($1, $2, $3)
    ON CONFLICT (stream_id)
    DO UPDATE SET version = excluded.version, at_ms = excluded.at_ms";

/// Writes only if the stream's last event is at `$2`, in one statement so it
/// needs no transaction. The version check reads the statement's snapshot,
/// which an append committing a moment later does not change; what stops
/// that append's wakeup being overwritten is the conflict clause: an append
/// always writes the row, so this statement either writes first (and the
/// append overwrites it) or meets the append's row, waits for it to commit,
/// and re-checks the guard against the committed version (READ COMMITTED
/// re-evaluates `ON CONFLICT … WHERE` on the newest row), which refuses.
const SET_WAKEUP: &str = "
    INSERT INTO wakeups (stream_id, version, at_ms)
    SELECT $1::text, $2::bigint, $3::bigint
    WHERE (SELECT MAX(version) FROM events WHERE stream_id = $1::text) = $2::bigint
    ON CONFLICT (stream_id)
    DO UPDATE SET version = excluded.version, at_ms = excluded.at_ms
    WHERE wakeups.version <= excluded.version";

/// Served by the partial index `wakeups_due`, in its order; the column's "C"
/// collation makes the tie-break bytewise.
const DUE_WAKEUPS: &str = "
    SELECT stream_id, at_ms, version FROM wakeups
    WHERE at_ms <= $1 ORDER BY at_ms, stream_id LIMIT $2";

/// Why a write attempt failed: `Raced` errors come from losing to a
/// concurrent writer, and their conflict's `actual` is only a lower bound.
enum AppendError {
    Refused(StoreError),
    Raced(StoreError),
}

impl From<StoreError> for AppendError {
    fn from(err: StoreError) -> Self {
        Self::Refused(err)
    }
}

/// One transaction: check the version, insert the events, insert the
/// records, commit. The caller has validated the request.
///
/// `SELECT MAX(version)` makes the ordinary conflict cheap and exact; the
/// primary key on `(stream_id, version)` is what actually guarantees that
/// two appends at the same version cannot both commit. The version is read
/// before the first insert assigns this transaction its id, so when this
/// append builds on version `v`, the transaction that wrote `v` had its id
/// assigned (and committed) first: within a stream, a higher version always
/// has a higher `tx`, hence a higher position.
pub(super) async fn append(
    client: &mut Client,
    request: &AppendRequest,
) -> Result<AppendResult, StoreError> {
    match write_append(client, request).await {
        Ok(result) => Ok(result),
        Err(AppendError::Refused(err)) => Err(err),
        Err(AppendError::Raced(StoreError::VersionConflict {
            stream_id,
            expected,
            actual,
        })) => {
            // The transaction has been rolled back (dropping it queued the
            // ROLLBACK ahead of this query): read what the winner committed.
            let actual = stream_version(&*client, &stream_id).await.unwrap_or(actual);
            Err(StoreError::VersionConflict {
                stream_id,
                expected,
                actual,
            })
        }
        Err(AppendError::Raced(err)) => Err(err),
    }
}

async fn write_append(
    client: &mut Client,
    request: &AppendRequest,
) -> Result<AppendResult, AppendError> {
    let AppendRequest {
        stream_id,
        expected_version,
        events,
        idempotency,
        next_wakeup_ms,
    } = request;
    let expected_version = *expected_version;
    let last_version = expected_version + events.len() as u64;
    let during = During::Append {
        stream_id,
        expected: expected_version,
        records: idempotency,
    };
    let raced = |err: tokio_postgres::Error| AppendError::Raced(classify(err.into(), during));

    // Dropping `tx` on an early return rolls back: nothing is written.
    let tx = client.transaction().await.map_err(store_error)?;
    let statement = tx
        .prepare_cached(STREAM_VERSION)
        .await
        .map_err(store_error)?;
    let row = tx
        .query_one(&statement, &[stream_id])
        .await
        .map_err(store_error)?;
    let actual = get_u64(&row, 0)?;
    if actual != expected_version {
        return Err(AppendError::Refused(StoreError::VersionConflict {
            stream_id: stream_id.clone(),
            expected: expected_version,
            actual,
        }));
    }

    let event_types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    let recorded_at: Vec<i64> = events.iter().map(|e| e.recorded_at_ms).collect();
    let statement = tx
        .prepare_cached(INSERT_EVENTS)
        .await
        .map_err(store_error)?;
    let rows = tx
        .query(
            &statement,
            &[
                stream_id,
                &to_sql_int(expected_version),
                &event_types,
                &payloads,
                &recorded_at,
            ],
        )
        .await
        .map_err(raced)?;
    let positions = positions_in_version_order(stream_id, expected_version, events.len(), &rows)?;

    if !idempotency.is_empty() {
        let keys: Vec<&str> = idempotency.iter().map(|r| r.key.as_str()).collect();
        let fingerprints: Vec<&[u8]> = idempotency
            .iter()
            .map(|r| r.fingerprint.as_slice())
            .collect();
        let responses: Vec<&[u8]> = idempotency.iter().map(|r| r.response.as_slice()).collect();
        let statement = tx
            .prepare_cached(INSERT_IDEMPOTENCY)
            .await
            .map_err(store_error)?;
        let rows = tx
            .query(&statement, &[stream_id, &keys, &fingerprints, &responses])
            .await
            .map_err(raced)?;
        let inserted = rows
            .iter()
            .map(|row| get::<String>(row, 0))
            .collect::<Result<HashSet<_>, _>>()?;
        let mut seen = HashSet::new();
        if let Some(duplicate) = idempotency
            .iter()
            .find(|r| !inserted.contains(&r.key) || !seen.insert(r.key.as_str()))
        {
            return Err(AppendError::Refused(StoreError::DuplicateIdempotencyKey {
                stream_id: stream_id.clone(),
                key: duplicate.key.clone(),
            }));
        }
    }

    // Last, so the row lock that concurrent set_wakeup calls wait on is
    // held only until the commit that follows.
    let statement = tx.prepare_cached(WRITE_WAKEUP).await.map_err(store_error)?;
    tx.execute(
        &statement,
        &[stream_id, &to_sql_int(last_version), next_wakeup_ms],
    )
    .await
    .map_err(raced)?;

    // A lost connection here leaves the outcome unknown: Unavailable, and
    // the idempotency records tell a retry what happened.
    tx.commit().await.map_err(raced)?;
    Ok(AppendResult {
        first_version: expected_version + 1,
        last_version,
        positions,
    })
}

/// The positions `INSERT … RETURNING` handed out, by version, after checking
/// what the contract promises about them.
fn positions_in_version_order(
    stream_id: &str,
    expected_version: u64,
    count: usize,
    rows: &[Row],
) -> Result<Vec<LogPosition>, StoreError> {
    let mut inserted = rows
        .iter()
        .map(|row| {
            Ok((
                get_u64(row, 0)?,
                LogPosition::new(get_u64(row, 2)?, get_u64(row, 1)?),
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    inserted.sort_unstable_by_key(|(version, _)| *version);
    let versions_ok = inserted.len() == count
        && inserted
            .iter()
            .zip(expected_version + 1..)
            .all(|((version, _), want)| *version == want);
    let positions_ok = inserted.windows(2).all(|w| w[0].1 < w[1].1);
    if !versions_ok || !positions_ok {
        return Err(StoreError::Internal(format!(
            "append to {stream_id:?} inserted {inserted:?}, not {count} events in version and position order"
        )));
    }
    Ok(inserted.into_iter().map(|(_, position)| position).collect())
}

pub(super) async fn read_stream(
    client: &Client,
    stream_id: &str,
    from_version: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let from_version = from_version.max(1);
    if limit == 0 || from_version > i64::MAX as u64 {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
        ))
        .await
        .map_err(store_error)?;
    let rows = client
        .query(
            &statement,
            &[&stream_id, &to_sql_int(from_version), &to_sql_limit(limit)],
        )
        .await
        .map_err(store_error)?;
    let events = rows
        .iter()
        .map(recorded_event)
        .collect::<Result<Vec<_>, _>>()?;

    // The primary key rules out duplicates but not holes; a hole would make
    // every fold over this stream silently wrong.
    if let Some((expected, event)) = (from_version..)
        .zip(&events)
        .find(|(expected, event)| event.version != *expected)
    {
        return Err(StoreError::Corrupt(format!(
            "stream {stream_id:?} has no version {expected} but has {}",
            event.version
        )));
    }
    Ok(events)
}

pub(super) async fn stream_version(
    client: &impl GenericClient,
    stream_id: &str,
) -> Result<u64, StoreError> {
    // Answered from the primary key index: one seek.
    let statement = client
        .prepare_cached(STREAM_VERSION)
        .await
        .map_err(store_error)?;
    let row = client
        .query_one(&statement, &[&stream_id])
        .await
        .map_err(store_error)?;
    get_u64(&row, 0)
}

pub(super) async fn find_idempotency(
    client: &Client,
    stream_id: &str,
    keys: &[String],
) -> Result<Vec<IdempotencyRecord>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // A repeated key still matches its row once.
    let statement = client
        .prepare_cached(
            "SELECT key, fingerprint, response FROM idempotency
             WHERE stream_id = $1 AND key = ANY($2::text[])",
        )
        .await
        .map_err(store_error)?;
    client
        .query(&statement, &[&stream_id, &keys])
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| {
            Ok(IdempotencyRecord {
                key: get(row, 0)?,
                fingerprint: get(row, 1)?,
                response: get(row, 2)?,
            })
        })
        .collect()
}

pub(super) async fn save_snapshot(
    client: &Client,
    stream_id: &str,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    if snapshot.version > i64::MAX as u64 {
        return Err(StoreError::Internal(format!(
            "snapshot version {} of stream {stream_id:?} is out of range",
            snapshot.version
        )));
    }
    let statement = client
        .prepare_cached(
            "INSERT INTO snapshots (stream_id, version, payload) VALUES ($1, $2, $3)
             ON CONFLICT (stream_id)
             DO UPDATE SET version = excluded.version, payload = excluded.payload",
        )
        .await
        .map_err(store_error)?;
    client
        .execute(
            &statement,
            &[&stream_id, &to_sql_int(snapshot.version), &snapshot.payload],
        )
        .await
        .map_err(store_error)?;
    Ok(())
}

pub(super) async fn load_snapshot(
    client: &Client,
    stream_id: &str,
) -> Result<Option<Snapshot>, StoreError> {
    let statement = client
        .prepare_cached("SELECT version, payload FROM snapshots WHERE stream_id = $1")
        .await
        .map_err(store_error)?;
    client
        .query_opt(&statement, &[&stream_id])
        .await
        .map_err(store_error)?
        .map(|row| {
            Ok(Snapshot {
                version: get_u64(&row, 0)?,
                payload: get(&row, 1)?,
            })
        })
        .transpose()
}

pub(super) async fn set_wakeup(
    client: &Client,
    stream_id: &str,
    version: u64,
    at_ms: Option<i64>,
) -> Result<bool, StoreError> {
    // No stream is at version 0 (it has no row to guard) or past i64::MAX.
    if version == 0 || version > i64::MAX as u64 {
        return Ok(false);
    }
    let statement = client
        .prepare_cached(SET_WAKEUP)
        .await
        .map_err(store_error)?;
    match client
        .execute(&statement, &[&stream_id, &to_sql_int(version), &at_ms])
        .await
    {
        Ok(changed) => Ok(changed > 0),
        // Only under a stricter default isolation than READ COMMITTED, where
        // meeting the append's newer row fails instead of re-checking: the
        // same outcome, a stale wakeup not written.
        Err(err) if err.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) => Ok(false),
        Err(err) => Err(store_error(err)),
    }
}

pub(super) async fn due_wakeups(
    client: &Client,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Wakeup>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(DUE_WAKEUPS)
        .await
        .map_err(store_error)?;
    client
        .query(&statement, &[&now_ms, &to_sql_limit(limit)])
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| {
            Ok(Wakeup {
                stream_id: get(row, 0)?,
                at_ms: get(row, 1)?,
                version: get_u64(row, 2)?,
            })
        })
        .collect()
}

/// Reads a row selected with [`EVENT_COLUMNS`].
pub(super) fn recorded_event(row: &Row) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        stream_id: get(row, 0)?,
        version: get_u64(row, 1)?,
        position: LogPosition::new(get_u64(row, 3)?, get_u64(row, 2)?),
        event_type: get(row, 4)?,
        payload: get(row, 5)?,
        recorded_at_ms: get(row, 6)?,
    })
}

pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index).map_err(|err| {
        store_error(Failure::Decode(format!(
            "column {index} ({}): {err}",
            row.columns().get(index).map_or("?", |column| column.name())
        )))
    })
}

/// Versions, positions and transaction ids are never negative; one that is
/// means the data is not what the schema promises.
pub(super) fn get_u64(row: &Row, index: usize) -> Result<u64, StoreError> {
    let value: i64 = get(row, index)?;
    u64::try_from(value).map_err(|_| {
        store_error(Failure::Decode(format!(
            "column {index} holds {value}, expected a non-negative integer"
        )))
    })
}

/// Callers have checked `value <= i64::MAX` (versions via
/// `AppendRequest::validate`).
fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).expect("checked to be <= i64::MAX by the caller")
}

pub(super) fn to_sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
